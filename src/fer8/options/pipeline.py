"""The settings several commands share: the model, how faces are found, how they are
classified, and which frames of a video are read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fer8.options.settings import Options, setting
from fer8.pipeline import detection
from fer8.pipeline.batching import DEFAULT_BATCH_SIZE
from fer8.pipeline.detection import DEFAULT_DETECTOR, DETECTORS
from fer8.pipeline.tracking import DEFAULT_SMOOTHING
from fer8.pipeline.video import DEFAULT_FPS


@dataclass(frozen=True, kw_only=True)
class ModelOptions(Options):
    """Which model runs.

    Attributes:
        name: Model name or .fer8 file (default: the bundled model).
    """

    name: str | None = setting(None, flag="--model", metavar="NAME|PATH")


@dataclass(frozen=True, kw_only=True)
class DetectionOptions(Options):
    """How faces are found (:func:`fer8.pipeline.detection.detector_options`): the
    detector and the settings a user needs; None keeps the detector's own default.

    Raises:
        ValueError: A Haar-only setting given for YuNet.

    Attributes:
        detector: Face detector: yunet (finds turned, tilted, dark faces) or haar (the original Haar
            cascade with a HOG check).
        min_face: Smallest face searched for, in pixels of the photo (default: yunet 20, haar 48);
            larger is faster.
        detect_threshold: yunet: smallest face score kept, 0-1 (default 0.6); haar: the score dlib's
            HOG check needs to confirm a face (default 0).
        haar_scale_factor: haar: search window growth per step (default 1.2).
        haar_min_neighbors: haar: overlapping hits that make a face (default 5).
    """

    detector: str = setting(DEFAULT_DETECTOR, choices=DETECTORS)
    min_face: int | None = setting(None, min=8, metavar="PIXELS")
    detect_threshold: float | None = setting(None, metavar="SCORE")
    haar_scale_factor: float | None = setting(None, min=1, min_open=True)
    haar_min_neighbors: int | None = setting(None, min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.detector_options()  # a Haar-only setting for YuNet is refused here

    def detector_options(self) -> dict[str, Any]:
        """The detector's own settings, as its function takes them (``min_size=...``):
        the ``detector_options`` of :meth:`detector_kwargs`."""
        return detection.detector_options(
            self.detector,
            min_face=self.min_face,
            threshold=self.detect_threshold,
            scale_factor=self.haar_scale_factor,
            min_neighbors=self.haar_min_neighbors,
        )

    def detector_kwargs(self) -> dict[str, Any]:
        """``detector`` and ``detector_options``, as :class:`~fer8.pipeline.predictor.Predictor`,
        :func:`~fer8.training.crops.prepare_crops` and a training run take them."""
        return {"detector": self.detector, "detector_options": self.detector_options()}


@dataclass(frozen=True, kw_only=True)
class ClassifierOptions(Options):
    """How the faces found are put through the network.

    Attributes:
        batch_size: Faces per forward pass of the model.
        flip: Also classify each face mirrored and average: slightly more accurate, twice the
            network's work.
    """

    batch_size: int = setting(DEFAULT_BATCH_SIZE, min=1)
    flip: bool = setting(False)


@dataclass(frozen=True, kw_only=True)
class SamplingOptions(Options):
    """Which frames of a video are analysed, and how labels are steadied
    (:meth:`~fer8.pipeline.predictor.Predictor.predict_video`'s keyword arguments).

    Attributes:
        fps: Video frames analysed per second of video.
        every_frame: Analyse every frame of a video.
        smooth: Average each face's probabilities over this many seconds of video (that frame and
            those before), for steadier labels.
    """

    fps: float = setting(DEFAULT_FPS, min=0, max=1000, min_open=True)
    every_frame: bool = setting(False)
    smooth: float = setting(
        DEFAULT_SMOOTHING, min=0, max=3600, metavar="SECONDS", show_default=False
    )
