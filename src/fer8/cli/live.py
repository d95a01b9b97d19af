"""``fer8 live``: the webcam (or a video file or stream), results as they come, with
an optional window."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn

import click

from fer8.cli.common import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    command,
    fail,
    logger,
    result_writer,
    same_terminal,
)
from fer8.errors import InvalidVideoError
from fer8.options.commands import LiveOptions

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from fer8.results import FrameResult


@command(LiveOptions)
def live(options: LiveOptions) -> NoReturn:
    """Classify the faces of a camera's picture as it comes, following each face.

    Draws into a window where there is a display (q or Esc closes it), and prints a row
    per face per analysed frame otherwise, or when stdout is not a terminal. Ends with
    the video, the stream, or Ctrl-C.
    """
    from fer8.pipeline.live import LiveVideo, camera_source
    from fer8.pipeline.predictor import Predictor

    source = camera_source(options.camera)
    # Small batches: frames are read ahead by two batches, and on a camera each frame
    # read ahead is that much delay between the picture and its result.
    predictor = Predictor(
        options.model.name,
        max_faces=options.max_faces,
        batch_size=2,
        **options.detection.detector_kwargs(),
    )
    try:
        video = LiveVideo(predictor, source, **options.sampling)
    except InvalidVideoError as exc:
        # A camera index that opens nothing is a wrong argument, like a wrong --model.
        fail(exc, EXIT_USAGE if isinstance(source, int) else EXIT_INPUT_FAILED)
    show = _display_available() if options.window is None else options.window
    print_rows = not show or not sys.stdout.isatty()
    # As in predict: on a terminal that shows both streams, the table's row is the report.
    report_failures = not (print_rows and same_terminal())
    writer = result_writer(options.format, predictor.labels, [video.name], video=True)
    failed = False
    try:
        with video:
            for picture, result in video:
                if result.error is not None:
                    failed = True
                    if report_failures:
                        click.echo(f"fer8: {result.source}: {result.error}", err=True)
                if print_rows:
                    writer.write(result)
                if not show or picture is None:
                    continue
                if not _show(video.name, picture, result):
                    logger.warning("no window can be opened here; printing rows instead")
                    if not print_rows:
                        writer.write(result)
                    show, print_rows = False, True
                elif _closed():
                    break
    except KeyboardInterrupt:
        pass
    finally:
        writer.close()
    sys.exit(EXIT_INPUT_FAILED if failed else EXIT_OK)


def _display_available() -> bool:
    """Whether a window can be shown: on Linux and the BSDs only with an X11 or Wayland
    display (OpenCV's headless wheel, fer8's own, cannot show one anywhere; that shows
    when the first frame is drawn)."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _show(name: str, image: NDArray[np.uint8], result: FrameResult) -> bool:
    """Draw one frame's result in the window; False when no window can be shown."""
    import cv2

    try:
        cv2.imshow(f"fer8 live: {name}", cv2.cvtColor(result.plot(image), cv2.COLOR_RGB2BGR))
    except cv2.error:  # a headless OpenCV, or no display after all
        return False
    return True


def _closed() -> bool:
    """Whether q or Esc was pressed in the window (this also lets it redraw)."""
    import cv2

    return cv2.waitKey(1) & 0xFF in (ord("q"), 27)
