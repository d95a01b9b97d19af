"""Why the model said what it said: class activation maps (Zhou et al., CVPR 2016).

fer8's networks end in global average pooling and dense layers (ResNet50's and
FaceNet's heads alike). For such a head the logit of class ``c`` is the mean over the
last feature map's positions of ``sum_k W[k, c] * F[k, y, x]``, plus a bias, where ``W``
is the head's composed weights. That sum, taken at each position, is the class's
activation map: exact for this head (its mean *is* the logit, up to the bias), without
gradients and without a second pass, since the feature map comes out of the same forward
pass as the probabilities (the graph's ``features`` output, see
:mod:`fer8.models.onnx_graph`).

The map lives on the aligned face crop; an :class:`Explanation` maps it back to the
photo through the crop's affine matrix. A network with another head (a Flatten, a ReLU
between the pooling and the output) is refused with
:class:`~fer8.errors.ExplanationError` rather than given a map that is not its own.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ExplanationError
from fer8.models.modelfile import ExpressionModel
from fer8.pipeline.classification import Crops, model_batch
from fer8.results import Box, Face

if TYPE_CHECKING:
    from fer8.pipeline.images import ImageSource

logger = logging.getLogger(__name__)

#: Longest side of a face's heatmap PNG in the HTTP API (the page scales it to the box).
PNG_SIDE = 256

_heads: weakref.WeakKeyDictionary[ExpressionModel, tuple[NDArray, NDArray]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True, eq=False)
class Explanation:
    """Where in one face the evidence for a class lies.

    Attributes:
        face: The face's result, as :meth:`fer8.Predictor.predict` gives it.
        label: The class explained (the predicted one unless another was asked for).
        activation: The class activation map on the network's last feature map (h, w),
            in logit units: its mean plus the head's bias is the class's logit.
        heatmap: The map's positive part over the aligned crop (S, S), scaled so that
            its maximum is 1 (all zeros when nothing speaks for the class).
        matrix: The crop's 2x3 affine matrix from photo pixels to crop pixels.
    """

    face: Face
    label: str
    activation: NDArray[np.float32]
    heatmap: NDArray[np.float32]
    matrix: NDArray[np.float64]

    def region(self, width: int, height: int) -> tuple[Box, NDArray[np.float32]]:
        """The heatmap in photo pixels, over the part of a ``width`` x ``height`` photo
        that the crop covers: that part's box and the map on it (h, w), 0..1."""
        import cv2

        size = self.heatmap.shape[0]
        inverse = cv2.invertAffineTransform(self.matrix)
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
        points = corners @ inverse[:, :2].T + inverse[:, 2]
        x0, y0 = (max(0, math.floor(v)) for v in points.min(axis=0))
        x1 = min(width, math.ceil(points[:, 0].max()))
        y1 = min(height, math.ceil(points[:, 1].max()))
        box = Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))
        if box.w == 0 or box.h == 0:
            return box, np.zeros((box.h, box.w), np.float32)
        matrix = self.matrix.copy()
        matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
        heat = cv2.warpAffine(
            self.heatmap,
            matrix,
            (box.w, box.h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        return box, heat

    def in_image(self, width: int, height: int) -> NDArray[np.float32]:
        """The heatmap over a whole ``width`` x ``height`` photo (0 outside the crop)."""
        box, heat = self.region(width, height)
        full = np.zeros((height, width), np.float32)
        full[box.y : box.y + box.h, box.x : box.x + box.w] = heat
        return full

    def png(self, width: int, height: int, *, side: int = PNG_SIDE) -> tuple[Box, bytes]:
        """The heatmap as an RGBA PNG to lay over the photo: colour from the map (jet),
        opacity from its strength. Returns the photo box the picture covers (it is at
        most ``side`` pixels long and meant to be stretched over that box) and the PNG."""
        import cv2
        from PIL import Image

        box, heat = self.region(width, height)
        if box.w == 0 or box.h == 0:
            heat = np.zeros((1, 1), np.float32)
        scale = min(1.0, side / max(heat.shape))
        if scale < 1.0:
            heat = cv2.resize(
                heat,
                (max(1, round(heat.shape[1] * scale)), max(1, round(heat.shape[0] * scale))),
                interpolation=cv2.INTER_AREA,
            )
        rgba = np.dstack([colorize(heat), np.round(heat * 255).astype(np.uint8)])
        buffer = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
        return box, buffer.getvalue()

    def to_dict(self, width: int, height: int) -> dict[str, Any]:
        """The JSON form of ``POST /v1/predict?explain=true``: the class, the photo box the
        picture covers, and the picture (:meth:`png`) in base64."""
        box, data = self.png(width, height)
        return {
            "label": self.label,
            "box": box.to_list(),
            "png": base64.b64encode(data).decode("ascii"),
        }


def class_maps(
    crops: Crops, model: ExpressionModel, *, batch_size: int = 32, flip: bool = False
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Probabilities and every class's activation map for each face crop.

    Args:
        crops: As :func:`fer8.classify` takes them.
        model: A model loaded from a ``.fer8`` file whose head is global average pooling
            and dense layers.
        batch_size: Crops per forward pass.
        flip: As in :func:`fer8.classify`: the mirrored crop's map, mirrored back, is
            averaged in too.

    Returns:
        Probabilities (N, C), as :func:`fer8.classify` gives them, and the maps
        (N, C, h, w) on the last feature map, in logit units.

    Raises:
        ExplanationError: The model cannot be explained (see the module's docstring).
    """
    weights, _ = head(model)
    probabilities, maps = [], []
    for out, features in _forward(crops, model, batch_size, flip):
        n = len(out) // 2 if flip else len(out)
        cams = np.einsum("nkhw,kc->nchw", features, weights.astype(np.float32))
        if flip:
            out = (out[:n] + out[n:]) / 2
            cams = (cams[:n] + cams[n:, :, :, ::-1]) / 2
        probabilities.append(out)
        maps.append(cams)
    if not probabilities:
        count = len(model.labels)
        return np.zeros((0, count), np.float32), np.zeros((0, count, 1, 1), np.float32)
    return (
        np.concatenate(probabilities).astype(np.float32, copy=False),
        np.concatenate(maps).astype(np.float32, copy=False),
    )


def feature_maps(
    crops: Crops, model: ExpressionModel, *, batch_size: int = 32
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Probabilities (N, C) and the last feature map (N, K, h, w) of each face crop,
    the map that the head's global average pooling averages.

    Raises:
        ExplanationError: The model's network gives no feature map.
    """
    parts = list(_forward(crops, model, batch_size, False))
    if not parts:
        return np.zeros((0, len(model.labels)), np.float32), np.zeros((0, 1, 1, 1), np.float32)
    return (np.concatenate([p for p, _ in parts]), np.concatenate([f for _, f in parts]))


def _forward(crops: Crops, model: ExpressionModel, batch_size: int, flip: bool):
    """(probabilities, features) per batch; with ``flip`` each batch is followed by its
    mirror image in the same pass."""
    batch = model_batch(crops, model)
    for start in range(0, len(batch), batch_size):
        chunk = batch[start : start + batch_size]
        if flip:
            chunk = np.concatenate([chunk, chunk[:, :, ::-1]])
        yield model.features(model.spec.preprocessing.apply(chunk))


def head(model: ExpressionModel) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The model's head after the pooling as ``logits = pooled @ W + b`` (read once per
    loaded model from its file).

    Raises:
        ExplanationError: The model was not loaded from a file, or its head is not
            pooling and dense layers.
    """
    found = _heads.get(model)
    if found is None:
        from fer8.models.classifier_head import head_weights
        from fer8.models.modelfile import read_graph, read_network_config

        if model.source is None:
            raise ExplanationError(
                f"{model.spec.name}: explanations need a model loaded from "
                "a .fer8 file (fer8.load_model)"
            )
        config = read_network_config(model.source)
        if config is None:
            raise ExplanationError(
                f"{model.source}: no network.json to find the classifier "
                "head in; convert the file once with fer8 export "
                "--format fer8"
            )
        try:
            found = _heads[model] = head_weights(read_graph(model.source), config)
        except ExplanationError as exc:
            raise ExplanationError(f"{model.source}: {exc}") from None
    return found


def explanation(
    face: Face,
    matrix: NDArray[np.float64],
    maps: NDArray[np.float32],
    labels: Sequence[str],
    label: str | None,
    size: int,
) -> Explanation:
    """One face's :class:`Explanation` from its maps (C, h, w) (see :func:`class_maps`).

    Args:
        face: The face's result.
        matrix: Its crop's affine matrix.
        maps: Every class's map for the face.
        labels: The model's labels, in order.
        label: The class to explain; the face's label when None.
        size: Side of the aligned crop, in pixels.
    """
    import cv2

    label = face.label if label is None else label
    activation = maps[list(labels).index(label)]
    heat = cv2.resize(np.maximum(activation, 0), (size, size), interpolation=cv2.INTER_CUBIC)
    heat = np.maximum(heat, 0)
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else np.zeros_like(heat)
    return Explanation(
        face,
        label,
        activation.astype(np.float32),
        heat.astype(np.float32),
        np.asarray(matrix, np.float64),
    )


def check_label(label: str | None, labels: Sequence[str]) -> None:
    """Refuse a class the model does not have.

    Raises:
        ValueError: ``label`` is not one of ``labels``.
    """
    if label is not None and label not in labels:
        raise ValueError(f"the model has no class {label!r}; its classes are {', '.join(labels)}")


def explain(
    image: ImageSource,
    model: ExpressionModel | str | os.PathLike | None = None,
    *,
    label: str | None = None,
    **options: Any,
) -> list[Explanation]:
    """Every face of a photo with the map of where the evidence for its class lies.

    Example:
        >>> for item in fer8.explain("photo.jpg"):
        ...     print(item.face.label, item.region(*image_size)[0])

    A convenience that loads the model for the call; for many photos, keep a
    :class:`fer8.Predictor` and call its :meth:`~fer8.Predictor.explain`.

    Args:
        image: Anything :func:`fer8.load_image` reads.
        model: A loaded model, a model file, a registered name, or None (the default).
        label: Explain this class for every face instead of each face's own label.
        **options: More :class:`fer8.Predictor` settings (``detector``, ``max_faces``,
            ``flip``...).

    Raises:
        InvalidImageError: The image cannot be read.
        ExplanationError: The model cannot be explained this way.
    """
    from fer8.pipeline.predictor import Predictor

    with Predictor(model, workers=0, warmup=False, **options) as predictor:
        return predictor.explain(image, label=label)


def colorize(heat: NDArray[np.float32]) -> NDArray[np.uint8]:
    """A 0..1 map as RGB colours (OpenCV's jet: blue for 0, red for 1)."""
    import cv2

    gray = np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay(
    image: NDArray[np.uint8], explanations: Sequence[Explanation], *, opacity: float = 0.6
) -> NDArray[np.uint8]:
    """A copy of the photo with each face's heatmap laid over it, stronger where the
    evidence is (the photo shows through where the map is 0)."""
    canvas = image.astype(np.float32)
    height, width = image.shape[:2]
    for item in explanations:
        box, heat = item.region(width, height)
        if box.w == 0 or box.h == 0:
            continue
        part = canvas[box.y : box.y + box.h, box.x : box.x + box.w]
        weight = (opacity * heat)[..., None]
        part[:] = part * (1 - weight) + colorize(heat).astype(np.float32) * weight
    return np.round(canvas).clip(0, 255).astype(np.uint8)
