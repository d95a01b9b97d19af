"""Measuring a model on labelled data through the full prediction pipeline.

:func:`evaluate` runs exactly what ``fer8 predict`` runs (detect -> landmarks -> align
-> classify for photos; :func:`fer8.faces.face_from_crop` for pre-cropped faces) and
compares the largest face's label with the truth. :class:`Evaluation` holds the
confusion matrix; every figure is derived from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fer8.datasets import Dataset, Sample
from fer8.labels import EXPRESSIONS

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A confusion matrix and what it implies.

    Attributes:
        labels: Row and column classes: the model's labels and any other class the data
            has, in the fixed order.
        counts: ``counts[i, j]`` images of class ``labels[i]`` predicted as ``labels[j]``.
        no_face: Images in which no face was found (not in ``counts``).
        unreadable: Images that could not be read (not in ``counts``).
    """

    labels: tuple[str, ...]
    counts: NDArray[np.int64]
    no_face: int = 0
    unreadable: int = 0

    @property
    def n(self) -> int:
        """Labelled images evaluated: classified ones plus those without a face."""
        return int(self.counts.sum()) + self.no_face

    @property
    def accuracy(self) -> float:
        """Correct over classified images (those with a face found)."""
        total = self.counts.sum()
        return float(np.trace(self.counts) / total) if total else 0.0

    @property
    def accuracy_all(self) -> float:
        """Correct over all images, an image without a face counting as wrong."""
        return float(np.trace(self.counts) / self.n) if self.n else 0.0

    def per_class(self) -> dict[str, dict[str, float]]:
        """Precision, recall, F1 and support of each class (0 where undefined)."""
        true_positive = np.diag(self.counts).astype(np.float64)
        predicted = self.counts.sum(axis=0)
        actual = self.counts.sum(axis=1)
        result = {}
        for i, label in enumerate(self.labels):
            precision = true_positive[i] / predicted[i] if predicted[i] else 0.0
            recall = true_positive[i] / actual[i] if actual[i] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            result[label] = {"precision": float(precision), "recall": float(recall),
                             "f1": float(f1), "support": int(actual[i])}
        return result

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes that occur in the data."""
        scores = [c["f1"] for c in self.per_class().values() if c["support"]]
        return float(np.mean(scores)) if scores else 0.0

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "accuracy_all": self.accuracy_all,
            "macro_f1": self.macro_f1,
            "per_class": self.per_class(),
            "confusion_matrix": {"labels": list(self.labels),
                                 "counts": self.counts.astype(int).tolist()},
            "no_face": self.no_face,
            "unreadable": self.unreadable,
            "n": self.n,
        }


def confusion(truth: Sequence[str], predicted: Sequence[str | None],
              labels: Sequence[str]) -> Evaluation:
    """Build an :class:`Evaluation` from true and predicted labels (None: no face found).

    Classes seen in either list but missing from ``labels`` are added, in fixed order.
    """
    present = set(labels) | set(truth) | {p for p in predicted if p is not None}
    order = tuple(label for label in EXPRESSIONS if label in present)
    order += tuple(sorted(present - set(order)))
    index = {label: i for i, label in enumerate(order)}
    counts = np.zeros((len(order), len(order)), np.int64)
    no_face = 0
    for true, guess in zip(truth, predicted, strict=True):
        if guess is None:
            no_face += 1
        else:
            counts[index[true], index[guess]] += 1
    return Evaluation(order, counts, no_face)


def evaluate(predictor, dataset: Dataset, *,
             on_progress: Callable[[int], None] | None = None) -> Evaluation:
    """Run ``predictor`` (a :class:`fer8.Predictor`) on every sample; compare its largest face.

    Unreadable images are reported (one log line each) and counted, never fatal.
    """
    truth: list[str] = []
    predicted: list[str | None] = []
    unreadable = 0
    for cropped in (False, True):
        samples = [s for s in dataset.samples if s.cropped == cropped]
        if not samples:
            continue
        results = predictor.predict_many((_source(s) for s in samples), detect=not cropped)
        for sample, result in zip(samples, results):
            if on_progress is not None:
                on_progress(1)
            if result.error is not None:
                logger.warning("%s: %s", sample.source, result.error)
                unreadable += 1
                continue
            truth.append(sample.label)
            predicted.append(result.faces[0].label if result.faces else None)
    evaluation = confusion(truth, predicted, predictor.labels)
    return Evaluation(evaluation.labels, evaluation.counts, evaluation.no_face, unreadable)


def _source(sample: Sample):
    return sample.load() if sample.pixels is not None else sample.source
