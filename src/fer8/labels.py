"""The expression classes fer8 knows and their canonical order.

A trained model stores its own label list (a subset of these, in this order), so this
module only fixes spelling and order; it never decides which classes a model predicts.
"""

from __future__ import annotations

#: Every class fer8 knows, in the fixed order that model label lists follow.
EXPRESSIONS: tuple[str, ...] = (
    "angry",
    "disgusted",
    "fearful",
    "happy",
    "neutral",
    "sad",
    "surprised",
    "worry",
)


def display_name(label: str) -> str:
    """Return the label as shown to people: ``"happy"`` -> ``"Happy"``."""
    return label[:1].upper() + label[1:]


def percent(probability: float) -> str:
    """A probability as shown to people, the same everywhere (the table, drawn labels,
    the web page, the LINE bot): a percentage to one decimal, ``"99.5%"``."""
    return f"{probability:.1%}"
