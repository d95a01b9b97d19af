"""Face detection: YuNet (the default) or the seed's Haar cascade with a HOG check.

Both detectors take an RGB image and return face boxes ``(x, y, w, h)`` in original
pixels, largest first; each has its own settings, as named keyword arguments with
documented defaults (:func:`fer8.pipeline.detection.yunet.detect`, :func:`fer8.pipeline.detection.haar.detect`).
:func:`detect` picks one by name, so everything above this package (prediction,
training crops, evaluation, the server) only passes a name and settings along.

The two frame a face differently (YuNet from the hairline to the chin, Haar about
like dlib), so landmarks are fitted on :func:`landmark_box`, the box dlib's 68-point
model expects for the detector that found the face.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.pipeline.detection import haar, yunet
from fer8.pipeline.detection.haar import verify_face
from fer8.results import Box

#: Detector names, the default first.
DETECTORS = ("yunet", "haar")
DEFAULT_DETECTOR = "yunet"
#: :class:`Follower`: a video's frames are searched whole at least this often (seconds of
#: video); in between, faces are only looked for around where they were.
SEARCH_EVERY = 0.2

_MODULES = {"yunet": yunet, "haar": haar}

__all__ = [
    "DETECTORS",
    "DEFAULT_DETECTOR",
    "SEARCH_EVERY",
    "Follower",
    "check_detector",
    "detect",
    "detector_options",
    "landmark_box",
    "load_detectors",
    "settings",
    "verify_face",
]


def detect(image: NDArray[np.uint8], detector: str = DEFAULT_DETECTOR, **options: Any) -> list[Box]:
    """Find every face in an RGB image.

    Args:
        image: RGB ``uint8`` array (H, W, 3), as returned by :func:`fer8.load_image`.
        detector: ``"yunet"`` (default) or ``"haar"``.
        **options: That detector's settings, e.g. ``min_size=64``, ``score_threshold=0.8``
            (YuNet) or ``scale_factor=1.1`` (Haar); see :func:`settings`.

    Returns:
        Every face box in original-image pixels, largest first; empty when there is none.

    Raises:
        ValueError: An unknown detector or setting.
    """
    return _module(detector).detect(image, **_checked(detector, options))


class Follower:
    """Finds the faces of a video's frames, taken in order, searching a frame whole only
    every ``every`` seconds of video, at a scene cut, when a face was lost, or when the
    frame before had none, and in between only around the faces of the frame before.

    Between two frames a face moves little, so a window around its last box finds it
    again for a fraction of a whole search; a face that enters the picture beside
    another is found at the next whole search, at most ``every`` seconds later. Haar has no such search:
    each frame is searched whole.

    Args:
        detector: As in :func:`detect`.
        options: That detector's settings.
        every: Seconds of video between whole searches; 0 searches every frame whole.
    """

    def __init__(
        self,
        detector: str = DEFAULT_DETECTOR,
        options: Mapping[str, Any] | None = None,
        every: float = SEARCH_EVERY,
    ) -> None:
        self.detector = detector
        self.options = _checked(detector, options or {})
        self.every = every
        self._boxes: list[Box] | None = None
        self._searched = 0.0

    def find(self, image: NDArray[np.uint8], time: float, *, cut: bool = False) -> list[Box]:
        """The face boxes of the frame at ``time`` seconds, largest first.

        Args:
            image: The frame, RGB ``uint8``.
            time: Its time in the video, in seconds.
            cut: It starts a new shot (:func:`fer8.pipeline.video.is_cut`): searched whole.
        """
        found = None
        if (
            self.detector == "yunet"
            and self._boxes  # with no face to follow, any face is a new one
            and not cut
            and time - self._searched < self.every - 1e-6
        ):
            found = yunet.refind(image, self._boxes, **self.options)
        if found is None:
            boxes = detect(image, self.detector, **self.options)
            self._searched = time
        else:
            boxes = sorted((d.box for d in found), key=lambda b: b.area, reverse=True)
        self._boxes = boxes
        return boxes


def settings(detector: str = DEFAULT_DETECTOR, **options: Any) -> dict[str, Any]:
    """Every setting of ``detector`` with its default, updated by ``options``.

    The full set is what crop caches are keyed on, so a changed default changes the key.
    """
    parameters = inspect.signature(_module(detector).detect).parameters
    values = {name: p.default for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    values.update(_checked(detector, options))
    return values


def detector_options(
    detector: str = DEFAULT_DETECTOR,
    *,
    min_face: int | None = None,
    threshold: float | None = None,
    scale_factor: float | None = None,
    min_neighbors: int | None = None,
) -> dict[str, Any]:
    """The settings the command line offers, named for ``detector``'s function.

    ``threshold`` is YuNet's score threshold, or for Haar the score dlib's HOG check
    needs to confirm a face. ``scale_factor`` and ``min_neighbors`` are Haar's own.
    Options left as None keep the detector's defaults.

    Raises:
        ValueError: A Haar-only option given for YuNet.
    """
    options: dict[str, Any] = {"min_size": min_face}
    if detector == "haar":
        options.update(
            verify_threshold=threshold, scale_factor=scale_factor, min_neighbors=min_neighbors
        )
    else:
        if scale_factor is not None or min_neighbors is not None:
            raise ValueError(
                f"--haar-scale-factor and --haar-min-neighbors are settings of the "
                f"haar detector, not of {detector}"
            )
        options["score_threshold"] = threshold
    return {name: value for name, value in options.items() if value is not None}


def landmark_box(box: Box, detector: str | None = DEFAULT_DETECTOR) -> Box:
    """The box to fit dlib's 68 landmarks on, for a face that ``detector`` framed as ``box``.

    Haar boxes (and boxes of None, meaning "already in dlib's framing", such as a whole
    pre-cropped face) are used as they are.
    """
    if detector == "yunet":
        return yunet.landmark_box(box)
    return box


def check_detector(detector: str = DEFAULT_DETECTOR) -> None:
    """Check that ``detector`` is known and that its model file is the published one,
    without loading it (that happens on first use).

    Raises:
        ValueError: An unknown detector.
        ModelNotFoundError: YuNet's file is missing.
        ChecksumMismatchError: YuNet's file is not the published model.
    """
    _module(detector)
    if detector == "yunet":
        yunet.model_path()


def load_detectors(detector: str = DEFAULT_DETECTOR) -> None:
    """Load the detector now rather than on first use: YuNet's network (one ONNX Runtime
    session for every thread), or this thread's Haar cascade and HOG detector (neither
    OpenCV's cascade nor dlib's detector is documented as thread-safe, so each thread
    keeps its own). With YuNet, dlib's HOG detector, which only checks pre-cropped faces
    (:func:`verify_face`), is left to be built on first use: it takes about half a
    second, most of a one-photo run's detection set-up.
    """
    _module(detector)
    if detector == "yunet":
        yunet.load_detector()
    else:
        haar.load_detectors()


def _module(detector: str):
    try:
        return _MODULES[detector]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}"
        ) from None


def _checked(detector: str, options: Mapping[str, Any]) -> dict[str, Any]:
    parameters = inspect.signature(_module(detector).detect).parameters
    known = [name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"the {detector} detector has no setting {', '.join(unknown)}; "
            f"its settings: {', '.join(known)}"
        )
    return dict(options)
