"""Classification: aligned face crops in, class probabilities out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
from numpy.typing import NDArray

from fer8.models.modelfile import ExpressionModel
from fer8.pipeline.alignment import AlignedFace
from fer8.pipeline.masking import apply_mask

Crops = Union[NDArray[np.uint8], Sequence[Union[NDArray[np.uint8], AlignedFace]]]


def classify(
    crops: Crops, model: ExpressionModel, *, batch_size: int = 32, flip: bool = False
) -> NDArray[np.float32]:
    """Class probabilities for each face crop.

    Args:
        crops: RGB ``uint8`` crops: an (N, H, W, 3) array, or a sequence of (H, W, 3)
            arrays or :class:`~fer8.pipeline.alignment.AlignedFace`. Crops of another size than
            the model's input are resized. When the model's preprocessing masks faces
            (``mask``), each ``AlignedFace`` is cut out along its landmarks first;
            plain arrays are taken as already framed.
        model: A loaded model (:func:`fer8.load_model`).
        batch_size: Crops per forward pass; bounds memory, not the result.
        flip: Also classify each crop mirrored left-right and average the two
            (test-time augmentation; training flips faces too). It makes the result
            the same for a face and its mirror image; on FER+ Valid it added 0.1-0.5
            points of accuracy to the bundled models, for twice the network's work.

    Returns:
        Probabilities (N, C) in ``model.labels`` order; each row sums to 1. (0, C) for
        no crops.
    """
    batch = model_batch(crops, model)
    if len(batch) == 0:
        return np.zeros((0, len(model.labels)), np.float32)
    parts = []
    for start in range(0, len(batch), batch_size):
        chunk = batch[start : start + batch_size]
        n = len(chunk)
        if flip:  # one forward pass over the faces and their mirror images
            chunk = np.concatenate([chunk, chunk[:, :, ::-1]])
        out = model(model.spec.preprocessing.apply(chunk))
        parts.append((out[:n] + out[n:]) / 2 if flip else out)
    return np.concatenate(parts).astype(np.float32, copy=False)


def model_batch(crops: Crops, model: ExpressionModel) -> NDArray[np.uint8]:
    """The crops as the model takes them, before preprocessing: masked when its
    preprocessing says so, resized to its input, stacked (N, S, S, 3). :func:`classify`
    and the explanations (:mod:`fer8.pipeline.explain`) share it, so both see one input."""
    mask = model.spec.preprocessing.mask
    if mask is not None and not isinstance(crops, np.ndarray):
        crops = [apply_mask(c, mask) if isinstance(c, AlignedFace) else c for c in crops]
    return _stack(crops, model.spec.input_size)


def _stack(crops: Crops, size: int) -> NDArray[np.uint8]:
    import cv2

    images = [c.image if isinstance(c, AlignedFace) else np.asarray(c) for c in crops]
    if not images:
        return np.zeros((0, size, size, 3), np.uint8)
    resized = []
    for image in images:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"crops must be RGB uint8 (H, W, 3), got {image.shape} {image.dtype}")
        if image.shape[:2] != (size, size):
            shrink = image.shape[0] > size
            image = cv2.resize(
                image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
        resized.append(image)
    return np.stack(resized)
