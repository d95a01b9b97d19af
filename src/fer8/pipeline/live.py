"""A camera, a stream or a video file followed as it comes (``fer8 live``): each analysed
frame's picture together with its result, so that a front end can draw the one on the
other (:meth:`fer8.results.FrameResult.plot`).

A camera or a stream goes on at its own pace: when the analysis is slower, the frames
that came meanwhile are dropped (:func:`fer8.pipeline.video.newest`), so each result is
of the latest picture rather than of one that waited in a growing queue. A file's
frames are all taken.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fer8.pipeline.tracking import DEFAULT_SMOOTHING
from fer8.pipeline.video import DEFAULT_FPS, Frame, describe_video, newest, read_frames
from fer8.results import FrameResult

if TYPE_CHECKING:
    from fer8.pipeline.predictor import Predictor


def camera_source(text: str) -> int | str:
    """What ``--camera`` names: a camera's index (``"0"``) as an int; a video file or a
    stream URL as given."""
    return int(text) if text.isdigit() else text


class LiveVideo:
    """The frames of a camera, stream or file, classified as they come.

    Example:
        >>> with LiveVideo(predictor, 0, fps=5) as video:
        ...     for picture, result in video:
        ...         show(result.plot(picture))

    Args:
        predictor: Classifies the faces; small batches keep the delay between a
            camera's picture and its result short.
        source: A camera index, a video file or a stream URL
            (:func:`fer8.pipeline.video.read_frames`).
        fps: Frames analysed per second.
        every_frame: Analyse every frame.
        smooth: Seconds over which each face's probabilities are averaged.

    Raises:
        InvalidVideoError: The source cannot be opened.
    """

    def __init__(
        self,
        predictor: Predictor,
        source: int | str,
        *,
        fps: float | None = DEFAULT_FPS,
        every_frame: bool = False,
        smooth: float = DEFAULT_SMOOTHING,
    ) -> None:
        self.name = describe_video(source)
        self._predictor, self._smooth = predictor, smooth
        self._frames = read_frames(source, fps=fps, every_frame=every_frame)
        live = isinstance(source, int) or "://" in source
        self._dropping = newest(self._frames) if live else None

    def __iter__(self) -> Iterator[tuple[NDArray[np.uint8] | None, FrameResult]]:
        """(the frame's RGB picture, its result) per analysed frame; the picture is None
        for a result that no frame gave (the source breaking off)."""
        waiting: deque[Frame] = deque()  # frames read, until their results come

        def remember(frames: Iterable[Frame]) -> Iterator[Frame]:
            for frame in frames:
                waiting.append(frame)
                yield frame

        results = self._predictor.predict_frames(
            remember(self._dropping or self._frames), self.name, smooth=self._smooth
        )
        for result in results:
            while waiting and waiting[0].index != result.frame:
                waiting.popleft()
            yield (waiting.popleft().image if waiting else None), result

    def close(self) -> None:
        """Stop reading and release the camera or file."""
        if self._dropping is not None:
            self._dropping.close()  # stops its reading thread before the video is released
        self._frames.close()

    def __enter__(self) -> LiveVideo:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
