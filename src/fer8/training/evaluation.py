"""Measuring a model on labelled data through the full prediction pipeline.

:func:`evaluate` runs exactly what ``fer8 predict`` runs (detect -> landmarks -> align
-> classify for photos; :func:`fer8.pipeline.faces.face_from_crop` for pre-cropped faces) and
compares the largest face's label with the truth; where the dataset gives each face's
box (ExpW), the detected face that overlaps it (IoU >= 0.3) is compared instead, and a
face the detector missed counts as wrong. :func:`evaluate_labelled_boxes` measures the
classifier alone on such data: every labelled face is framed from its box, as training
frames it. :class:`Evaluation` holds the confusion matrix and the faces' confidences
binned for calibration (:class:`~fer8.models.calibration.Reliability`); every figure is
derived from those.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fer8.errors import Fer8Error
from fer8.labels import EXPRESSIONS
from fer8.models.calibration import Reliability
from fer8.models.temperature_rule import CROP_MEASURES
from fer8.training.datasets import Dataset, Sample

if TYPE_CHECKING:
    from fer8.pipeline.alignment import AlignedFace

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
        reliability: The classified faces' confidences against their correctness, or
            None where the answers came without probabilities (a peer's labels).
    """

    labels: tuple[str, ...]
    counts: NDArray[np.int64]
    no_face: int = 0
    unreadable: int = 0
    reliability: Reliability | None = None

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
            result[label] = {
                "precision": float(precision),
                "recall": float(recall),
                "f1": float(f1),
                "support": int(actual[i]),
            }
        return result

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes that occur in the data."""
        scores = [c["f1"] for c in self.per_class().values() if c["support"]]
        return float(np.mean(scores)) if scores else 0.0

    @property
    def ece(self) -> float | None:
        """Expected calibration error of the classified faces (15 confidence bins), or
        None without probabilities."""
        return self.reliability.ece if self.reliability is not None else None

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "accuracy_all": self.accuracy_all,
            "macro_f1": self.macro_f1,
            "per_class": self.per_class(),
            "confusion_matrix": {
                "labels": list(self.labels),
                "counts": self.counts.astype(int).tolist(),
            },
            "no_face": self.no_face,
            "unreadable": self.unreadable,
            "n": self.n,
            "ece": self.ece,
            **({"reliability": self.reliability.to_dict()} if self.reliability else {}),
        }


def confusion(
    truth: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]
) -> Evaluation:
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


def evaluate(
    predictor, dataset: Dataset, *, on_progress: Callable[[int], None] | None = None
) -> Evaluation:
    """Run ``predictor`` (a :class:`fer8.Predictor`) on every sample and compare its answer.

    The answer is the largest face's label, or for a sample with a labelled box the
    label of the detected face matching that box (``no_face`` when none does). Each
    photo is run once however many of its faces are labelled. Unreadable images are
    reported (one log line each) and counted, never fatal.
    """
    truth, faces, unreadable = _answers(predictor, dataset, on_progress)
    evaluation = confusion(
        truth, [f.label if f is not None else None for f in faces], predictor.labels
    )
    found = [(label, face) for label, face in zip(truth, faces) if face is not None]
    reliability = Reliability.from_predictions(
        [face.confidence for _, face in found], [face.label == label for label, face in found]
    )
    return replace(evaluation, unreadable=unreadable, reliability=reliability)


def predicted_probabilities(
    predictor, dataset: Dataset, *, on_progress: Callable[[int], None] | None = None
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The probabilities :func:`evaluate` judges, for fitting a calibration on them.

    Returns:
        (K, C) probabilities in ``predictor.labels`` order of the K faces that were
        found and whose class the model has, and (K,) the index of each one's true class.
    """
    probabilities, truth, _ = _judged(predictor, dataset, on_progress)
    return probabilities, truth


def measured_probabilities(
    predictor, dataset: Dataset, *, on_progress: Callable[[int], None] | None = None
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float64]]:
    """:func:`predicted_probabilities` and (K, M) the
    :func:`~fer8.models.temperature_rule.crop_measures` of each face's crop as the network
    took it, for fitting a :class:`~fer8.models.temperature_rule.TemperatureRule`.

    ``predictor.model`` must be uncalibrated (temperature 1, no rule): each face is
    found again by its probabilities, which are then the network's own.
    """
    return _judged(predictor, dataset, on_progress, measure=True)


@dataclass(frozen=True, eq=False)
class PooledAnswers:
    """The faces of several datasets, pooled, as ``fer8 calibrate`` fits a temperature on
    them (:func:`fer8.models.calibration.calibrate_model_file`'s arguments).

    Attributes:
        probabilities: (K, C) the network's probabilities of each face found.
        truth: (K,) each face's true class, an index into the model's labels.
        measures: (K, M) each face's crop measures (:func:`measured_probabilities`).
        groups: (K) the name of each face's dataset.
    """

    probabilities: NDArray[np.float32]
    truth: NDArray[np.int64]
    measures: NDArray[np.float64]
    groups: list[str]


