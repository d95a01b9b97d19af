"""``Predictor``: the loaded models, chained as load -> detect -> landmarks -> align -> classify.

It holds no logic of its own beyond ordering and batching: every step is the public
stage function of its module, so a crop made here is framed exactly like one made by
training or by a user calling the stages by hand. Faces of several inputs share the
network's batches (:mod:`fer8.pipeline.batching`), and the CPU stages run ahead of the
network in threads (:mod:`fer8.pipeline.prefetch`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, Union, cast

import numpy as np
from numpy.typing import NDArray

from fer8.errors import Fer8Error, InvalidImageError, InvalidVideoError
from fer8.models.modelfile import ExpressionModel
from fer8.models.registry import load_model
from fer8.pipeline.alignment import AlignedFace
from fer8.pipeline.batching import DEFAULT_BATCH_SIZE, Prepared, classified
from fer8.pipeline.classification import classify
from fer8.pipeline.detection import (
    DEFAULT_DETECTOR,
    SEARCH_EVERY,
    Follower,
    check_detector,
    load_detectors,
    settings,
)
from fer8.pipeline.faces import face_from_crop, faces_in_photo
from fer8.pipeline.images import MAX_PIXELS, ImageSource, describe_source, load_image
from fer8.pipeline.landmarking import load_landmark_model
from fer8.pipeline.pose import head_pose
from fer8.pipeline.prefetch import READ_AHEAD, prefetch, read_ahead
from fer8.pipeline.tracking import DEFAULT_SMOOTHING, Smoother, Tracker
from fer8.pipeline.video import (
    DEFAULT_FPS,
    Frame,
    FrameSignature,
    VideoSource,
    describe_video,
    frame_signature,
    is_cut,
    read_frames,
    until_broken,
)
from fer8.results import Box, Face, FrameResult, HeadPose, ImageResult, TrackedFace

if TYPE_CHECKING:
    from fer8.pipeline.explain import Explanation

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
F = TypeVar("F", bound=Face)


class Predictor:
    """Finds and classifies every face in images, loading the models once.

    Example:
        >>> predictor = fer8.Predictor("runs/raf/model.fer8")
        >>> result = predictor.predict("photo.jpg")
        >>> [(face.label, round(face.confidence, 2)) for face in result.faces]
        [('happy', 0.93)]

    Args:
        model: A loaded :class:`~fer8.models.modelfile.ExpressionModel`, a model file path,
            a registered name, or ``None`` for the default model.
        max_faces: Keep at most this many faces per image, the largest.
        batch_size: Faces per forward pass in :meth:`predict_many`.
        flip: Average each face's probabilities with its mirror image's (see
            :func:`fer8.classify`): a little more accurate, twice the network's work.
        workers: Threads preparing images (decode, detect, align) while the model runs
            (one cannot keep up on two cores); 0 prepares them in the calling thread.
        detector: ``"yunet"`` (default) or ``"haar"`` (see :func:`fer8.detect`).
        detector_options: That detector's settings, e.g. ``{"min_size": 64}``.
        cache: Folder for downloaded models.
        warmup: Run the model once now, so the first real call is not slow.
        max_pixels: Larger images are refused (see :func:`fer8.load_image`); raise it
            for panoramas.
        landmark_model: dlib's shape predictor, loaded (``fer8.pipeline.landmarking.
            load_landmark_model``) or in a process of its own (``LandmarkProcess``, which
            ``fer8 predict`` starts first thing so that the model loads in parallel);
            the default model, loaded here, when None.
    """

    def __init__(
        self,
        model: ExpressionModel | str | os.PathLike | None = None,
        *,
        max_faces: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flip: bool = False,
        workers: int = 2,
        detector: str = DEFAULT_DETECTOR,
        detector_options: Mapping[str, Any] | None = None,
        cache: str | os.PathLike | None = None,
        warmup: bool = True,
        max_pixels: int = MAX_PIXELS,
        landmark_model: Any = None,
    ) -> None:
        if max_faces is not None and max_faces < 1:
            raise ValueError("max_faces must be at least 1")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model = model if isinstance(model, ExpressionModel) else load_model(model, cache=cache)
        self.landmark_model = landmark_model or load_landmark_model()
        self.max_faces = max_faces
        self.max_pixels = max_pixels
        self.batch_size = batch_size
        self.flip = flip
        self.detector = detector
        self.detector_options = settings(detector, **(detector_options or {}))
        # One pool for the predictor's life: its threads keep their detectors loaded
        # (building dlib's HOG detector, which Haar uses, takes half a second per thread).
        self._pool = (
            ThreadPoolExecutor(
                workers,
                thread_name_prefix="fer8-prepare",
                initializer=load_detectors,
                initargs=(detector,),
            )
            if workers > 0
            else None
        )
        if warmup:
            load_detectors(detector)
            size = self.model.spec.input_size
            classify(np.zeros((1, size, size, 3), np.uint8), self.model)
            if self._pool is not None:
                for future in [self._pool.submit(int) for _ in range(workers)]:
                    future.result()  # starts the workers, which load their detectors
        else:  # detectors are built on first use; a broken file is an error here, not there
            check_detector(detector)

    def close(self) -> None:
        """Stop the preparation threads (they also stop when the process exits)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.labels

    def predict(self, image: ImageSource, *, detect: bool = True) -> ImageResult:
        """Classify every face in one image.

        Args:
            image: Anything :func:`fer8.load_image` reads.
            detect: When False the whole image is taken as one face (pre-cropped
                faces such as FER2013's).

        Raises:
            InvalidImageError: The image cannot be read.
        """
        prepared = self._prepare(image, detect)
        if prepared.error is not None:
            raise InvalidImageError(prepared.source, prepared.error)
        prepared.probabilities = classify(
            prepared.crops, self.model, batch_size=self.batch_size, flip=self.flip
        )
        return self._result(prepared)

    def explain(
        self, image: ImageSource, *, label: str | None = None, detect: bool = True
    ) -> list[Explanation]:
        """Classify every face in one image and say where in each face the evidence for
        its class lies (a class activation map, see :mod:`fer8.pipeline.explain`).

        Example:
            >>> for item in predictor.explain("photo.jpg"):
            ...     print(item.face.label, item.heatmap.shape)

        Args:
            image: Anything :func:`fer8.load_image` reads.
            label: Explain this class for every face, instead of each face's own label.
            detect: As in :meth:`predict`.

        Returns:
            One :class:`~fer8.pipeline.explain.Explanation` per face, in the order
            :meth:`predict` gives the faces; each carries the face's result.

        Raises:
            InvalidImageError: The image cannot be read.
            ExplanationError: The model's head is not global average pooling and dense
                layers, so no exact map exists.
            ValueError: ``label`` is not one of the model's classes.
        """
        from fer8.pipeline.explain import check_label, class_maps, explanation

        check_label(label, self.labels)
        prepared = self._prepare(image, detect)
        if prepared.error is not None:
            raise InvalidImageError(prepared.source, prepared.error)
        probabilities, maps = class_maps(
            prepared.crops, self.model, batch_size=self.batch_size, flip=self.flip
        )
        return [
            explanation(
                self._face(box, crop, row, pose=pose),
                crop.matrix,
                cams,
                self.labels,
                label,
                crop.image.shape[0],
            )
            for box, crop, row, pose, cams in zip(
                prepared.boxes, prepared.crops, probabilities, prepared.poses, maps
            )
        ]

    def predict_many(
        self, images: Iterable[ImageSource], *, detect: bool = True
    ) -> Iterator[ImageResult]:
        """Classify many images, in order, batching faces across images for the model.

        An input that cannot be read gives a result with ``error`` set and the others
        go on. Images are prepared ahead in ``workers`` threads while the model runs
        (OpenCV, Pillow and ONNX Runtime release the GIL), and at most a few batches are
        held at once, so memory does not grow with the number of images.
        """
        prepared = prefetch(
            lambda s: self._prepare(s, detect), images, self._pool, self._look_ahead
        )
        for item in classified(prepared, self.model, batch_size=self.batch_size, flip=self.flip):
            yield self._result(item)

    def predict_video(
        self,
        source: VideoSource,
        *,
        fps: float | None = DEFAULT_FPS,
        every_frame: bool = False,
        smooth: float = DEFAULT_SMOOTHING,
        search_every: float = SEARCH_EVERY,
    ) -> Iterator[FrameResult]:
        """Classify every face of a video's sampled frames, following each face with a
        track id.

        Example:
            >>> for frame in predictor.predict_video("interview.mp4", fps=5):
            ...     print(frame.time, [(f.track, f.label) for f in frame.faces])

        Frames are decoded, searched and classified as they come, with faces of
        several frames batched for the network, so memory does not grow with the
        video's length (see :meth:`predict_frames`).

        Args:
            source: A video file, a stream URL or a camera index (see
                :func:`fer8.pipeline.video.read_frames`).
            fps: Frames analysed per second of video.
            every_frame: Analyse every frame.
            smooth: Average each track's probabilities over this many seconds (the
                frame and those before it); the label and confidence follow the
                average. 0 keeps each frame's own.
            search_every: Search a frame whole for faces at least this often (seconds
                of video), and in between only around the faces of the frame before
                (see :class:`~fer8.pipeline.detection.Follower`): a face that enters is
                found at most this late. 0 searches every frame whole.

        Returns:
            One :class:`~fer8.results.FrameResult` per sampled frame, in order. A video
            that cannot be opened gives one result with ``error`` set and ``frame``
            ``None``; one that breaks off gives the frames before the damage, then a
            result with ``error`` naming the first frame that could not be read.
        """
        name = describe_video(source)
        try:
            frames = read_frames(source, fps=fps, every_frame=every_frame)
        except InvalidVideoError as exc:
            return iter([FrameResult(name, (), exc.problem)])

        def results() -> Iterator[FrameResult]:
            try:
                yield from self.predict_frames(
                    frames, name, smooth=smooth, search_every=search_every
                )
            finally:  # also when the caller stops early: the file is released now
                frames.close()

        return results()

    def predict_frames(
        self,
        frames: Iterable[Frame],
        source: str,
        *,
        smooth: float = DEFAULT_SMOOTHING,
        search_every: float = SEARCH_EVERY,
    ) -> Iterator[FrameResult]:
        """:meth:`predict_video` for frames read elsewhere (a camera loop that also
        shows them, say): each :class:`~fer8.pipeline.video.Frame` gives one result.

        Frames are prepared (detect, landmarks, align) ahead in the ``workers``
        threads, and at most a few batches of them are in flight, each holding its face
        crops but not its pixels. An :class:`~fer8.errors.InvalidVideoError` from
        ``frames`` ends the results with one whose ``error`` is set. ``smooth`` and
        ``search_every`` are :meth:`predict_video`'s.
        """
        tracker, smoother = Tracker(), Smoother(smooth) if smooth > 0 else None
        follower = Follower(self.detector, self.detector_options, search_every)

        def found(frames: Iterable[Frame | InvalidVideoError]) -> Iterator[_Found]:
            """Each frame with its signature and face boxes, in order (the follower
            needs the frame before)."""
            before: FrameSignature | None = None
            for frame in frames:
                if isinstance(frame, InvalidVideoError):
                    yield frame
                    continue
                signature = frame_signature(frame.image)
                cut = before is not None and is_cut(before, signature)
                before = signature
                try:
                    boxes: list[Box] | None = follower.find(frame.image, frame.time, cut=cut)
                except Exception:  # searched again in prepare(), which reports it
                    boxes = None
                yield frame, signature, boxes

        def prepare(item: _Found) -> Prepared:
            if isinstance(item, InvalidVideoError):
                return Prepared(source, error=item.problem, frame=item.frame)
            frame, signature, boxes = item
            prepared = self._prepare(frame.image, detect=True, boxes=boxes)
            prepared.source, prepared.frame, prepared.time = source, frame.index, frame.time
            prepared.signature = signature
            prepared.picture = (frame.image.shape[1], frame.image.shape[0])
            return prepared

        # Frames are decoded and their faces found in a thread of their own, so that this
        # overlaps both the landmarks and alignment (in the pool) and the network (here):
        # FFmpeg, OpenCV, dlib and ONNX Runtime release the GIL.
        read = found(until_broken(frames))
        if self._pool is not None:
            read = read_ahead(read, READ_AHEAD)
        prepared = prefetch(prepare, read, self._pool, self._look_ahead)
        before: FrameSignature | None = None
        for item in classified(prepared, self.model, batch_size=self.batch_size, flip=self.flip):
            if item.error is not None:
                yield FrameResult(source, (), item.error, frame=item.frame, time=item.time)
                continue
            cut = (
                before is not None and item.signature is not None and is_cut(before, item.signature)
            )
            before = item.signature
            # Only aligned crops are compared: one framed from its box alone (landmarks
            # that did not fit) is framed differently, not another face.
            looks = [crop.image if crop.aligned else None for crop in item.crops]
            time = cast(float, item.time)  # a frame's, set in prepare()
            tracks = tracker.update(item.boxes, time, looks, picture=item.picture, cut=cut)
            rows = list(item.probabilities)
            if smoother is not None:
                rows = [smoother.update(track, time, row) for track, row in zip(tracks, rows)]
            faces = tuple(
                self._face(box, crop, row, TrackedFace, pose=pose, track=track)
                for box, crop, row, pose, track in zip(
                    item.boxes, item.crops, rows, item.poses, tracks
                )
            )
            yield FrameResult(source, faces, None, frame=item.frame, time=item.time)

    @property
    def _look_ahead(self) -> int:
        """Inputs prepared ahead of the classifier: enough to fill two batches."""
        return max(2, 2 * self.batch_size)

    def _prepare(
        self, source: ImageSource, detect: bool, boxes: list[Box] | None = None
    ) -> Prepared:
        """The CPU stages for one input; errors are recorded, never raised. ``boxes``:
        the faces when they were found already (a video's follower)."""
        name = describe_source(source)
        try:
            image = load_image(source, max_pixels=self.max_pixels)
            if detect:
                found = faces_in_photo(
                    image,
                    detector=self.detector,
                    detector_options=self.detector_options,
                    max_faces=self.max_faces,
                    landmark_model=self.landmark_model,
                    boxes=boxes,
                )
            else:
                found = [face_from_crop(image, landmark_model=self.landmark_model)]
        except InvalidImageError as exc:
            return Prepared(name, error=exc.problem)
        except Fer8Error as exc:
            return Prepared(name, error=str(exc))
        except Exception as exc:  # one unreadable input must not stop a folder run
            logger.debug("failed on %s", name, exc_info=True)
            # On one line: OpenCV's messages end with a newline, and results and the
            # CLI give one line per error.
            return Prepared(name, error=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        size = (image.shape[1], image.shape[0])
        # Pose here, in the preparing threads: solvePnP is a fraction of a millisecond.
        poses = [
            None if crop.landmarks is None else head_pose(crop.landmarks, size) for _, crop in found
        ]
        return Prepared(name, [box for box, _ in found], [crop for _, crop in found], poses=poses)

    def _result(self, prepared: Prepared) -> ImageResult:
        if prepared.error is not None:
            return ImageResult(prepared.source, (), prepared.error)
        faces: tuple[Face, ...] = tuple(
            self._face(box, crop, row, pose=pose)
            for box, crop, row, pose in zip(
                prepared.boxes, prepared.crops, prepared.probabilities, prepared.poses
            )
        )
        return ImageResult(prepared.source, faces, None)

    def _face(
        self,
        box: Box,
        crop: AlignedFace,
        row: NDArray[np.float32],
        kind: type[F] = Face,  # type: ignore[assignment]  # a TypeVar default: mypy#3737
        *,
        pose: HeadPose | None = None,
        **extra: Any,
    ) -> F:
        best = int(np.argmax(row))
        return kind(
            box=box,
            label=self.labels[best],
            confidence=float(row[best]),
            probabilities=dict(zip(self.labels, map(float, row))),
            landmarks=crop.landmarks,
            aligned=crop.aligned,
            pose=pose,
            **extra,
        )


#: A video frame with its signature and face boxes, or the error that ended the video.
_Found = Union[tuple[Frame, FrameSignature, list[Box] | None], InvalidVideoError]
