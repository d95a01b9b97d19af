"""The two sides of a training run: a :class:`Split`'s crops and targets, the
validation share held out of the training data, the counts per class and source the
log shows, and the class weights those counts give.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.training.datasets import Dataset


@dataclass(frozen=True)
class Split:
    """Crops and targets of one side of the run (train or validation), from one or more
    sources.

    Attributes:
        images: uint8 (N, S, S, C) crops.
        targets: (N, classes) target distributions.
        weights: (N,) loss weights against class imbalance.
        draws: (N,) how often each image is drawn per pass (its source's weight).
        source: (N,) index into ``names`` of each image's source.
        names: The sources' short names.
        summary: What was read and kept, per source.
        masks: Packed contour masks of ``images`` (:attr:`PreparedCrops.masks`) for
            training that masks faces at random (``--mask random``); else None.
    """

    images: NDArray[np.uint8]
    targets: NDArray[np.float32]
    weights: NDArray[np.float32]
    draws: NDArray[np.float32]
    source: NDArray[np.int32]
    names: tuple[str, ...]
    summary: dict[str, Any]
    masks: NDArray[np.uint8] | None = None


def hold_out(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split off ``fraction`` of each class (at least one image) for validation."""
    rng = np.random.default_rng(seed)
    val_indices: set[int] = set()
    for label in data.labels:
        members = [i for i, s in enumerate(data.samples) if s.label == label]
        take = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        val_indices.update(rng.choice(members, take, replace=False).tolist())
    train = [s for i, s in enumerate(data.samples) if i not in val_indices]
    val = [s for i, s in enumerate(data.samples) if i in val_indices]
    return (
        replace(data, samples=tuple(train)),
        replace(data, samples=tuple(val), skipped={}, kind=f"{data.kind} (held out)"),
    )


def _sources(split: Split) -> dict[str, dict[str, Any]]:
    """Each source's summary (one source's is the split's own)."""
    return (
        split.summary["sources"] if "sources" in split.summary else {split.names[0]: split.summary}
    )


def per_class_counts(split: Split) -> Counter:
    """Images per class in ``split``, all sources together."""
    counts: Counter = Counter()
    for summary in _sources(split).values():
        counts.update(summary["per_class"])
    return counts


def summary_table(title: str, split: Split, labels: Sequence[str]) -> str:
    """The split's images per source and class, as a few aligned lines for the log."""
    from fer8.labels import display_name

    header = [f"{title} data", "images", *map(display_name, labels)]
    if title == "train":
        header.append("weight")
    rows = [header]
    for name, summary in _sources(split).items():
        row = [
            name,
            str(summary["images"]),
            *(str(summary["per_class"].get(label, 0)) for label in labels),
        ]
        if title == "train":
            row.append(f"{summary['weight']:g}")
        rows.append(row)
    if len(rows) > 2:
        total = per_class_counts(split)
        rows.append(
            [
                "all",
                str(sum(total.values())),
                *(str(total[label]) for label in labels),
                *([""] if title == "train" else []),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    )


def class_weights(counts: NDArray[np.int64], mode: str) -> NDArray[np.float64]:
    """Per-class loss weights, normalised to average 1 over the samples.

    ``sqrt`` is the default: FER+ has 54 neutral faces per disgusted one, and full
    ``balanced`` weighting makes the rare classes' few faces dominate the gradient.
    """
    counts = np.maximum(np.asarray(counts, np.float64), 1)
    if mode == "none":
        return np.ones_like(counts)
    weights = (counts.max() / counts) ** (0.5 if mode == "sqrt" else 1.0)
    return weights * counts.sum() / (weights * counts).sum()
