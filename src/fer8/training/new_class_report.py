"""The report of ``fer8 train --keep-classes`` (:func:`fer8.training.new_class.add_classes`):
the new classes' precision and recall, the old classes' accuracy before and after, as
``report.json``, the lines printed on the command line and the model's metadata."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ClassFigures:
    """A new class's figures on validation faces (its ``@val`` photos as positives,
    every held-out face of another class as negatives)."""

    precision: float
    recall: float
    positives: int
    predicted: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": _json_float(self.precision),
            "recall": _json_float(self.recall),
            "positives": self.positives,
            "predicted": self.predicted,
        }


@dataclass(frozen=True)
class OldAccuracy:
    """The old classes' accuracy on one validation set, before and after."""

    faces: int
    before: float
    after: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "faces": self.faces,
            "before": _json_float(self.before),
            "after": _json_float(self.after),
        }


@dataclass(frozen=True)
class KeepClassesReport:
    """What :func:`fer8.training.new_class.add_classes` did and how the result does.

    Attributes:
        labels: The new model's labels (the old ones first, in their order).
        new_labels: The classes added.
        photos: Faces per class fitted (``@train`` photos).
        new_classes: Figures per new class on the validation faces.
        old_accuracy: Per validation set of the old classes (``held-out bank``, each
            ``--val``, the ``@val`` photos of old classes in ``DATA``).
        offset: What was added to the new classes' logits.
        max_old_drop: The allowance it was chosen within (:class:`~fer8.options.training.KeepClassesOptions`).
        seconds: Wall time of the whole call, crops included.
    """

    labels: tuple[str, ...]
    new_labels: tuple[str, ...]
    photos: Mapping[str, int]
    new_classes: Mapping[str, ClassFigures]
    old_accuracy: Mapping[str, OldAccuracy]
    offset: float
    max_old_drop: float
    seconds: float
    crops: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "new_labels": list(self.new_labels),
            "photos": dict(self.photos),
            "crops": dict(self.crops),
            "new_classes": {k: v.to_dict() for k, v in self.new_classes.items()},
            "old_accuracy": {k: v.to_dict() for k, v in self.old_accuracy.items()},
            "offset": float(self.offset),
            "max_old_drop": float(self.max_old_drop),
            "seconds": round(float(self.seconds), 1),
        }

    def lines(self) -> list[str]:
        """The report as a few lines of text, for the command line."""
        out = [f"classes: {', '.join(self.labels)} (new: {', '.join(self.new_labels)})"]
        for label, figures in self.new_classes.items():
            out.append(
                f"{label}: precision {_percent(figures.precision)}, recall "
                f"{_percent(figures.recall)} on {figures.positives} @val photos "
                f"({figures.predicted} faces read as {label})"
            )
        for name, old in self.old_accuracy.items():
            out.append(
                f"old classes on {name} ({old.faces} faces): accuracy "
                f"{_percent(old.before)} before, {_percent(old.after)} after"
            )
        out.append(
            f"offset of the new logits {self.offset:+.2f} (each old class may lose "
            f"{self.max_old_drop:g} points: --max-old-drop); {self.seconds / 60:.1f} min"
        )
        return out


def class_figures(
    predicted: NDArray[np.int64], classes: NDArray[np.int64], index: int
) -> ClassFigures:
    """Precision and recall of class ``index``."""
    positives = int((classes == index).sum())
    chosen = int((predicted == index).sum())
    hits = int(((predicted == index) & (classes == index)).sum())
    return ClassFigures(
        precision=hits / chosen if chosen else math.nan,
        recall=hits / positives if positives else math.nan,
        positives=positives,
        predicted=chosen,
    )


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 4)
