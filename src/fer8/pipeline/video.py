"""Reading videos: files, streams and cameras become sampled RGB frames with their times.

This is the video counterpart of :mod:`fer8.pipeline.images`, and the only place where
video is decoded (OpenCV's ``VideoCapture``, on its FFmpeg backend). Frames are read one
at a time and never held, so memory does not depend on a video's length.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union

import numpy as np
from numpy.typing import NDArray

from fer8.errors import InvalidVideoError

logger = logging.getLogger(__name__)

T = TypeVar("T")
_NONE = object()  # newest(): no frame waiting

#: What :func:`read_frames` accepts: a file path, a stream URL, or a camera's index.
VideoSource = Union[str, os.PathLike, int]

#: Frames analysed per second of video by default (``fer8 predict --fps``): expressions
#: change over a few tenths of a second, and every frame of a 30 fps video would cost six
#: times the work for little more information.
DEFAULT_FPS = 5.0

#: File extensions that folder walks treat as videos.
VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".avi",
        ".mkv",
        ".webm",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".3gp",
        ".ogv",
        ".ts",
        ".mts",
        ".m2ts",
    }
)

#: :func:`is_cut`: two frames are of different shots when their grey levels' histograms
#: differ by more than this (total variation: half the summed absolute difference, 0 for
#: equal histograms, 1 for disjoint ones) ...
CUT_HISTOGRAM = 0.3
#: ... and their thumbnails' correlation is below this. Each alone is not enough: a light
#: switched on shifts the histogram but keeps the picture; a camera pan moves the picture
#: but keeps the histogram. Measured (histogram, correlation): the two example portraits
#: cut one to the other 0.52, 0.22; one face in front of a new background 0.79, 0.62; a
#: 40-pixel pan 0.05, 0.43; a zoom 0.09, 0.52; the light halved 0.56, 1.0.
CUT_CORRELATION = 0.8

#: The first bytes of the containers FFmpeg reads that have a signature: (offset, bytes).
_SIGNATURES = (
    (4, b"ftyp"),  # MP4, MOV, M4V, 3GP
    (0, b"\x1aE\xdf\xa3"),  # Matroska, WebM
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"\x00\x00\x01\xb3"),  # MPEG-1/2 video
    (0, b"\x30\x26\xb2\x75"),  # ASF, WMV
    (0, b"OggS"),
)


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: Its index in the video, 0 for the first.
        time: Seconds from the start.
        image: RGB ``uint8`` (H, W, 3), like every image inside fer8.
    """

    index: int
    time: float
    image: NDArray[np.uint8]


@dataclass(frozen=True)
class FrameSignature:
    """A frame in a few hundred numbers, to tell a scene cut from motion (:func:`is_cut`).

    Attributes:
        histogram: 32 bins of grey level, summing to 1.
        thumbnail: The frame in grey at 32x18, less its mean, of unit norm.
    """

    histogram: NDArray[np.float32]
    thumbnail: NDArray[np.float32]


