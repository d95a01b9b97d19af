"""Pictures of training and evaluation: learning curves and confusion matrices.

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
            axis.text(j, i, text, ha="center", va="center", fontsize=9,
                      color="white" if rates[i, j] > 0.5 else "black")
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
        axis.set_yticks(range(len(names)), names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(panel)
    figure.suptitle(f"{title + ': ' if title else ''}accuracy {evaluation.accuracy_all:.1%} "
                    f"(faces not found count as wrong), macro-F1 {evaluation.macro_f1:.3f}, "
                    f"n={evaluation.n} ({evaluation.no_face} faces not found)")
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
