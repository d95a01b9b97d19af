"""``fer8 live``: the webcam (or a video file or stream), results as they come, with
an optional window."""

from __future__ import annotations

import os
import sys

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


@command(LiveOptions)
def live(options: LiveOptions) -> None:
    """Classify the faces of a camera's picture as it comes, following each face.

    Draws into a window where there is a display (q or Esc closes it), and prints a row
    per face per analysed frame otherwise, or when stdout is not a terminal. Ends with
    the video, the stream, or Ctrl-C.
    """
    from collections import deque

    from fer8.pipeline.predictor import Predictor
    from fer8.pipeline.video import describe_video, newest, read_frames

    camera, sampling = options.camera, options.sampling
    source: int | str = int(camera) if camera.isdigit() else camera
    # Small batches: frames are read ahead by two batches, and on a camera each frame
    # read ahead is that much delay between the picture and its result.
    predictor = Predictor(
        options.model.name,
        max_faces=options.max_faces,
        batch_size=2,
        **options.detection.detector_kwargs(),
    )
    try:
        frames = read_frames(source, fps=sampling.fps, every_frame=sampling.every_frame)
    except InvalidVideoError as exc:
        # A camera index that opens nothing is a wrong argument, like a wrong --model.
        fail(exc, EXIT_USAGE if isinstance(source, int) else EXIT_INPUT_FAILED)
    name = describe_video(source)
    show = _display_available() if options.window is None else options.window
    print_rows = not show or not sys.stdout.isatty()
    # As in predict: on a terminal that shows both streams, the table's row is the report.
    report_failures = not (print_rows and same_terminal())
    writer = result_writer(options.format, predictor.labels, [name], video=True)
    waiting: deque = deque()  # frames read, until their results come, to draw them

    def remember(frames):
        for frame in frames:
            if show:
                waiting.append(frame)
            yield frame

    # A camera or a stream goes on at its own pace: when the analysis is slower, the
    # frames that came meanwhile are dropped, so each result is of the latest picture
    # rather than of one that waited in a growing queue. A file's frames are all taken.
    live_source = isinstance(source, int) or "://" in source
    dropping = newest(frames) if live_source else None
    failed = False
    try:
        for result in predictor.predict_frames(
            remember(dropping or frames), name, smooth=sampling.smooth
        ):
            if result.error is not None:
                failed = True
                if report_failures:
                    click.echo(f"fer8: {result.source}: {result.error}", err=True)
            if print_rows:
                writer.write(result)
            while show and waiting and waiting[0].index != result.frame:
                waiting.popleft()
            if show and waiting:
                if not _show(name, waiting.popleft().image, result):
                    logger.warning("no window can be opened here; printing rows instead")
                    if not print_rows:
                        writer.write(result)
                    show, print_rows = False, True
                    waiting.clear()
                elif _closed():
                    break
    except KeyboardInterrupt:
        pass
    finally:
        if dropping is not None:
            dropping.close()  # stops its reading thread before the video is released
        frames.close()
        writer.close()
    sys.exit(EXIT_INPUT_FAILED if failed else EXIT_OK)


def _display_available() -> bool:
    """Whether a window can be shown: on Linux and the BSDs only with an X11 or Wayland
    display (OpenCV's headless wheel, fer8's own, cannot show one anywhere; that shows
    when the first frame is drawn)."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _show(name: str, image, result) -> bool:
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
