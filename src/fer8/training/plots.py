"""Pictures of training and evaluation: learning curves, confusion matrices and
reliability diagrams.

Matplotlib is imported inside the functions, with the non-interactive Agg backend, so
these work on servers without a display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer8.labels import display_name

if TYPE_CHECKING:
    from fer8.models.calibration import Reliability
    from fer8.training.evaluation import Evaluation


def plot_curves(history: Sequence[dict[str, float]], path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch, training against validation, side by side."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "o-"), ("val_", "s--")):
            values = [row.get(prefix + metric, np.nan) for row in history]
            axis.plot(epochs, values, style, label="validation" if prefix else "training")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.set_title(metric.capitalize())
        axis.grid(alpha=0.3)
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    return _save(figure, path)


def plot_confusion(evaluation: Evaluation, path: str | os.PathLike, *, title: str = "") -> Path:
    """Counts and row-normalised rates (recall on the diagonal), side by side."""
    plt = _pyplot()
    counts = np.asarray(evaluation.counts, np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    names = [display_name(label) for label in evaluation.labels]
    side = 3.0 + 0.6 * len(names)
    figure, axes = plt.subplots(1, 2, figsize=(2 * side, side), constrained_layout=True)
    panels = ((counts, "Counts", "d", "Blues"), (rates, "Row-normalised (recall)", ".2f", "Greens"))
    for axis, (matrix, panel, fmt, cmap) in zip(axes, panels):
        # Both panels are coloured by rate, so big classes do not wash out the rest.
        axis.imshow(rates, cmap=cmap, vmin=0.0, vmax=1.0)
        for (i, j), value in np.ndenumerate(matrix):
            text = format(int(value), "d") if fmt == "d" else format(value, fmt)
            axis.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="white" if rates[i, j] > 0.5 else "black",
            )
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
        axis.set_yticks(range(len(names)), names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(panel)
    figure.suptitle(
        f"{title + ': ' if title else ''}accuracy {evaluation.accuracy_all:.1%} "
        f"(faces not found count as wrong), macro-F1 {evaluation.macro_f1:.3f}, "
        f"n={evaluation.n} ({evaluation.no_face} faces not found)"
    )
    return _save(figure, path)


def plot_reliability(reliability: Reliability, path: str | os.PathLike, *, title: str = "") -> Path:
    """A reliability diagram: each confidence bin's accuracy (bars) and mean confidence
    (dots, joined to the bar: a calibrated model's dots sit on its bars), over a
    histogram of how many faces each bin holds, so a gap in a bin of three faces is not
    read as a fault."""
    plt = _pyplot()
    bins = reliability.bins
    edges = np.linspace(0.0, 1.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    accuracy = np.array([np.nan if a is None else a for a in reliability.accuracy()])
    confidence = np.array([np.nan if c is None else c for c in reliability.confidence()])
    figure, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(5.5, 6.5),
        sharex=True,
        constrained_layout=True,
        gridspec_kw={"height_ratios": [3, 1]},
    )
    width = 1.0 / bins
    top.bar(
        centres,
        np.nan_to_num(accuracy),
        width=width,
        edgecolor="black",
        color="#4c72b0",
        alpha=0.8,
        label="accuracy",
    )
    # Each bin's mean confidence, joined to its accuracy: a line above a bar is
    # over-confidence, below it under-confidence.
    top.vlines(
        centres,
        np.nan_to_num(accuracy),
        np.nan_to_num(confidence, nan=0.0),
        colors="#c44e52",
        linewidth=2,
    )
    top.plot(centres, confidence, "o", color="#c44e52", label="mean confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="calibrated")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.bar(centres, reliability.counts, width=width, color="gray", edgecolor="black")
    bottom.set_xlabel("confidence (the most probable class's probability)")
    bottom.set_ylabel("faces")
    figure.suptitle(
        f"{title + ': ' if title else ''}ECE {reliability.ece:.1%} ({bins} bins, n={reliability.n})"
    )
    return _save(figure, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
