"""Turning ``uint8`` RGB crops into the float input a backbone's weights expect.

Each pretrained backbone was trained with its own channel order and mean; feeding it
anything else silently costs accuracy. A model file therefore stores the exact numbers,
and nothing is inferred from the backbone's name at prediction time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


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
    """

    channel_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    grayscale: bool = False

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(self.std):
            raise ValueError("mean and std need three values each, std non-zero")

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
        return np.ascontiguousarray(x)

    def to_dict(self) -> dict[str, Any]:
        return {"channel_order": self.channel_order, "mean": list(self.mean), "std": list(self.std),
                "grayscale": self.grayscale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            channel_order=str(data["channel_order"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data.get("std", (1.0, 1.0, 1.0))),
            grayscale=bool(data.get("grayscale", False)),
        )


# Luma weights of RGB (ITU-R BT.601, as OpenCV's and Pillow's RGB -> gray).
LUMA = np.array([0.299, 0.587, 0.114], np.float32)

#: Keras applications' ResNet50 (``mode="caffe"``): BGR minus the ImageNet means.
IMAGENET_CAFFE = Preprocessing("BGR", (103.939, 116.779, 123.68))
#: keras-vggface ``preprocess_input(version=2)``, for its RESNET50 and SENET50 weights.
VGGFACE2 = Preprocessing("BGR", (91.4953, 103.8827, 131.0912))