def pooled_answers(
    predictor,
    datasets: Sequence[tuple[str, Dataset]],
    *,
    on_progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> PooledAnswers:
    """:func:`measured_probabilities` of every named dataset, pooled.

    Args:
        predictor: A predictor whose model is uncalibrated (see
            :func:`measured_probabilities`).
        datasets: (name, dataset) pairs.
        on_progress: ``on_progress(name, total)`` returns a callback that takes the
            number of that dataset's samples done.

    Raises:
        Fer8Error: A dataset gave no face of a class the model has.
    """
    parts, truths, measures, groups = [], [], [], []
    for name, dataset in datasets:
        progress = on_progress(name, len(dataset.samples)) if on_progress else None
        probabilities, truth, measured = measured_probabilities(
            predictor, dataset, on_progress=progress
        )
        if not len(truth):
            raise Fer8Error(f"{name}: no face of a class the model has was found")
        parts.append(probabilities)
        truths.append(truth)
        measures.append(measured)
        groups += [name] * len(truth)
    return PooledAnswers(
        np.concatenate(parts), np.concatenate(truths), np.concatenate(measures), groups
    )


def _judged(
    predictor, dataset: Dataset, on_progress: Callable[[int], None] | None, measure: bool = False
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float64]]:
    model = predictor.model
    measures: dict[bytes, NDArray[np.float64]] = {}
    if measure:
        predictor.model = _Measuring(model, measures, flip=predictor.flip)
    try:
        truth, faces, _ = _answers(predictor, dataset, on_progress)
    finally:
        predictor.model = model
    labels = list(predictor.labels)
    kept = [
        (labels.index(label), face)
        for label, face in zip(truth, faces)
        if face is not None and label in labels
    ]
    probabilities = np.array(
        [[face.probabilities[label] for label in labels] for _, face in kept], np.float32
    ).reshape(-1, len(labels))
    found = np.array(
        [measures[row.tobytes()] for row in probabilities] if measure else [], np.float64
    ).reshape(-1, len(CROP_MEASURES))
    return probabilities, np.array([index for index, _ in kept], np.int64), found


class _Measuring:
    """A model that also notes the crop measures of each face it classifies, under the
    face's probabilities (as classify averages them with ``flip``): the key by which
    :func:`_judged` finds them again in the results."""

    def __init__(self, model, measures: dict[bytes, NDArray[np.float64]], *, flip: bool):
        self._model, self._measures, self._flip = model, measures, flip
        self.spec, self.labels = model.spec, model.labels

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def concurrent(self, runners: int) -> _Measuring | None:
        """The model's concurrent form (see :func:`fer8.pipeline.batching.classified`),
        noting its crops' measures in the same dict: without this, the batches run on it
        would go unmeasured."""
        inner = self._model.concurrent(runners)
        return None if inner is None else _Measuring(inner, self._measures, flip=self._flip)

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        from fer8.models.temperature_rule import crop_measures

        out = self._model(batch)
        n = len(out) // 2 if self._flip else len(out)
        rows = (out[:n] + out[n:]) / 2 if self._flip else out
        for row, measure in zip(rows, crop_measures(batch[:n])):
            self._measures[row.tobytes()] = measure
        return out


def _answers(
    predictor, dataset: Dataset, on_progress: Callable[[int], None] | None
) -> tuple[list[str], list, int]:
    """Each sample's true label and the face judged for it (None: not found), and how
    many samples were unreadable (left out of both lists)."""
    from fer8.pipeline.faces import match

    truth: list[str] = []
    judged: list = []
    unreadable = 0
    for cropped in (False, True):
        samples = [s for s in dataset.samples if s.cropped == cropped]
        if not samples:
            continue
        by_source: dict[str, list[Sample]] = {}
        for sample in samples:
            by_source.setdefault(sample.source, []).append(sample)
        groups = list(by_source.values())
        results = predictor.predict_many((_source(g[0]) for g in groups), detect=not cropped)
        for group, result in zip(groups, results):
            if on_progress is not None:
                on_progress(len(group))
            if result.error is not None:
                logger.warning("%s: %s", group[0].source, result.error)
                unreadable += len(group)
                continue
            faces = {face.box: face for face in result.faces}
            for sample in group:
                if sample.box is None:
                    face = result.faces[0] if result.faces else None
                else:
                    found = match(sample.box, list(faces))
                    face = faces[found] if found is not None else None
                truth.append(sample.label)
                judged.append(face)
    return truth, judged, unreadable


def evaluate_labelled_boxes(
    predictor, dataset: Dataset, *, on_progress: Callable[[int], None] | None = None
) -> Evaluation:
    """The classifier alone: every sample with a labelled box is framed from it
    (:func:`fer8.pipeline.faces.labelled_face`, as training frames it) and classified, so faces
    the detector misses are measured too. Samples without a box are left out."""
    from fer8.errors import Fer8Error
    from fer8.pipeline.classification import classify
    from fer8.pipeline.faces import labelled_face

    truth: list[str] = []
    predicted: list[str | None] = []
    confidences: list[float] = []
    unreadable = 0
    batch: list[tuple[str, AlignedFace]] = []  # (true label, aligned crop)

    def run() -> None:
        probabilities = classify(
            [crop for _, crop in batch],
            predictor.model,
            batch_size=predictor.batch_size,
            flip=predictor.flip,
        )
        for (label, _), row in zip(batch, probabilities):
            truth.append(label)
            predicted.append(predictor.labels[int(np.argmax(row))])
            confidences.append(float(row.max()))
        batch.clear()

    for sample in dataset.samples:
        if sample.box is None:
            continue
        try:
            _, crop = labelled_face(
                sample.load(),
                sample.box,
                detector=predictor.detector,
                detector_options=predictor.detector_options,
                landmark_model=predictor.landmark_model,
            )
        except (Fer8Error, OSError) as exc:
            logger.warning("%s", exc if sample.source in str(exc) else f"{sample.source}: {exc}")
            unreadable += 1
        else:
            batch.append((sample.label, crop))
            if len(batch) >= predictor.batch_size:
                run()
        if on_progress is not None:
            on_progress(1)
    if batch:
        run()
    reliability = Reliability.from_predictions(
        confidences, [guess == label for label, guess in zip(truth, predicted)]
    )
    return replace(
        confusion(truth, predicted, predictor.labels),
        unreadable=unreadable,
        reliability=reliability,
    )


def _source(sample: Sample):
    return sample.load() if sample.pixels is not None else sample.source
