"""Pictures of results, for every front end: a photo with its faces' boxes and labels, the
same with each face's heatmap under them, a video with every frame annotated and its
timeline, and the names these pictures are written under.

``fer8 predict --annotate/--explain``, ``fer8 serve`` (``annotate=true``) and ``fer8 live``
all draw through this module, as a script can::

    result = predictor.predict("photo.jpg")
    result.save("photo.annotated.jpg")        # fer8.drawing.save(result, ...)
    picture = result.plot()                   # the RGB array, to show or draw on

Results carry no pixels (which keeps memory flat while a folder streams through), so
the photo is read again from the result's ``source`` unless it is given: a path, bytes,
a file object or the RGB array the result came from. The stages that draw are
:func:`fer8.pipeline.annotate.annotate` (boxes and labels) and
:func:`fer8.pipeline.explain.overlay` (heatmaps); this module puts them together.
Importing it imports neither OpenCV nor Pillow.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

import numpy as np
from numpy.typing import NDArray

from fer8.pipeline.images import MAX_PIXELS, ImageSource, is_url
from fer8.results import ExplainedResult, FrameResult, ImageResult

if TYPE_CHECKING:
    from fer8.pipeline.annotate import AnnotatedVideo

logger = logging.getLogger(__name__)

#: In a folder of pictures (``fer8 predict --annotate``): which input each came from.
INDEX = "sources.csv"
#: JPEG quality of :func:`to_jpeg` (what ``fer8 serve`` returns for ``annotate=true``).
JPEG_QUALITY = 90


def plot(
    result: ImageResult | ExplainedResult,
    image: ImageSource | None = None,
    *,
    landmarks: bool = False,
    max_pixels: int | None = None,
) -> NDArray[np.uint8]:
    """The photo with every face's box, label and confidence drawn, over each face's
    heatmap when ``result`` is an :class:`~fer8.results.ExplainedResult`.

    Args:
        result: What :meth:`fer8.Predictor.predict` (or ``explain``) found in the photo.
        image: The photo, as anything :func:`fer8.load_image` reads; ``None`` reads it
            from ``result.source`` (a video frame's must be given).
        landmarks: Draw each face's 68 landmarks too.
        max_pixels: Refuse a larger photo when it is read again (default
            :data:`fer8.pipeline.images.MAX_PIXELS`).

    Returns:
        An RGB ``uint8`` array: the photo's size, or enlarged when it is small (below
        320 pixels a side) so that the labels stay legible.

    Raises:
        InvalidImageError: The photo cannot be read.
    """
    from fer8.pipeline.annotate import annotate

    pixels = _pixels(result, image, max_pixels)
    if isinstance(result, ExplainedResult):
        from fer8.pipeline.explain import overlay

        return annotate(overlay(pixels, result.explanations), result.result, landmarks=landmarks)
    return annotate(pixels, result, landmarks=landmarks)


def save(
    result: ImageResult | ExplainedResult,
    path: str | os.PathLike,
    image: ImageSource | None = None,
    *,
    landmarks: bool = False,
    max_pixels: int | None = None,
) -> Path:
    """Write :func:`plot`'s picture to ``path`` (its folders made), in the format its
    extension names (JPEG at quality 92). Returns the path."""
    from fer8.pipeline.annotate import save_image

    return save_image(plot(result, image, landmarks=landmarks, max_pixels=max_pixels), path)


def to_jpeg(
    result: ImageResult | ExplainedResult,
    image: ImageSource | None = None,
    *,
    max_pixels: int | None = None,
    quality: int = JPEG_QUALITY,
) -> bytes:
    """:func:`plot`'s picture as JPEG bytes (what ``fer8 serve`` answers ``annotate=true``
    with)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(plot(result, image, max_pixels=max_pixels)).save(
        buffer, "JPEG", quality=quality
    )
    return buffer.getvalue()


def _pixels(
    result: ImageResult | ExplainedResult, image: ImageSource | None, max_pixels: int | None
) -> NDArray[np.uint8]:
    from fer8.pipeline.images import load_image

    if image is None:
        image = (result.result if isinstance(result, ExplainedResult) else result).source
    if isinstance(image, io.IOBase) and image.seekable():
        image.seek(0)  # already read once, to predict
    return load_image(image, max_pixels=MAX_PIXELS if max_pixels is None else max_pixels)


class VideoAnnotation:
    """A video's pictures, drawn from its frame results as they come: the video with
    every frame annotated (``path``, MPEG-4) and each track's probabilities over time
    (:func:`timeline_name`, PNG).

    The video is read a second time alongside the analysis, a frame at a time, so
    memory does not grow with its length (:class:`fer8.pipeline.annotate.AnnotatedVideo`).

    Args:
        source: The video the results are of.
        path: The ``.mp4`` file to write.
        labels: The model's labels, in order (the timeline's classes).
    """

    def __init__(
        self, source: str | os.PathLike, path: str | os.PathLike, labels: Sequence[str]
    ) -> None:
        from fer8.pipeline.timeline import Timeline

        self.source = os.fspath(source)
        self.path = Path(path)
        self.timeline_path = self.path.with_name(timeline_name(self.path.name))
        self._timeline = Timeline(labels)
        self._video: AnnotatedVideo | None = None

    def add(self, result: FrameResult) -> None:
        """Draw one sampled frame's result (results come in frame order)."""
        from fer8.pipeline.annotate import AnnotatedVideo

        if result.error is not None and result.frame is None:
            return  # not a video at all: nothing to draw on
        if self._video is None:
            self._video = AnnotatedVideo(self.source, self.path)
        self._video.add(result)
        self._timeline.add(result)

    def close(self) -> tuple[Path, ...]:
        """Finish both files. Returns the files written: none when no frame could be
        read (nothing to show), else the video and its timeline."""
        if self._video is None:
            return ()
        self._video.close()
        if self._video.frames_written == 0:
            self.path.unlink(missing_ok=True)
            return ()
        self._timeline.plot(self.timeline_path, title=os.path.basename(self.source))
        logger.info("annotated %s -> %s, %s", self.source, self.path, self.timeline_path)
        return self.path, self.timeline_path


