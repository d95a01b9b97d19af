"""The numbers behind a new class (numpy only, no TensorFlow): the classifier's new
columns fitted by softmax regression with the old ones held fixed, and the offset of
the new logits that keeps each old class's recall within a bound.

:mod:`fer8.training.new_class` uses them for ``fer8 train --keep-classes``.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray


def fit_new_columns(
    features: NDArray[np.floating],
    classes: NDArray[np.int64],
    old_kernel: NDArray[np.floating],
    old_bias: NDArray[np.floating],
    new: int,
    *,
    l2: float = 1e-3,
    steps: int = 300,
    learning_rate: float = 0.05,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """New classifier columns (K, new) and biases (new,) by softmax regression over all
    classes, the old columns fixed, each class weighted equally (a class of 20 photos
    counts as much as one of 200 faces).

    Args:
        features: (N, K) pooled features.
        classes: (N,) class indices; the new classes follow the old ones.
        old_kernel: (K, C) the classifier's kernel; ``old_bias`` (C,) its bias.
        new: How many classes are added.
        l2: Weight decay of the new columns.
        steps: Full-batch Adam steps.

    Returns:
        The kernel columns and biases of the new classes.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(classes, np.int64)
    total = old_kernel.shape[1] + new
    counts = np.bincount(y, minlength=total).astype(np.float64)
    present = counts > 0
    weights = (1.0 / (counts[y] * present.sum()))[:, None]
    old_logits = linear_logits(x, old_kernel, old_bias)
    # Scale-free steps: features are centred and scaled for the fit, folded back after.
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    kernel = np.zeros((x.shape[1], new))
    bias = np.zeros(new)
    target = np.zeros((len(y), total))
    target[np.arange(len(y)), y] = 1.0
    moments = [np.zeros_like(kernel), np.zeros_like(bias)]
    squares = [np.zeros_like(kernel), np.zeros_like(bias)]
    for step in range(1, steps + 1):
        logits = np.concatenate([old_logits, z @ kernel + bias], 1)
        logits -= logits.max(1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(1, keepdims=True)
        error = (probabilities - target)[:, -new:] * weights
        grads = [z.T @ error + 2 * l2 * kernel, error.sum(0)]
        for i, (param, grad) in enumerate(zip((kernel, bias), grads)):
            moments[i] = 0.9 * moments[i] + 0.1 * grad
            squares[i] = 0.999 * squares[i] + 0.001 * grad**2
            corrected = moments[i] / (1 - 0.9**step)
            param -= learning_rate * corrected / (np.sqrt(squares[i] / (1 - 0.999**step)) + 1e-8)
    # z @ k + b == x @ (k / scale) + (b - mean / scale @ k)
    unscaled = kernel / scale[:, None]
    return unscaled, bias - mean @ unscaled


def guarded_offset(
    old_logits: NDArray[np.floating],
    new_logits: NDArray[np.floating],
    classes: NDArray[np.int64],
    gray: NDArray[np.bool_],
    max_drop: float,
) -> float:
    """The largest offset of the new logits that costs no old class more than
    ``max_drop`` points of recall, on its gray crops and on its colour photos each
    (:func:`choose_offset` per group). A group with no face read right limits nothing;
    where none has one, no offset (0)."""
    offsets = [
        choose_offset(old_logits[rows], new_logits[rows], classes[rows], max_drop)
        for index in np.unique(classes)
        for kind in (True, False)
        if (rows := (classes == index) & (gray == kind)).any()
    ]
    return min((offset for offset in offsets if math.isfinite(offset)), default=0.0)


def choose_offset(
    old_logits: NDArray[np.floating],
    new_logits: NDArray[np.floating],
    classes: NDArray[np.int64],
    max_drop: float,
) -> float:
    """The largest number that, added to the new classes' logits, costs at most
    ``max_drop`` points of accuracy on faces of the old classes.

    A face of an old class that the model read right is lost once its best new logit
    passes its best old one, i.e. when the offset passes the gap between the two; the
    offset is the gap of the ``k``-th face lost, ``k`` the faces ``max_drop`` allows.
    Faces the model read wrong stay wrong whatever the offset.

    Too few faces to allow one (fewer than ``100 / max_drop``) cannot show a rate of
    ``max_drop`` points: the smallest gap of 40 faces says little of how many of
    thousands would go (a column taught from 25 photos, offset just under it, took 6%
    of FER+ Valid). Then the offset stays also below the gaps' normal tail at that
    rate (their mean less ``z`` deviations).

    Infinite where no face was read right: none can be lost.
    """
    right = old_logits.argmax(1) == classes
    gaps = np.sort(old_logits.max(1)[right] - new_logits.max(1)[right])
    if not len(gaps):
        return math.inf
    allowed = int(math.floor(max_drop / 100 * len(classes) + 1e-9))
    if allowed >= len(gaps):
        return float(gaps[-1]) + 1.0
    # Just under the gap of the first face not allowed to change.
    offset = float(gaps[allowed]) - 1e-3
    if allowed == 0 and len(gaps) > 1 and 0 < max_drop < 100:
        z = NormalDist().inv_cdf(1 - max_drop / 100)
        offset = min(offset, float(gaps.mean() - z * gaps.std(ddof=1)))
    return offset


def linear_logits(
    features: NDArray[np.floating], kernel: NDArray[np.floating], bias: NDArray[np.floating]
) -> NDArray[np.float64]:
    """``features @ kernel + bias`` in float64 ((0, C) for no features)."""
    if not len(features):
        return np.zeros((0, kernel.shape[1]))
    return np.asarray(features, np.float64) @ kernel + bias
