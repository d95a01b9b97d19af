"""Drawing results on images: a box per face and its label with the confidence (and, in
a video, the face's track id)."""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.labels import EXPRESSIONS, display_name, percent
from fer8.results import ImageResult

# Text on photos smaller than this (shorter side) would be a few unreadable pixels high,
# so small images (FER2013's 48x48 crops) are enlarged before drawing.
_MIN_CANVAS = 320


#: Okabe & Ito's palette ("Color Universal Design", 2002), which stays apart for readers
#: with any common colour-vision deficiency, plus a dark grey; hues spaced evenly around
#: the colour wheel put fearful and happy in two near-identical greens.
_COLORS = {
    "angry": (213, 94, 0),  # vermillion
    "disgusted": (0, 158, 115),  # bluish green
    "fearful": (204, 121, 167),  # reddish purple
    "happy": (230, 159, 0),  # orange
    "neutral": (90, 90, 90),  # dark grey
    "sad": (0, 114, 178),  # blue
    "surprised": (86, 180, 233),  # sky blue
    "worry": (240, 228, 66),  # yellow
}


def label_color(label: str) -> tuple[int, int, int]:
    """A fixed, distinct RGB colour per expression (stable across images and runs)."""
    if label in _COLORS:
        return _COLORS[label]
    index = EXPRESSIONS.index(label) if label in EXPRESSIONS else sum(map(ord, label))
    r, g, b = colorsys.hsv_to_rgb((index * 0.13) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def annotate(
    image: NDArray[np.uint8], result: ImageResult, *, landmarks: bool = False
) -> NDArray[np.uint8]:
    """Return a copy of ``image`` (RGB) with every face's box, label and confidence drawn.

    Line width and text size follow the image size, so labels stay legible on a
    thumbnail and on a 24-megapixel photo alike. With ``landmarks``, each face's 68
    points are drawn too, as dots in the face's colour.
    """
    import cv2

    zoom = max(1.0, _MIN_CANVAS / min(image.shape[:2]))
    canvas = (
        image.copy()
        if zoom == 1.0
        else cv2.resize(image, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
    )
    height, width = canvas.shape[:2]
    unit = max(height, width) / 1000.0
    thickness = max(2, int(round(3 * unit)))
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.5, 0.9 * unit)
    text_thickness = max(1, int(round(2 * unit)))
    for face in result.faces:
        x, y, w, h = (int(round(v * zoom)) for v in face.box.to_list())
        color = label_color(face.label)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), color, thickness, cv2.LINE_AA)
        if landmarks and face.aligned and face.landmarks is not None:
            radius = max(1, int(round(w / 120)))
            for px, py in np.asarray(face.landmarks, np.float64) * zoom:
                cv2.circle(
                    canvas, (int(round(px)), int(round(py))), radius, color, cv2.FILLED, cv2.LINE_AA
                )
        text = f"{display_name(face.label)} {percent(face.confidence)}"
        track = getattr(face, "track", None)  # a video's faces carry their track id
        if track is not None:
            text = f"#{track} {text}"
        (tw, th), baseline = cv2.getTextSize(text, font, font_scale, text_thickness)
        pad = max(2, th // 4)
        top = y - th - baseline - 2 * pad
        if top < 0:  # no room above the box: put the label inside its top edge
            top = y
        left = min(max(0, x - thickness // 2), max(0, width - tw - 2 * pad))
        cv2.rectangle(
            canvas,
            (left, top),
            (left + tw + 2 * pad, top + th + baseline + 2 * pad),
            color,
            cv2.FILLED,
        )
        cv2.putText(
            canvas,
            text,
            (left + pad, top + pad + th),
            font,
            font_scale,
            _text_color(color),
            text_thickness,
            cv2.LINE_AA,
        )
    if not result.faces and getattr(result, "frame", None) is None:
        # A photo drawn as it was would look like one fer8 never read; a video's frames
        # without a face stay plain, or the note would flicker through the clip.
        (tw, th), baseline = cv2.getTextSize("no face found", font, font_scale, text_thickness)
        pad = max(4, th // 2)
        cv2.rectangle(
            canvas, (0, 0), (tw + 2 * pad, th + baseline + 2 * pad), (40, 40, 40), cv2.FILLED
        )
        cv2.putText(
            canvas,
            "no face found",
            (pad, pad + th),
            font,
            font_scale,
            (255, 255, 255),
            text_thickness,
            cv2.LINE_AA,
        )
    return canvas


def save_image(image: NDArray[np.uint8], path: str | os.PathLike) -> Path:
    """Save an RGB image; the format follows the extension (JPEG quality 92)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"quality": 92} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(image).save(path, **options)
    return path


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


class AnnotatedVideo:
    """Writes a video back with each sampled frame's result drawn, as MPEG-4 (``mp4v``).

    Every frame of the input is written, at its frame rate: a frame between two sampled
    ones shows the boxes of the sampled frame before it, so the output is as long as the
    input and plays at its speed. The input is read a second time, alongside the
    analysis, a frame at a time, so memory does not grow with the video's length.

    Args:
        source: The video the results are of.
        path: The ``.mp4`` file to write.
    """

    def __init__(self, source: str | os.PathLike, path: str | os.PathLike) -> None:
        from fer8.pipeline.video import read_frames

        self.path = Path(path)
        self._frames = read_frames(source, every_frame=True)
        self.result_writer: Any = None  # a cv2.VideoWriter, opened at the first frame
        self._last: ImageResult | None = None
        self.frames_written = 0

    def add(self, result: ImageResult) -> None:
        """Draw the frames up to this result's frame with the previous result, then keep
        this one (results come in frame order)."""
        frame = getattr(result, "frame", None)
        if frame is None or result.error is not None:
            return
        self._write_until(frame)
        self._last = result

    def close(self) -> Path:
        """Write the frames after the last result and finish the file."""
        self._write_until(None)
        self._frames.close()
        if self.result_writer is not None:
            self.result_writer.release()
        return self.path

    def _write_until(self, stop: int | None) -> None:
        import cv2

        from fer8.errors import InvalidVideoError

        while stop is None or self.frames_written < stop:
            try:
                frame = next(self._frames)
            except (StopIteration, InvalidVideoError):  # the damage is reported elsewhere
                return
            image = frame.image if self._last is None else annotate(frame.image, self._last)
            if image.shape != frame.image.shape:  # a small video, enlarged to draw on
                image = cv2.resize(image, frame.image.shape[1::-1], interpolation=cv2.INTER_AREA)
            if self.result_writer is None:
                self.result_writer = self._open(frame.image.shape, self._frames.rate or 25.0)
            self.result_writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            self.frames_written += 1

    def _open(self, shape: tuple[int, ...], rate: float):
        import cv2

        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(
            str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), rate, (shape[1], shape[0])
        )
        if not writer.isOpened():
            raise OSError(f"{self.path}: cannot write an mp4 video here")
        return writer