def annotate_video(
    source: str | os.PathLike,
    results: Iterable[FrameResult],
    path: str | os.PathLike,
    labels: Sequence[str],
) -> tuple[Path, ...]:
    """Write the annotated copy of a video and its timeline from its frame results (see
    :class:`VideoAnnotation`, which takes them one at a time). Returns the files written.
    """
    annotation = VideoAnnotation(source, path, labels)
    for result in results:
        annotation.add(result)
    return annotation.close()


# --- where the pictures go -----------------------------------------------------------


def timeline_name(video_name: str) -> str:
    """The timeline picture's name beside an annotated video: ``a/clip.timeline.png``."""
    return str(Path(video_name).with_suffix(".timeline.png"))


class PictureNames:
    """The names of the pictures drawn from a run's inputs, inside a folder of pictures.

    A picture keeps its input's folders, relative to the deepest folder that holds
    every input (one folder given: that folder), so ``a/IMG_1.jpg`` and ``b/IMG_1.jpg``
    stay apart; a name that still repeats (the same file given twice) gets ``-2``,
    ``-3`` before its extension, compared case-insensitively as some file systems do.
    An annotated video is ``NAME.mp4``. Explanation pictures are named the same way from
    the names without their extensions, so ``a.jpg`` and ``a.png`` give
    ``a.explain.png`` and ``a-2.explain.png``.

    Args:
        paths: The inputs as given: files, folders, ``-`` (stdin) or http(s) URLs.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        folders = [
            os.path.abspath(arg if os.path.isdir(arg) else os.path.dirname(arg) or ".")
            for arg in paths
            if arg != "-" and not is_url(arg)
        ]
        self.base = os.path.commonpath(folders) if folders else os.getcwd()
        self._annotated: set[str] = set()
        self._explained: set[str] = set()

    def of(self, source: str | os.PathLike, *, video: bool = False) -> tuple[str, str]:
        """An input's annotated picture's name and its explanation picture's name.

        Args:
            source: ``-`` (stdin), an http(s) URL, or a file found under the paths.
            video: The file is a video (annotated as ``.mp4``).
        """
        if source == "-":
            name = "stdin.png"
        elif is_url(source):
            name = os.path.basename(unquote(urlparse(str(source)).path)) or "download.png"
        else:
            name = os.path.relpath(os.path.abspath(source), self.base)
        annotated = str(Path(name).with_suffix(".mp4")) if video else name
        explained = unique_name(str(Path(name).with_suffix("")), self._explained) + ".explain.png"
        return unique_name(annotated, self._annotated), explained


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name`` with ``-2``, ``-3``... before its extension if ``taken`` holds
    it (lower-cased); the name returned is added to ``taken``."""
    stem, suffix = os.path.splitext(name)
    candidate, number = name, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{stem}-{number}{suffix}"
    taken.add(candidate.lower())
    return candidate


def drawn_over(folder: str | os.PathLike, pictures: Mapping[str, object]) -> object | None:
    """The first input that a picture written into ``folder`` would replace, or None.

    Args:
        folder: Where the pictures go.
        pictures: Each picture's name in ``folder`` -> its input (a path, or anything
            else for an input that is no file: stdin, a URL).
    """
    written = {os.path.abspath(os.path.join(folder, name)) for name in pictures}
    for source in pictures.values():
        if (
            isinstance(source, str)
            and os.path.exists(source)
            and os.path.abspath(source) in written
        ):
            return source
    return None


def write_index(folder: str | os.PathLike, pictures: Mapping[str, str]) -> Path:
    """Write (or update) ``sources.csv`` in a folder of pictures: which input each came
    from. Rows of an earlier run stay while their pictures do.

    Args:
        folder: The folder of pictures.
        pictures: Each new picture's name in ``folder`` -> its input's name.

    Returns:
        The index's path.
    """
    folder = Path(folder)
    index = folder / INDEX
    rows: dict[str, str] = {}
    if index.is_file():
        with open(index, newline="") as handle:
            rows = {
                row["annotated"]: row["source"]
                for row in csv.DictReader(handle)
                if (folder / row.get("annotated", "")).is_file()
            }
    rows.update(pictures)
    with open(index, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["annotated", "source"])
        writer.writerows(sorted(rows.items()))
    logger.info(
        "wrote %d annotated pictures to %s; %s says where each came from",
        len(pictures),
        folder,
        index,
    )
    return index
