"""A temperature per face from what its crop looks like (``fer8 calibrate --by
quality``): the crop's colour and fine detail (:func:`crop_measures`), and a
:class:`TemperatureRule` on them fitted by the same likelihood as one temperature
(:mod:`fer8.models.calibration`). Numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fer8.models.calibration import (
    TEMPERATURE_BOUNDS,
    fit_temperature,
    log_probabilities,
)

#: What a :class:`TemperatureRule` may read from a crop. Both are measured on the batch
#: the network takes (preprocessed), in the crop's central half (inside the face, clear
#: of a mask's black surround), relative to that region's own deviation, so neither
#: depends on the preprocessing's scale:
#:
#: * ``colour``: mean ``|R - G| + |G - B|`` of the channels, each brought to zero mean
#:   and unit deviation: 0 for a gray face (FER2013, JAFFE), more for a colour one.
#: * ``detail``: log10 of the mean square of the luma's 3x3 Laplacian over the
#:   luma's variance: the finest detail in the crop. A face enlarged from few pixels
#:   (FER2013's 48) has little (-1.8 on FER+ Valid, half the faces), a sharp posed
#:   photo more (JAFFE -0.9); faces in web photos and film stills lie between and
#:   across (-2.4 to -0.8).
#: * ``small_gray``: 1 for a gray crop (``colour`` below :data:`GRAY_COLOUR`) with
#:   little detail (below :data:`SMALL_DETAIL`), as a face enlarged from a small gray
#:   picture (FER2013's 48 px); else 0.
CROP_MEASURES = ("colour", "detail", "small_gray")


#: ``colour`` below this is a gray crop (JPEG noise on a gray picture stays far below).
GRAY_COLOUR = 0.05


#: ``detail`` below this is little: FER+ Valid's 99th percentile through fer8's
#: pipeline at 160 px (the bundled model's input when it was set). The 144-pixel model's
#: rule was fitted with this threshold as it is; a new value would need new rules.
SMALL_DETAIL = -1.2


#: The measures ``fer8 calibrate --by quality`` fits a rule on.
QUALITY_MEASURES = ("small_gray",)


def crop_measures(batch: ArrayLike) -> NDArray[np.float64]:
    """The :data:`CROP_MEASURES` of each crop of a preprocessed batch (N, S, S, 3), as
    (N, 3) in that order."""
    batch = np.asarray(batch, np.float32)
    side = batch.shape[1]
    centre = batch[:, side // 4 : side - side // 4, side // 4 : side - side // 4, :]
    centre = centre.astype(np.float64)
    # Each channel to zero mean and unit deviation: a gray crop's channels are then the
    # same whatever per-channel means and scales the preprocessing applied.
    channels = centre - centre.mean(axis=(1, 2), keepdims=True)
    channels /= channels.std(axis=(1, 2), keepdims=True) + 1e-6
    colour = np.abs(np.diff(channels, axis=-1)).sum(axis=-1).mean(axis=(1, 2))
    luma = centre.mean(axis=-1)
    laplacian = (
        4 * luma[:, 1:-1, 1:-1]
        - luma[:, :-2, 1:-1]
        - luma[:, 2:, 1:-1]
        - luma[:, 1:-1, :-2]
        - luma[:, 1:-1, 2:]
    )
    energy = (laplacian**2).mean(axis=(1, 2)) / (luma.var(axis=(1, 2)) + 1e-6)
    detail = np.log10(np.maximum(energy, 1e-6))
    small_gray = (colour < GRAY_COLOUR) & (detail < SMALL_DETAIL)
    return np.stack([colour, detail, small_gray.astype(np.float64)], axis=1)


@dataclass(frozen=True)
class TemperatureRule:
    """A temperature per crop, from what the crop looks like: ``1 / T = intercept +
    sum(weights[k] * measure_k)`` over the named :data:`CROP_MEASURES`, T kept within
    :data:`TEMPERATURE_BOUNDS`.

    One temperature cannot suit faces the network is over-confident on (photos in the
    wild) and faces it is under-confident on (FER2013's small gray crops) at once; a
    rule on the crop's colour and detail can, and is still one number per face that
    changes no label.

    Attributes:
        measures: Names from :data:`CROP_MEASURES`, in the order of ``weights``.
        intercept: ``1 / T`` of a crop whose measures are all 0.
        weights: Each measure's weight in ``1 / T``.
    """

    measures: tuple[str, ...]
    intercept: float
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        unknown = [name for name in self.measures if name not in CROP_MEASURES]
        if unknown or len(self.weights) != len(self.measures):
            raise ValueError(
                f"a temperature rule needs one weight per measure of {CROP_MEASURES}, got "
                f"measures {list(self.measures)} and weights {list(self.weights)}"
            )
        if not all(math.isfinite(v) for v in (self.intercept, *self.weights)):
            raise ValueError("a temperature rule's numbers must be finite")

    def temperatures(self, batch: ArrayLike) -> NDArray[np.float64]:
        """(N,) temperature of each crop of a preprocessed batch (N, S, S, 3)."""
        return self.temperatures_of(crop_measures(batch))

    def temperatures_of(self, measures: ArrayLike) -> NDArray[np.float64]:
        """(N,) temperatures from (N, len(CROP_MEASURES)) :func:`crop_measures`."""
        columns = np.asarray(measures, np.float64)[
            :, [CROP_MEASURES.index(m) for m in self.measures]
        ]
        inverse = self.intercept + columns @ np.asarray(self.weights, np.float64)
        low, high = TEMPERATURE_BOUNDS
        return 1.0 / np.clip(inverse, 1.0 / high, 1.0 / low)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inverse_temperature": "intercept + sum(weights * measures)",
            "measures": list(self.measures),
            "intercept": self.intercept,
            "weights": list(self.weights),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemperatureRule:
        return cls(
            measures=tuple(str(name) for name in data["measures"]),
            intercept=float(data["intercept"]),
            weights=tuple(float(w) for w in data["weights"]),
        )


def fit_temperature_rule(
    probabilities: ArrayLike,
    truth: ArrayLike,
    measures: ArrayLike,
    *,
    names: Sequence[str] = QUALITY_MEASURES,
    weights: ArrayLike | None = None,
    iterations: int = 100,
) -> TemperatureRule:
    """The :class:`TemperatureRule` on ``names`` that minimises
    :func:`negative_log_likelihood` on labelled rows.

    With ``1 / T`` linear in the rule's numbers the likelihood is convex in them (each
    row's is convex in its ``1 / T``), so Newton's method, halving a step that does not
    lower it, finds the minimum (the bounds on T apply only when the rule is used, as
    a minimum beyond them, e.g. faces the network answers at random, would otherwise
    be flat and far): the gradient of a row's loss in ``1 / T`` is
    ``E[log p] - log p[truth]`` under its calibrated probabilities, the curvature their
    variance of ``log p``.

    Args:
        probabilities: (N, C) uncalibrated probabilities (temperature 1).
        truth: (N,) index of each row's true class.
        measures: (N, len(CROP_MEASURES)) :func:`crop_measures` of each row's crop.
        names: The measures the rule uses (:data:`CROP_MEASURES`).
        weights: (N,) weight of each row; None weighs rows equally.
        iterations: At most this many Newton steps.
    """
    probabilities = np.asarray(probabilities, np.float64)
    logs = log_probabilities(probabilities)
    truth = np.asarray(truth, np.int64)
    columns = np.asarray(measures, np.float64)[:, [CROP_MEASURES.index(m) for m in names]]
    design = np.concatenate([np.ones((len(logs), 1)), columns], axis=1)
    row_weights = np.ones(len(logs)) if weights is None else np.asarray(weights, np.float64)
    row_weights = row_weights / row_weights.sum()
    picked = logs[np.arange(len(truth)), truth]

    def calibrated(theta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        inverse = design @ theta  # unclipped, so the likelihood stays convex
        logits = logs * inverse[:, None]
        peak = logits.max(axis=1, keepdims=True)
        exp = np.exp(logits - peak)
        total = exp.sum(axis=1)
        loss = float(row_weights @ (peak[:, 0] + np.log(total) - inverse * picked))
        return loss, exp / total[:, None]

    theta = np.zeros(design.shape[1])
    theta[0] = 1.0 / fit_temperature(probabilities, truth, weights=row_weights)
    loss, calibrated_p = calibrated(theta)
    for _ in range(iterations):
        mean = (calibrated_p * logs).sum(axis=1)
        variance = (calibrated_p * logs**2).sum(axis=1) - mean**2
        gradient = design.T @ (row_weights * (mean - picked))
        hessian = (design * (row_weights * variance)[:, None]).T @ design
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        scale = 1.0
        while scale > 1e-6:
            new_loss, new_p = calibrated(theta - scale * step)
            if new_loss <= loss:
                break
            scale /= 2
        else:
            break
        theta, loss, calibrated_p = theta - scale * step, new_loss, new_p
        if np.abs(scale * step).max() < 1e-9:
            break
    return TemperatureRule(tuple(names), float(theta[0]), tuple(float(w) for w in theta[1:]))
