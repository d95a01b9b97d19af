"""Calibration: making the confidence fer8 reports mean what it says.

A network trained with cross-entropy is rarely calibrated: of the faces it calls
"happy, 0.9", far more or far fewer than nine in ten may be happy (label smoothing, for
one, teaches it to stay below full confidence). Temperature scaling (Guo et al., "On
Calibration of Modern Neural Networks", ICML 2017) divides the logits by one number
``T`` fitted on validation data: it changes no prediction (the largest probability stays
the largest) and only moves the confidences, by one parameter that cannot overfit a few
hundred faces.

fer8's networks end in a softmax, so the temperature is applied to their probabilities:
``softmax(log p / T)`` equals ``softmax(z / T)`` for the logits ``z``, because
``log p = z - logsumexp(z)`` and a constant per row cancels in the softmax. A model
file stores ``T`` in its spec (:class:`~fer8.models.modelfile.ModelSpec`); without one it
is 1 and the probabilities are the network's own, untouched.

The expected calibration error (ECE) measures what is left: faces are put in 15
equal-width bins by their confidence (the largest probability), and ECE is the mean,
weighted by the bins' sizes, of the gap between each bin's accuracy and its mean
confidence. Everything here is numpy only; a temperature per face, from what its crop
looks like, is :mod:`fer8.models.temperature_rule`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)

#: Equal-width confidence bins of the expected calibration error (Guo et al.'s 15).
BINS = 15
#: Temperatures searched when fitting: far beyond any seen in practice (0.5-3).
TEMPERATURE_BOUNDS = (0.05, 20.0)
#: A probability of exactly 0 (a float32 softmax underflows for very confident rows) has
#: no logarithm; the smallest normal float32 stands in for it, in numpy and in the
#: exported graph alike.
SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)


def apply_temperature(
    probabilities: ArrayLike, temperature: float | ArrayLike
) -> NDArray[np.float32]:
    """``softmax(log p / T)`` of each row of ``probabilities`` (N, C), as float32.

    T > 1 softens the confidences, T < 1 sharpens them; the order of the classes in
    each row never changes. ``temperature`` is one number, or (N,) numbers, one per row
    (a :class:`~fer8.models.temperature_rule.TemperatureRule`'s).
    """
    logits = log_probabilities(probabilities) / _per_row(temperature)
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(
    probabilities: ArrayLike,
    truth: ArrayLike,
    temperature: float | ArrayLike = 1.0,
    weights: ArrayLike | None = None,
) -> float:
    """Mean ``-log p[truth]`` after :func:`apply_temperature` (weighted by ``weights``).

    Args:
        probabilities: (N, C) probabilities.
        truth: (N,) index of each row's true class.
        temperature: Applied first: one number, or (N,), one per row.
        weights: (N,) non-negative weight of each row; None weighs them equally.
    """
    logits = log_probabilities(probabilities) / _per_row(temperature)
    peak = logits.max(axis=-1, keepdims=True)
    log_norm = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=-1))
    truth = np.asarray(truth, np.int64)
    losses = log_norm - logits[np.arange(len(truth)), truth]
    return float(np.average(losses, weights=None if weights is None else np.asarray(weights)))


def fit_temperature(
    probabilities: ArrayLike,
    truth: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    tolerance: float = 1e-5,
) -> float:
    """The temperature that minimises :func:`negative_log_likelihood` on labelled rows.

    The likelihood is convex in ``1 / T`` (a log-sum-exp of a linear function minus a
    linear function), so it has one minimum on any interval, which a golden-section
    search over ``log T`` finds without derivatives or scipy. A minimum outside
    ``bounds`` gives the nearer bound.

    Args:
        probabilities: (N, C) uncalibrated probabilities (those of a model whose
            temperature is 1).
        truth: (N,) index of each row's true class.
        weights: (N,) weight of each row, e.g. so that each dataset counts as much as
            another; None weighs rows equally.
        bounds: Smallest and largest temperature considered.
        tolerance: Stop when the bracket of ``log T`` is this narrow.

    Raises:
        ValueError: No rows, mismatched shapes, or invalid bounds.
    """
    probabilities = np.asarray(probabilities, np.float64)
    truth = np.asarray(truth, np.int64)
    if probabilities.ndim != 2 or len(probabilities) == 0 or truth.shape != (len(probabilities),):
        raise ValueError(
            f"need (N, C) probabilities and N labels, got {probabilities.shape} and {truth.shape}"
        )
    low, high = bounds
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")

    def loss(log_t: float) -> float:
        return negative_log_likelihood(probabilities, truth, math.exp(log_t), weights)

    ratio = (math.sqrt(5) - 1) / 2
    a, b = math.log(low), math.log(high)
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    loss_c, loss_d = loss(c), loss(d)
    while b - a > tolerance:
        if loss_c <= loss_d:
            b, d, loss_d = d, c, loss_c
            c = b - ratio * (b - a)
            loss_c = loss(c)
        else:
            a, c, loss_c = c, d, loss_d
            d = a + ratio * (b - a)
            loss_d = loss(d)
    return float(math.exp((a + b) / 2))


def _per_row(temperature: float | ArrayLike) -> NDArray[np.float64]:
    """A temperature that divides (N, C) logits: a number, or a column of N."""
    temperature = np.asarray(temperature, np.float64)
    return temperature[:, None] if temperature.ndim else temperature


def log_probabilities(probabilities: ArrayLike) -> NDArray[np.float64]:
    """``log p`` in float64, a probability of 0 read as :data:`SMALLEST_PROBABILITY`."""
    return np.log(np.maximum(np.asarray(probabilities, np.float64), SMALLEST_PROBABILITY))


@dataclass(frozen=True)
class Reliability:
    """Accuracy against confidence, in equal-width confidence bins.

    Bin ``i`` holds the faces whose confidence lies in ``(i / bins, (i + 1) / bins]``
    (the first bin also holds a confidence of 0). The sums, not the means, are kept, so
    reliabilities of several datasets add up.

    Attributes:
        counts: Faces per bin.
        confidence_sums: Sum of the faces' confidences per bin.
        correct: Faces per bin whose most probable class was the true one.
    """

    counts: tuple[int, ...]
    confidence_sums: tuple[float, ...]
    correct: tuple[int, ...]

    @classmethod
    def from_predictions(
        cls, confidences: ArrayLike, correct: ArrayLike, *, bins: int = BINS
    ) -> Reliability:
        """Bin faces by ``confidences`` (N,), with ``correct`` (N,) saying which were right."""
        confidences = np.asarray(confidences, np.float64).reshape(-1)
        correct = np.asarray(correct, bool).reshape(-1)
        if confidences.shape != correct.shape:
            raise ValueError(f"{len(confidences)} confidences but {len(correct)} answers")
        index = np.clip(np.ceil(confidences * bins).astype(np.int64) - 1, 0, bins - 1)
        return cls(
            counts=tuple(int(v) for v in np.bincount(index, minlength=bins)),
            confidence_sums=tuple(
                float(v) for v in np.bincount(index, confidences, minlength=bins)
            ),
            correct=tuple(int(v) for v in np.bincount(index, correct, minlength=bins)),
        )

    @classmethod
    def from_probabilities(
        cls, probabilities: ArrayLike, truth: ArrayLike, *, bins: int = BINS
    ) -> Reliability:
        """Bin rows of (N, C) ``probabilities`` by their largest value; ``truth`` (N,)
        is each row's true class index (-1 or any index out of range: never right)."""
        probabilities = np.asarray(probabilities, np.float64)
        truth = np.asarray(truth, np.int64).reshape(-1)
        if len(truth) == 0:
            return cls.from_predictions([], [], bins=bins)
        return cls.from_predictions(
            probabilities.max(axis=1), probabilities.argmax(axis=1) == truth, bins=bins
        )

    @property
    def bins(self) -> int:
        return len(self.counts)

    @property
    def n(self) -> int:
        return sum(self.counts)

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of ``|correct - confidence sum| / n``
        (0 for no faces)."""
        if not self.n:
            return 0.0
        return float(
            sum(abs(hits - total) for hits, total in zip(self.correct, self.confidence_sums))
            / self.n
        )

    def accuracy(self) -> list[float | None]:
        """Each bin's accuracy (None for an empty bin)."""
        return [hits / count if count else None for hits, count in zip(self.correct, self.counts)]

    def confidence(self) -> list[float | None]:
        """Each bin's mean confidence (None for an empty bin)."""
        return [
            total / count if count else None
            for total, count in zip(self.confidence_sums, self.counts)
        ]

    def __add__(self, other: Reliability) -> Reliability:
        if self.bins != other.bins:
            raise ValueError(f"cannot add reliabilities of {self.bins} and {other.bins} bins")
        return Reliability(
            tuple(a + b for a, b in zip(self.counts, other.counts)),
            tuple(a + b for a, b in zip(self.confidence_sums, other.confidence_sums)),
            tuple(a + b for a, b in zip(self.correct, other.correct)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "bins": self.bins,
            "ece": self.ece,
            "counts": list(self.counts),
            "confidence": self.confidence(),
            "accuracy": self.accuracy(),
        }


def calibration_summary(
    probabilities: ArrayLike,
    truth: ArrayLike,
    temperature: float | ArrayLike,
    groups: Sequence[str] | None = None,
    *,
    before: float | ArrayLike = 1.0,
) -> dict[str, Any]:
    """ECE and likelihood before and after ``temperature``, overall and per group: what
    a model file's ``metadata["calibration"]`` records.

    Args:
        probabilities: (N, C) uncalibrated probabilities (the network's, temperature 1).
        truth: (N,) true class indices.
        temperature: The temperature after: one, or (N,), one per row (a rule's).
        groups: (N,) the dataset each row came from, for per-dataset figures.
        before: The temperature before: the model's as it was given (1 for a model
            that had none); one, or (N,).

    ``temperature`` and ``temperature_before`` are recorded where they are one number.
    """
    probabilities = np.asarray(probabilities, np.float64)
    truth = np.asarray(truth, np.int64)
    old = apply_temperature(probabilities, before)
    new = apply_temperature(probabilities, temperature)
    before_rows, after_rows = (
        np.broadcast_to(np.asarray(t, np.float64), (len(truth),)) for t in (before, temperature)
    )

    def figures(mask) -> dict[str, Any]:
        return {
            "n": int(mask.sum()),
            "ece_before": Reliability.from_probabilities(old[mask], truth[mask]).ece,
            "ece_after": Reliability.from_probabilities(new[mask], truth[mask]).ece,
            "nll_before": negative_log_likelihood(
                probabilities[mask], truth[mask], before_rows[mask]
            ),
            "nll_after": negative_log_likelihood(
                probabilities[mask], truth[mask], after_rows[mask]
            ),
        }

    summary = {
        **({"temperature": float(after_rows[0])} if np.ndim(temperature) == 0 else {}),
        **({"temperature_before": float(before_rows[0])} if np.ndim(before) == 0 else {}),
        "bins": BINS,
        **figures(np.ones(len(truth), bool)),
    }
    if groups is not None:
        names = np.asarray(groups)
        summary["per_dataset"] = {
            str(name): figures(names == name) for name in dict.fromkeys(groups)
        }
    return summary


def calibrate_model_file(
    path: str | os.PathLike,
    out: str | os.PathLike,
    probabilities: ArrayLike,
    truth: ArrayLike,
    groups: Sequence[str],
    *,
    fitted_on: str,
    measures: ArrayLike | None = None,
    by: str = "temperature",
) -> dict[str, Any]:
    """Fit a temperature on a model's uncalibrated probabilities and write the model
    file again with it (:func:`~fer8.models.writer.rewrite_spec`): the network is
    copied unchanged, the spec gains ``temperature`` and ``metadata["calibration"]``
    (:func:`calibration_summary`, plus ``fitted_on`` and ``fitted_temperature``).

    ``by="quality"`` fits a :class:`~fer8.models.temperature_rule.TemperatureRule` on each row's crop ``measures`` as
    well and stores it as the spec's ``temperature_rule`` (``temperature`` is still the
    one fitted number, for tools that apply one); the figures after are the rule's.

    Each group (dataset) weighs the same in the fit, whatever its size, as each
    validation source does in ``fer8 train``'s validation accuracy: a large set of one
    kind of face would otherwise set the temperature for all the others.

    The fit minimises the likelihood, and the expected calibration error (what fer8
    reports) usually falls with it, but not always: on a few hundred faces, or faces
    whose wrong answers are confidently wrong, the fitted temperature can raise it. The
    model's own temperature (1 if it had none) is then kept, and a warning gives both
    errors: a calibrated model is never worse calibrated, on the data it was fitted on,
    than the model it came from. The errors compared are the datasets' mean, each
    weighing the same, as in the fit.

    Args:
        path: The model file whose network gave ``probabilities``.
        out: Where to write the calibrated file (may be ``path``).
        probabilities: (N, C) probabilities of the network, at temperature 1.
        truth: (N,) true class indices.
        groups: (N,) the dataset of each row.
        fitted_on: What the data was, for the record (``"validation"``, dataset names).
        measures: (N, 3) :func:`~fer8.models.temperature_rule.crop_measures` of each row's crop: needed by
            ``by="quality"``, and for the figures before of a model that has a rule.
        by: ``"temperature"`` (one for every face) or ``"quality"`` (a rule).

    Returns:
        The summary stored in the metadata: figures before are the model's as given
        (its temperature or rule), after are the written model's.
    """
    from dataclasses import replace

    from fer8.models.modelfile import read_spec
    from fer8.models.temperature_rule import fit_temperature_rule
    from fer8.models.writer import rewrite_spec

    spec = read_spec(path)
    names = np.asarray(groups)
    sizes = {name: int((names == name).sum()) for name in dict.fromkeys(groups)}
    weights = np.array([1.0 / sizes[name] for name in groups])
    if by not in ("temperature", "quality") or (by == "quality" and measures is None):
        raise ValueError(f"by must be 'temperature' or 'quality' (with measures), got {by!r}")
    fitted = fit_temperature(probabilities, truth, weights=weights)
    temperature, rule = fitted, None
    after: float | NDArray[np.float64] = fitted
    if by == "quality" and measures is not None:
        rule = fit_temperature_rule(probabilities, truth, measures, weights=weights)
        after = rule.temperatures_of(measures)
    before: float | NDArray[np.float64] = spec.temperature
    if spec.temperature_rule is not None and measures is not None:
        before = spec.temperature_rule.temperatures_of(measures)
    summary = calibration_summary(probabilities, truth, after, groups, before=before)
    ece_before, ece_fitted = (
        float(np.mean([row[key] for row in summary["per_dataset"].values()]))
        for key in ("ece_before", "ece_after")
    )
    if ece_fitted > ece_before:
        kept = "rule" if spec.temperature_rule is not None else f"{spec.temperature:.3f}"
        logger.warning(
            "%s: kept temperature %s (ECE %.1f%% on %s): the fitted %s would raise it to %.1f%%",
            path,
            kept,
            100 * ece_before,
            fitted_on,
            "rule" if rule is not None else f"{fitted:.3f}",
            100 * ece_fitted,
        )
        temperature, rule, after = spec.temperature, spec.temperature_rule, before
        summary = calibration_summary(probabilities, truth, after, groups, before=before)
    summary = {
        **summary,
        "temperature": temperature,
        **({"temperature_rule": rule.to_dict()} if rule is not None else {}),
        "fitted_temperature": fitted,
        "fitted_on": fitted_on,
    }
    rewrite_spec(
        path,
        replace(
            spec,
            temperature=temperature,
            temperature_rule=rule,
            metadata={**spec.metadata, "calibration": summary},
        ),
        out,
    )
    return summary
