"""What ``fer8 evaluate`` reports, as values and files: one :class:`DatasetEvaluation`
per dataset and framing, the report that ``evaluation.json`` holds
(:func:`evaluation_report`), and the folder with it and each row's confusion matrix and
reliability diagram (:func:`write_report`). The command only measures and prints."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer8.output import to_json
from fer8.training.evaluation import Evaluation

logger = logging.getLogger(__name__)

#: How each face was framed for the classifier: by the full pipeline's detector, or
#: from the box the dataset labels (the classifier alone; ExpW).
DETECTED, LABELLED_BOXES = "detected", "labelled boxes"


@dataclass(frozen=True, eq=False)
class DatasetEvaluation:
    """One dataset measured with one framing of its faces.

    Attributes:
        dataset: The data source's name.
        faces: :data:`DETECTED` or :data:`LABELLED_BOXES`.
        evaluation: The figures.
        data: What was read (:meth:`fer8.training.datasets.Dataset.summary`).
    """

    dataset: str
    faces: str
    evaluation: Evaluation
    data: dict[str, Any]

    @property
    def title(self) -> str:
        """The pictures' title: ``NAME (FRAMING)``."""
        return f"{self.dataset} ({self.faces})"

    def to_dict(self) -> dict[str, Any]:
        """The report's entry for this row (JSON-safe)."""
        return {
            "dataset": self.dataset,
            "faces": self.faces,
            **self.evaluation.to_dict(),
            "data": self.data,
        }


def evaluation_report(
    rows: Sequence[DatasetEvaluation], model: str, detector: str
) -> dict[str, Any]:
    """The report of ``evaluation.json`` and ``--format json``: one row's entry with the
    model's name; for several rows, the model, the detector and every row's entry."""
    if len(rows) == 1:
        return {**rows[0].to_dict(), "model": model}
    return {"model": model, "detector": detector, "datasets": [row.to_dict() for row in rows]}


def write_report(out_dir: Path, rows: Sequence[DatasetEvaluation], report: dict[str, Any]) -> Path:
    """Write ``evaluation.json``, and each row's confusion matrix and reliability diagram
    (``confusion_matrix.png`` and ``reliability.png`` for one row; for several, named
    after each row's dataset and framing), into ``out_dir``, made if missing.

    Returns:
        The path of ``evaluation.json``.
    """
    from fer8.training.plots import plot_confusion, plot_reliability

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "evaluation.json"
    path.write_text(to_json(report) + "\n")
    for row in rows:
        suffix = "" if len(rows) == 1 else f"_{_file_name(row)}"
        confusion = "confusion_matrix.png" if len(rows) == 1 else f"confusion{suffix}.png"
        plot_confusion(row.evaluation, out_dir / confusion, title=row.title)
        if row.evaluation.reliability is not None:  # evaluate() always measures it
            plot_reliability(
                row.evaluation.reliability, out_dir / f"reliability{suffix}.png", title=row.title
            )
    logger.info(
        "wrote %s, %d confusion-matrix pictures and as many reliability diagrams",
        path,
        len(rows),
    )
    return path


def _file_name(row: DatasetEvaluation) -> str:
    """``NAME_FRAMING`` with whatever a file name should not hold made ``_``."""
    return re.sub(r"[^A-Za-z0-9.@-]+", "_", f"{row.dataset}_{row.faces}").strip("_")