def frame_signature(image: NDArray[np.uint8]) -> FrameSignature:
    """The :class:`FrameSignature` of an RGB frame (about a millisecond for 1280x720)."""
    import cv2

    small = cv2.resize(image, (128, 72), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    histogram = np.bincount(gray.ravel() // 8, minlength=32).astype(np.float32)
    thumbnail = cv2.resize(gray, (32, 18), interpolation=cv2.INTER_AREA).astype(np.float32)
    thumbnail = thumbnail.ravel() - thumbnail.mean()
    norm = float(np.linalg.norm(thumbnail))
    return FrameSignature(
        histogram / histogram.sum(), thumbnail / norm if norm > 1e-3 else thumbnail
    )


def is_cut(before: FrameSignature, after: FrameSignature) -> bool:
    """Whether ``after`` starts a new shot: the picture changed as a whole, both in its
    grey levels and in where they are (see :data:`CUT_HISTOGRAM`, :data:`CUT_CORRELATION`).
    A plain frame (one colour) has no pattern to correlate, so only its histogram counts."""
    changed = 0.5 * float(np.abs(before.histogram - after.histogram).sum()) > CUT_HISTOGRAM
    correlation = float(before.thumbnail @ after.thumbnail)
    plain = not before.thumbnail.any() or not after.thumbnail.any()
    return changed and (plain or correlation < CUT_CORRELATION)


def describe_video(source: VideoSource) -> str:
    """A short name for a video source, used in results and messages."""
    return f"camera {source}" if isinstance(source, int) else os.fspath(source)


def looks_like_video(head: bytes) -> bool:
    """Whether a file's first bytes (16 are enough) are those of a video container."""
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return True
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _SIGNATURES)


def is_video(path: str | os.PathLike) -> bool:
    """Whether a file is a video: by its extension, or else by its first bytes (a file
    with no extension, an upload)."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as handle:
            return looks_like_video(handle.read(16))
    except OSError:
        return False


def read_frames(
    source: VideoSource,
    *,
    fps: float | None = DEFAULT_FPS,
    every_frame: bool = False,
) -> VideoFrames:
    """Decode a video's frames, keeping about ``fps`` per second of video.

    The video is opened when this is called, so a file that is not a video fails here
    rather than at the first frame.

    Args:
        source: A video file, a stream URL (anything FFmpeg opens) or a camera index.
        fps: Frames kept per second of video; every frame when the video has fewer.
            The first frame is always kept, then the first frame at or after each
            further ``1 / fps`` seconds.
        every_frame: Keep every frame (``fps`` is then ignored).

    Returns:
        An iterator of :class:`Frame`, in order. Skipped frames are only grabbed, not
        converted. Closing the iterator releases the video.

    Raises:
        InvalidVideoError: Here when the source cannot be opened as a video; from the
            iterator, after the frames before the damage, when a file breaks off before
            the number of frames its header declares (truncated or corrupt).
        ValueError: ``fps`` is not above 0.
    """
    if not every_frame and (fps is None or not fps > 0):
        raise ValueError(f"fps must be above 0, got {fps}")
    name = describe_video(source)
    return VideoFrames(
        _open(source, name), name, None if every_frame else fps, live=isinstance(source, int)
    )


def sampled_count(
    path: str | os.PathLike, *, fps: float | None = DEFAULT_FPS, every_frame: bool = False
) -> int | None:
    """About how many frames :func:`read_frames` will give for a video file, from the
    frame count and rate its header declares (for a progress bar); None when it does
    not say or cannot be opened."""
    import cv2

    try:
        capture = _open(path, describe_video(path))
    except InvalidVideoError:
        return None
    try:
        count, rate = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    if not (math.isfinite(count) and count > 0):
        return None
    if every_frame or fps is None or not (math.isfinite(rate) and rate > fps):
        return int(count)
    # Frame i (at i / rate s) is kept when it is the first at or after a multiple of 1/fps.
    return math.ceil(count * fps / rate)


class VideoFrames(Iterator[Frame]):
    """The iterator :func:`read_frames` returns; ``rate`` is the video's own frame rate
    (frames per second, 0 when it does not say)."""

    def __init__(self, capture, name: str, fps: float | None, *, live: bool) -> None:
        import cv2

        rate = capture.get(cv2.CAP_PROP_FPS)
        self.rate = rate if math.isfinite(rate) and rate > 0 else 0.0
        self._frames = _frames(capture, name, fps, self.rate, live=live)

    def __next__(self) -> Frame:
        return next(self._frames)

    def close(self) -> None:
        """Release the video (also done when the frames run out)."""
        self._frames.close()


def newest(frames: Iterable[T]) -> Generator[T, None, None]:
    """``frames`` read as fast as they come, in a thread, giving each time the newest one
    and dropping those that came before it: a live camera's frames, taken by a consumer
    slower than the camera, are then always the camera's latest picture rather than one
    that waited in a queue, falling further behind (``fer8 live``).

    An error from ``frames`` is raised after the frame before it; stopping early stops
    the reading thread (at its next frame).
    """
    import threading

    changed = threading.Condition()
    state: dict[str, Any] = {"frame": _NONE, "error": None, "ended": False, "stop": False}

    def read() -> None:
        try:
            for frame in frames:
                with changed:
                    if state["stop"]:
                        return
                    state["frame"] = frame
                    changed.notify()
        except BaseException as exc:  # handed over to the caller's thread
            with changed:
                state["error"] = exc
        with changed:
            state["ended"] = True
            changed.notify()

    thread = threading.Thread(target=read, name="fer8-newest", daemon=True)
    thread.start()
    try:
        while True:
            with changed:
                changed.wait_for(lambda: state["frame"] is not _NONE or state["ended"])
                frame, state["frame"] = state["frame"], _NONE
                error, ended = state["error"], state["ended"]
            if frame is not _NONE:
                yield frame
            elif error is not None:
                raise error
            elif ended:
                return
    finally:
        with changed:
            state["stop"] = True
        thread.join()


def _open(source: VideoSource, name: str):
    import cv2

    # FFmpeg writes its complaints about damaged files ("moov atom not found") straight
    # to file descriptor 2, which would break fer8's one line per bad file. OpenCV reads
    # these when its first capture opens; a user's own settings are kept.
    os.environ.setdefault("OPENCV_FFMPEG_DEBUG", "1")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if not isinstance(source, int) and "://" not in os.fspath(source):
        path = Path(source)
        if not path.exists():
            raise InvalidVideoError(name, "no such file")
        if path.is_dir():
            raise InvalidVideoError(name, "is a directory, not a video file")
    # OpenCV's own warning for a file it cannot open would be a second line too.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        capture = (
            cv2.VideoCapture(source)
            if isinstance(source, int)
            else cv2.VideoCapture(os.fspath(source), cv2.CAP_FFMPEG)
        )
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not capture.isOpened():
        capture.release()
        what = (
            _camera_tried(source)
            if isinstance(source, int)
            else ("not a video, or not one FFmpeg can read (corrupt or truncated?)")
        )
        raise InvalidVideoError(name, what)
    return capture


def _camera_tried(index: int) -> str:
    """Why a camera index did not open, naming the device tried and those there are
    (on Linux, OpenCV opens camera N as ``/dev/videoN``)."""
    if not sys.platform.startswith("linux"):
        return "cannot be opened (tried it through OpenCV's default backend)"
    found = sorted(
        Path("/dev").glob("video*"), key=lambda p: (len(p.name), p.name)
    )  # video2 before video10
    return (
        f"cannot be opened (tried /dev/video{index}; video devices here: "
        f"{', '.join(map(str, found)) or 'none'})"
    )


def _frames(
    capture, name: str, fps: float | None, rate: float, *, live: bool
) -> Generator[Frame, None, None]:
    import cv2

    # Cameras and some streams report no frame rate; their frames are then timed by
    # the clock, as they arrive.
    timed_by_clock = live or rate == 0
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)  # negative or NaN when it cannot tell
    declared = int(count) if math.isfinite(count) and not timed_by_clock else 0
    started = time.monotonic()
    next_time = 0.0
    index = -1
    try:
        while True:
            if not capture.grab():
                break
            index += 1
            seconds = time.monotonic() - started if timed_by_clock else index / rate
            # A small tolerance: frame times are multiples of 1/rate, and 0.6 - 0.2 * 3
            # is not quite 0 in floating point.
            if fps is not None and seconds + 1e-6 < next_time:
                continue
            ok, bgr = capture.retrieve()
            if not ok:
                raise InvalidVideoError(name, f"frame {index} cannot be decoded", index)
            if fps is not None:
                next_time = (math.floor(seconds * fps + 1e-6) + 1) / fps
            yield Frame(index, seconds, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if index < 0:
        raise InvalidVideoError(name, "no frame could be read (an empty or damaged video)", 0)
    # A declared count of 0 or less: a stream or a container that does not say. Some
    # containers only estimate it (duration times rate), so a frame or so short is
    # not damage.
    if 0 < declared and declared - (index + 1) > max(1, declared // 100):
        raise InvalidVideoError(
            name,
            f"corrupt or truncated video: no frame could be read from frame "
            f"{index + 1} on (the file declares {declared})",
            index + 1,
        )
    logger.debug("%s: %d frames read", name, index + 1)


def until_broken(frames: Iterable[Frame]) -> Iterator[Frame | InvalidVideoError]:
    """The frames, then the error that ended them, if any, as a last item: raised inside
    :func:`~fer8.pipeline.prefetch.prefetch` it would drop the frames already read but
    not yet classified."""
    try:
        yield from frames
    except InvalidVideoError as exc:
        yield exc
