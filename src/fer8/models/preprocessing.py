"""Turning ``uint8`` RGB crops into the float input a backbone's weights expect.

Each pretrained backbone was trained with its own channel order and mean; feeding it
anything else silently costs accuracy. A model file therefore stores the exact numbers,
and nothing is inferred from the backbone's name at prediction time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class Preprocessing:
    """Per-channel ``(pixel - mean) / std`` after putting the channels in ``channel_order``.

    Attributes:
        channel_order: ``"RGB"`` or ``"BGR"``; the order ``mean`` and ``std`` are given in.
        mean: Per-channel mean, in pixel units (0-255).
        std: Per-channel divisor; ones for the Caffe-style models.
        grayscale: Turn each crop into gray (ITU-R BT.601 luma in all three channels)
            first. ``fer8 train`` sets it when every training face was gray (FER2013):
            such a model has never seen colour, and a colour face can fool it (the
            bundled model reads the astronaut's smile as surprise in colour, as happy in
            gray).
        standardize: Then scale each crop by its own mean and deviation (all pixels and
            channels together; the deviation at least ``1/sqrt(pixels)``), as FaceNet
            was trained: the network sees contrast, not exposure.
        mask: ``"contour"``: the face is cut out along its landmark contour (jaw and
            forehead) onto black before anything else (:mod:`fer8.pipeline.masking`),
            at training and at prediction, so that every source is framed alike
            however its faces were cut. None: the aligned crop as it is.
    """

    channel_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    grayscale: bool = False
    standardize: bool = False
    mask: str | None = None

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(self.std):
            raise ValueError("mean and std need three values each, std non-zero")
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {', '.join(map(str, MASKS))}, not {self.mask!r}")

    def apply(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Preprocess a batch of RGB crops (N, H, W, 3) into float32 model input."""
        x = crops.astype(np.float32)
        if self.grayscale:
            x = np.repeat((x @ LUMA)[..., None], 3, axis=-1)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x -= np.asarray(self.mean, np.float32)
        if self.std != (1.0, 1.0, 1.0):
            x /= np.asarray(self.std, np.float32)
        if self.standardize:
            mean = x.mean(axis=(1, 2, 3), keepdims=True)
            floor = 1.0 / np.sqrt(np.prod(x.shape[1:]))
            x = (x - mean) / np.maximum(x.std(axis=(1, 2, 3), keepdims=True), floor)
        return np.ascontiguousarray(x, np.float32)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "channel_order": self.channel_order,
            "mean": list(self.mean),
            "std": list(self.std),
            "grayscale": self.grayscale,
        }
        # Written only when set, so a model file without them keeps its bytes (and SHA-256).
        if self.standardize:
            data["standardize"] = True
        if self.mask is not None:
            data["mask"] = self.mask
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            channel_order=str(data["channel_order"]),
            # Three values each: __post_init__ checks.
            mean=cast(Triple, tuple(float(v) for v in data["mean"])),
            std=cast(Triple, tuple(float(v) for v in data.get("std", (1.0, 1.0, 1.0)))),
            grayscale=bool(data.get("grayscale", False)),
            standardize=bool(data.get("standardize", False)),
            mask=data.get("mask"),
        )


#: The ways :attr:`Preprocessing.mask` can cut a face out.
MASKS = (None, "contour")

# Luma weights of RGB (ITU-R BT.601, as OpenCV's and Pillow's RGB -> gray).
LUMA = np.array([0.299, 0.587, 0.114], np.float32)

#: Keras applications' ResNet50 (``mode="caffe"``): BGR minus the ImageNet means.
IMAGENET_CAFFE = Preprocessing("BGR", (103.939, 116.779, 123.68))
#: keras-vggface ``preprocess_input(version=2)``, for its RESNET50 and SENET50 weights.
VGGFACE2 = Preprocessing("BGR", (91.4953, 103.8827, 131.0912))
#: FaceNet (``facenet_keras.h5``): RGB, each image standardised by its own statistics.
FACENET = Preprocessing("RGB", (0.0, 0.0, 0.0), standardize=True)
