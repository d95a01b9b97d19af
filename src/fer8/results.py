"""Result values: what every stage returns and every writer reads.

They are frozen dataclasses rather than dicts so that a typo is an ``AttributeError``, not a
silent ``None``, and ``to_dict()`` is the one JSON-safe shape that the CLI, the server and
users' scripts all share.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from fer8.pipeline.explain import Explanation
    from fer8.pipeline.images import ImageSource


@dataclass(frozen=True)
class Box:
    """A face box in pixels of the original image: top-left corner, width and height."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def to_list(self) -> list[int]:
        return [int(self.x), int(self.y), int(self.w), int(self.h)]

    def clip(self, width: int, height: int) -> Box:
        """The part of this box inside a ``width`` x ``height`` image (empty: w or h 0)."""
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(width, self.x + self.w), min(height, self.y + self.h)
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def iou(self, other: Box) -> float:
        """Intersection over union, 0 for disjoint boxes."""
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union else 0.0


@dataclass(frozen=True)
class HeadPose:
    """A head's orientation in degrees, estimated from its landmarks
    (:func:`fer8.pipeline.pose.head_pose`, whose docstring gives the conventions).

    Attributes:
        yaw: Turning left-right; positive when the face turns to the picture's right.
        pitch: Nodding; positive when the face tilts up.
        roll: Tilting in the picture; positive when the face is turned clockwise.
    """

    yaw: float
    pitch: float
    roll: float

    def to_dict(self) -> dict[str, float]:
        return {
            "yaw": round(float(self.yaw), 2),
            "pitch": round(float(self.pitch), 2),
            "roll": round(float(self.roll), 2),
        }


@dataclass(frozen=True, eq=False)
class Face:
    """One classified face.

    Attributes:
        box: Where the face is in the original image.
        label: The most probable class.
        confidence: Its probability.
        probabilities: Every class's probability, in the model's label order.
        landmarks: dlib's 68 points in original-image pixels, or ``None`` when they
            could not be fitted.
        aligned: True when the crop was aligned from landmarks, False when it fell
            back to a square crop of the box.
        pose: The head's yaw, pitch and roll, estimated from the landmarks; ``None``
            without them.
    """

    box: Box
    label: str
    confidence: float
    probabilities: dict[str, float]
    landmarks: NDArray[np.float32] | None = None
    aligned: bool = False
    pose: HeadPose | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe form used by every output format. ``landmarks`` (68 [x, y]
        pairs, to 0.01 pixel) and ``pose`` are ``None`` for a face classified from the
        fallback crop of its box."""
        points = (
            None
            if not self.aligned or self.landmarks is None
            else [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]
        )
        return {
            "box": self.box.to_list(),
            "label": self.label,
            "confidence": float(self.confidence),
            "probabilities": {k: float(v) for k, v in self.probabilities.items()},
            "landmarks": points,
            "pose": None if self.pose is None else self.pose.to_dict(),
        }


class Drawable:
    """What every result that can be drawn shares: :meth:`plot` and :meth:`save`, which
    hand the result to :mod:`fer8.drawing` (it draws each kind its own way: boxes and
    labels, or heatmaps under them for an :class:`ExplainedResult`)."""

    __slots__ = ()

    def plot(
        self,
        image: ImageSource | None = None,
        *,
        landmarks: bool = False,
        max_pixels: int | None = None,
    ) -> NDArray[np.uint8]:
        """The photo with the result drawn on it, as an RGB array (:func:`fer8.drawing.plot`:
        the photo is read from the result's ``source`` unless given)."""
        from fer8.drawing import plot

        return plot(
            cast("ImageResult | ExplainedResult", self),
            image,
            landmarks=landmarks,
            max_pixels=max_pixels,
        )

    def save(
        self,
        path: str | os.PathLike,
        image: ImageSource | None = None,
        *,
        landmarks: bool = False,
        max_pixels: int | None = None,
    ) -> Path:
        """Write :meth:`plot`'s picture to ``path`` (:func:`fer8.drawing.save`)."""
        from fer8.drawing import save

        return save(
            cast("ImageResult | ExplainedResult", self),
            path,
            image,
            landmarks=landmarks,
            max_pixels=max_pixels,
        )


@dataclass(frozen=True, eq=False)
class ImageResult(Drawable):
    """Everything found in one image; an image without faces has an empty ``faces``.

    Attributes:
        source: The path or a description of the input.
        faces: Every face found, largest first.
        error: Why the input could not be processed, or ``None``.
    """

    source: str
    faces: tuple[Face, ...] = field(default_factory=tuple)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``fer8 predict --format json`` prints for one image."""
        return {
            "source": self.source,
            "faces": [face.to_dict() for face in self.faces],
            "error": self.error,
        }


@dataclass(frozen=True, eq=False)
class TrackedFace(Face):
    """A face in a video frame, with the id of the track that follows it across frames.

    Attributes:
        track: The same number for the same face while it stays in view (from 1).
    """

    track: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"track": int(self.track), **super().to_dict()}


@dataclass(frozen=True, eq=False)
class FrameResult(ImageResult):
    """Everything found in one sampled frame of a video: an image result with its place
    in time, whose faces carry track ids.

    Attributes:
        frame: The frame's index in the video (0 for the first frame), or ``None`` when
            the video could not be opened at all (``error`` says why).
        time: The frame's time in seconds from the start.
    """

    faces: tuple[TrackedFace, ...] = field(default_factory=tuple)
    frame: int | None = None
    time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``fer8 predict --format json`` prints for one sampled frame."""
        return {
            "source": self.source,
            "frame": self.frame,
            "time": None if self.time is None else round(float(self.time), 3),
            "faces": [face.to_dict() for face in self.faces],
            "error": self.error,
        }


@dataclass(frozen=True, eq=False)
class ExplainedResult(Drawable):
    """A photo's result with where the evidence for each face's expression lies
    (``fer8 predict --explain``, ``POST /v1/predict?explain=true``).

    Attributes:
        result: The photo's result; its ``error`` says why it could not be read.
        explanations: One :class:`fer8.Explanation` per face, in the order of
            ``result.faces``.
    """

    result: ImageResult
    explanations: tuple[Explanation, ...] = ()

    @classmethod
    def of(cls, source: str, explanations: Sequence[Explanation]) -> ExplainedResult:
        """The result of :meth:`fer8.Predictor.explain`'s explanations of one photo."""
        return cls(
            ImageResult(source, tuple(item.face for item in explanations)), tuple(explanations)
        )

    def to_dict(self, width: int, height: int) -> dict[str, Any]:
        """The result's JSON object, each face with its ``explanation``
        (:meth:`fer8.Explanation.to_dict`) for a ``width`` x ``height`` photo."""
        answer = self.result.to_dict()
        for face, item in zip(answer["faces"], self.explanations):
            face["explanation"] = item.to_dict(width, height)
        return answer
