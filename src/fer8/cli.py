"""The ``fer8`` command: argument parsing and output only; the work is the library's.

Results go to stdout and everything else (errors, logs, progress) to stderr, so
``fer8 predict *.jpg --format jsonl > out.jsonl`` gives a clean file.
Exit codes: 0 every input read, 1 some input failed, 2 usage or model errors.
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fer8 import __version__
from fer8.errors import (
    ChecksumMismatchError,
    Fer8Error,
    InvalidVideoError,
    ModelFormatError,
    ModelNotFoundError,
)
from fer8.output import FORMATS, to_json
from fer8.pipeline.images import MAX_PIXELS
from fer8.progress import ProgressBar

logger = logging.getLogger("fer8")

EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE = 0, 1, 2
#: In an --annotate folder: which input each annotated picture came from.
ANNOTATION_INDEX = "sources.csv"

# Test-time mirror averaging, shared by `predict` and `evaluate` (see fer8.classify).
_flip_option = click.option(
    "--flip", is_flag=True,
    help="Also classify each face mirrored and average: slightly more accurate, "
         "twice the network's work.")


def _detector_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--detector and the detection settings a user needs, for every command that
    finds faces; the command receives them as one ``detection`` dict argument
    (``{"detector": name, "detector_options": {...}}``)."""
    from fer8.pipeline.detection import DEFAULT_DETECTOR, DETECTORS

    @functools.wraps(command)
    def wrapper(*args: Any, detector: str, min_face: int | None, detect_threshold: float | None,
                haar_scale_factor: float | None, haar_min_neighbors: int | None,
                **kwargs: Any) -> Any:
        from fer8.pipeline.detection import detector_options

        try:
            options = detector_options(detector, min_face=min_face, threshold=detect_threshold,
                                       scale_factor=haar_scale_factor,
                                       min_neighbors=haar_min_neighbors)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        return command(*args, detection={"detector": detector, "detector_options": options},
                       **kwargs)

    options = [
        click.option("--detector", type=click.Choice(DETECTORS), default=DEFAULT_DETECTOR,
                     show_default=True,
                     help="Face detector: yunet (finds turned, tilted, dark faces) or haar "
                          "(the original Haar cascade with a HOG check)."),
        click.option("--min-face", type=click.IntRange(min=8), default=None, metavar="PIXELS",
                     help="Smallest face searched for, in pixels of the photo (default: yunet 20, "
                          "haar 48); larger is faster."),
        click.option("--detect-threshold", type=float, default=None, metavar="SCORE",
                     help="yunet: smallest face score kept, 0-1 (default 0.6); haar: the "
                          "score dlib's HOG check needs to confirm a face (default 0)."),
        click.option("--haar-scale-factor", type=click.FloatRange(min=1, min_open=True),
                     default=None, help="haar: search window growth per step (default 1.2)."),
        click.option("--haar-min-neighbors", type=click.IntRange(min=1), default=None,
                     help="haar: overlapping hits that make a face (default 5)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _video_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--fps, --every-frame and --smooth, for the commands that read video; the command
    receives them as one ``sampling`` dict of :meth:`Predictor.predict_video` arguments."""

    @functools.wraps(command)
    def wrapper(*args: Any, fps: float, every_frame: bool, smooth: float, **kwargs: Any) -> Any:
        return command(*args, sampling={"fps": fps, "every_frame": every_frame,
                                        "smooth": smooth}, **kwargs)

    options = [
        click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=5.0,
                     show_default=True, help="Video frames analysed per second of video."),
        click.option("--every-frame", is_flag=True, help="Analyse every frame of a video."),
        click.option("--smooth", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
                     help="Average each face's probabilities over this many seconds of "
                          "video (that frame and those before), for steadier labels."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _handle_errors(command: Callable[..., int]) -> Callable[..., int]:
    """Turn fer8's errors into one line on stderr (a traceback too with -v)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return command(*args, **kwargs)
        except (ModelNotFoundError, ModelFormatError, ChecksumMismatchError, FileNotFoundError,
                FileExistsError) as exc:
            _fail(exc, EXIT_USAGE)
        except (Fer8Error, OSError) as exc:
            _fail(exc, EXIT_INPUT_FAILED)

    return wrapper


def _fail(exc: BaseException, code: int) -> None:
    if _verbosity() > 0:
        click.echo(traceback.format_exc().rstrip(), err=True)
    click.echo(f"fer8: error: {exc}", err=True)
    sys.exit(code)


def _verbosity() -> int:
    ctx = click.get_current_context(silent=True)
    return (ctx.obj or {}).get("verbose", 0) if ctx is not None else 0


class _Group(click.Group):
    """fer8's command group: its help names the classes the bundled model predicts,
    read from the model file's spec when help is shown (a few milliseconds), so it
    always says what ``fer8 predict`` without ``--model`` can answer."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        template = self.help or ""
        self.help = template.replace("{classes}", _bundled_classes())
        try:
            super().format_help_text(ctx, formatter)
        finally:
            self.help = template


def _bundled_classes() -> str:
    from fer8.labels import display_name
    from fer8.models.modelfile import read_spec
    from fer8.models.registry import resolve_model

    try:
        labels = read_spec(resolve_model(None)).labels
    except Fer8Error:
        return "(no bundled model is installed)"
    return ", ".join(display_name(label) for label in labels)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fer8")
@click.option("-v", "--verbose", count=True,
              help="More logging: -v for progress details and tracebacks, -vv for debug.")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """fer8: facial expression recognition with face detection, landmark alignment and a
    ResNet50 classifier.

    The bundled model (used without --model) predicts {classes}. A model trained with
    fer8 train predicts the classes of its data.
    """
    level = logging.WARNING if verbose == 0 else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format=_log_format(verbose))
    ctx.obj = {"verbose": verbose}


def _log_format(verbose: int) -> str:
    return "fer8: %(message)s" if verbose < 2 else "%(asctime)s %(name)s %(levelname)s: %(message)s"


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up chatter hidden (see :mod:`fer8.training.backend`)
    and its later C++ errors too: on a command line they bury the one line that matters.
    ``-vv`` keeps the chatter. Without the train extra, exits with a one-line message
    saying what to install.
    """
    if _verbosity() < 2:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from fer8.training.backend import import_keras

    try:
        import_keras()
        import onnx  # noqa: F401  (model files are written as ONNX graphs)
    except ImportError as exc:
        click.echo(f"fer8: error: fer8 train needs the train extra ({exc.name} is missing): "
                   f"{install_command('train')}", err=True)
        sys.exit(EXIT_USAGE)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format. Default: table on a terminal, jsonl otherwise.")
@click.option("--annotate", "annotate_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write each image with boxes, labels and confidence drawn into this folder.")
@click.option("--landmarks", "show_landmarks", is_flag=True,
              help="Add each face's 68 landmarks to the table and the CSV (x_0..x_67, "
                   "y_0..y_67), and its head pose to the table. JSON always has both.")
@click.option("--draw-landmarks", is_flag=True,
              help="With --annotate (or --explain): draw each face's landmarks too.")
@click.option("--explain", "explain_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write each photo with a heatmap over every face of where the evidence "
                   "for its expression lies (NAME.explain.png) into this folder.")
@click.option("--model", "model", metavar="NAME|PATH",
              help="Model name or .fer8 file (default: the bundled model).")
@click.option("--max-faces", type=click.IntRange(min=1), help="Keep the N largest faces per image.")
@click.option("--no-detect", is_flag=True,
              help="Take each whole image as one face (pre-cropped faces).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Faces per forward pass of the model.")
@_flip_option
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal and "
                   "stdout is not).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=MAX_PIXELS,
              show_default=True, help="Refuse larger images (raise it for panoramas).")
@_video_options
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True,
              help="local: this process; ray: a Ray cluster (the ray extra), writing --out.")
@click.option("--ray-address", metavar="ADDRESS",
              help="--engine ray: the cluster to join (auto, HOST:PORT or ray://HOST:PORT); "
                   "default: start a local Ray instance.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="--engine ray: write one row per face to this .parquet or .jsonl file.")
@_detector_options
@_handle_errors
def predict(paths: tuple[str, ...], fmt: str | None, annotate_dir: Path | None,
            show_landmarks: bool, draw_landmarks: bool, explain_dir: Path | None,
            model: str | None, max_faces: int | None, no_detect: bool, batch_size: int,
            flip: bool, progress: bool | None, max_pixels: int, sampling: dict,
            engine: str, ray_address: str | None, out_path: Path | None,
            detection: dict) -> int:
    """Classify the expression of every face in images and videos.

    PATHS are image or video files, folders (searched recursively for images and
    videos) or - for one image's bytes on stdin. Videos give a row per face per sampled
    frame, with the frame, its time and the face's track id. With --engine ray (photos)
    they can also be globs and URIs that pyarrow reads (s3://bucket/photos/, gs://...).
    """
    from fer8.pipeline.images import describe_source
    from fer8.pipeline.predictor import Predictor

    if engine == "ray" and (explain_dir is not None or show_landmarks or draw_landmarks):
        raise click.UsageError("--engine ray takes neither --explain nor --landmarks")
    if draw_landmarks and annotate_dir is None and explain_dir is None:
        raise click.UsageError("--draw-landmarks draws on the --annotate or --explain pictures")
    if engine == "ray":
        _predict_on_ray(paths, out_path, ray_address, fmt=fmt, annotate_dir=annotate_dir,
                        progress=progress, model=model, detect=not no_detect,
                        max_faces=max_faces, batch_size=batch_size, flip=flip,
                        max_pixels=max_pixels, **detection)
    if out_path is not None or ray_address is not None:
        raise click.UsageError("--out and --ray-address go with --engine ray")
    inputs = list(_expand(paths))
    if not inputs:
        click.echo("fer8: error: no image or video files found in " + ", ".join(paths),
                   err=True)
        sys.exit(EXIT_INPUT_FAILED)
    if no_detect and any(item.video for item in inputs):
        raise click.UsageError("--no-detect takes pre-cropped photos, not videos")
    if annotate_dir is not None:
        _check_annotations(inputs, annotate_dir)
    if explain_dir is not None:
        _check_annotations(inputs, explain_dir)
    predictor = Predictor(model, max_faces=max_faces,
                          batch_size=batch_size, flip=flip, max_pixels=max_pixels, **detection)
    if explain_dir is not None:
        from fer8.errors import ExplanationError
        from fer8.pipeline.explain import head

        try:
            head(predictor.model)  # a model without an exact map fails before any photo
        except ExplanationError as exc:
            _fail(exc, EXIT_USAGE)
    writer = _writer(fmt, predictor.labels, [describe_source(item.source) for item in inputs],
                     video=any(item.video for item in inputs), landmarks=show_landmarks)
    # Each failure is in the results too; on a terminal that shows both streams, a line
    # on stderr would report it twice.
    report_failures = not _same_terminal()
    # By default the bar shows only when results go elsewhere than the terminal
    # (`> out.jsonl`): on a terminal the rows themselves show progress, and a bar
    # on the same screen would be drawn through them.
    show_progress = progress if progress is not None else (
        sys.stderr.isatty() and not sys.stdout.isatty())
    failed = 0
    annotated: dict[str, str] = {}
    explained: dict[str, str] = {}
    video_annotation = None
    results = _results(predictor, inputs, detect=not no_detect, sampling=sampling,
                       explain=explain_dir is not None)
    with ProgressBar("predict", len(inputs),
                     hidden=not show_progress or len(inputs) < 2) as bar:
        for item, result, last in results:
            if result.error is not None:
                failed += 1
                if report_failures:
                    bar.echo(f"fer8: {result.source}: {result.error}")
            if annotate_dir is not None and item.video:
                if video_annotation is None:
                    video_annotation = _VideoAnnotation(item, annotate_dir, predictor.labels)
                video_annotation.add(result)
                if last:
                    annotated.update(video_annotation.close())
                    video_annotation = None
            elif annotate_dir is not None and result.error is None:
                _write_annotated(item.source, result, annotate_dir / item.annotated, max_pixels,
                                 landmarks=draw_landmarks)
                annotated[item.annotated] = result.source
            if explain_dir is not None and not item.video and result.error is None:
                name = _explained_name(item)
                _write_explained(item.source, result, explain_dir / name, max_pixels,
                                 landmarks=draw_landmarks)
                explained[name] = result.source
            writer.write(result)
            if last:
                bar.update(1)
    writer.close()
    if annotated:
        _write_annotation_index(annotate_dir, annotated)
    if explained:
        _write_annotation_index(explain_dir, explained)
    sys.exit(EXIT_INPUT_FAILED if failed else EXIT_OK)


def _predict_on_ray(paths: tuple[str, ...], out_path: Path | None, address: str | None, *,
                    fmt: str | None, annotate_dir: Path | None, progress: bool | None,
                    model: str | None, **options: Any) -> None:
    """``fer8 predict --engine ray``: the rows go to ``--out``; exits like plain predict."""
    if out_path is None:
        raise click.UsageError("--engine ray writes its rows to a file: give --out "
                               "results.parquet (or .jsonl)")
    if fmt is not None or annotate_dir is not None or "-" in paths:
        raise click.UsageError("--engine ray takes neither --format, --annotate nor - (stdin)")
    from importlib.util import find_spec

    from fer8.distributed.inputs import list_inputs
    from fer8.distributed.ray_data import connect, predict_files
    from fer8.distributed.rows import row_format
    from fer8.models.registry import resolve_model

    try:
        row_format(out_path)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # Looked up, not imported: importing Ray takes seconds, and connect() does it.
    missing = [name for name in ("ray", "pyarrow") if find_spec(name) is None]
    if missing:
        click.echo(f"fer8: error: --engine ray needs the ray extra ({missing[0]} is "
                   f"missing): {install_command('ray')}", err=True)
        sys.exit(EXIT_USAGE)

    resolve_model(model)  # a wrong --model is a usage error before the cluster starts
    files = list_inputs(paths)
    # Ray logs each run's plan and its own notices at INFO and WARNING, and its C++ core
    # an error about Ray Data's own actor arguments; -v shows them.
    connect(address, ray_log_level=logging.ERROR if _verbosity() == 0 else logging.INFO,
            quiet_core=_verbosity() == 0)
    show_progress = progress if progress is not None else sys.stderr.isatty()
    with ProgressBar("predict", len(files), hidden=not show_progress) as bar:
        def on_image(row: dict) -> None:
            if row["error"] is not None:
                bar.echo(f"fer8: {row['source']}: {row['error']}")
            bar.update(1)

        # The time left is timed from the first rows the actors send, not from their
        # start-up (seconds, which made a 17 s run read 7 minutes at 2%).
        failed = predict_files(files, out_path, model, on_image=on_image,
                               on_start=bar.restart_clock, **options)
    logger.info("wrote %s (%d inputs, %d unreadable)", out_path, len(files), failed)
    sys.exit(EXIT_INPUT_FAILED if failed else EXIT_OK)


@cli.command()
@click.option("--camera", default="0", show_default=True, metavar="INDEX|FILE|URL",
              help="A camera's index, or a video file or stream URL (anything FFmpeg opens).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Format of the printed rows. Default: table on a terminal, jsonl otherwise.")
@click.option("--window/--no-window", default=None,
              help="Show the frames with boxes and labels in a window (default: when there "
                   "is a display). Without one, rows are printed.")
@click.option("--model", "model", metavar="NAME|PATH",
              help="Model name or .fer8 file (default: the bundled model).")
@click.option("--max-faces", type=click.IntRange(min=1), help="Keep the N largest faces.")
@_video_options
@_detector_options
@_handle_errors
def live(camera: str, fmt: str | None, window: bool | None, model: str | None,
         max_faces: int | None, sampling: dict, detection: dict) -> None:
    """Classify the faces of a camera's picture as it comes, following each face.

    Draws into a window where there is a display (q or Esc closes it), and prints a row
    per face per analysed frame otherwise, or when stdout is not a terminal. Ends with
    the video, the stream, or Ctrl-C.
    """
    from collections import deque

    from fer8.pipeline.predictor import Predictor
    from fer8.pipeline.video import describe_video, read_frames

    source: int | str = int(camera) if camera.isdigit() else camera
    # Small batches: frames are read ahead by two batches, and on a camera each frame
    # read ahead is that much delay between the picture and its result.
    predictor = Predictor(model, max_faces=max_faces, batch_size=2, **detection)
    try:
        frames = read_frames(source, fps=sampling["fps"], every_frame=sampling["every_frame"])
    except InvalidVideoError as exc:
        # A camera index that opens nothing is a wrong argument, like a wrong --model.
        _fail(exc, EXIT_USAGE if isinstance(source, int) else EXIT_INPUT_FAILED)
    name = describe_video(source)
    show = _display_available() if window is None else window
    print_rows = not show or not sys.stdout.isatty()
    # As in predict: on a terminal that shows both streams, the table's row is the report.
    report_failures = not (print_rows and _same_terminal())
    writer = _writer(fmt, predictor.labels, [name], video=True)
    waiting: deque = deque()  # frames read, until their results come, to draw them

    def remember(frames):
        for frame in frames:
            if show:
                waiting.append(frame)
            yield frame

    failed = False
    try:
        for result in predictor.predict_frames(remember(frames), name,
                                               smooth=sampling["smooth"]):
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

    from fer8.pipeline.annotate import annotate

    try:
        cv2.imshow(f"fer8 live: {name}", cv2.cvtColor(annotate(image, result),
                                                    cv2.COLOR_RGB2BGR))
    except cv2.error:  # a headless OpenCV, or no display after all
        return False
    return True


def _closed() -> bool:
    """Whether q or Esc was pressed in the window (this also lets it redraw)."""
    import cv2

    return cv2.waitKey(1) & 0xFF in (ord("q"), 27)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--model", "model", metavar="NAME|PATH",
              help="Model name or .fer8 file (default: the bundled model).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Larger uploads are refused with 413.")
@click.option("--max-video-mb", type=click.FloatRange(min=0, min_open=True), default=100.0,
              show_default=True,
              help="The same for videos (a video/* body, or a file declared a video).")
@click.option("--api-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="API keys, one a line: /v1/* then needs 'Authorization: Bearer KEY' "
                   "(default: FER8_API_KEYS, keys separated by commas; none: no key asked).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes, each with its own model, to use more cores.")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=10.0,
              show_default=True, metavar="SECONDS",
              help="On SIGTERM, how long the requests in flight get to finish.")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve HTTPS with this PEM certificate: browsers allow the page's webcam "
                   "only on localhost or over HTTPS.")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The certificate's private key (PEM), if not in --ssl-certfile.")
@_detector_options
@_handle_errors
def serve(host: str, port: int, model: str | None, max_upload_mb: float,
          max_video_mb: float, api_key_file: Path | None, workers: int,
          shutdown_timeout: float, ssl_certfile: Path | None, ssl_keyfile: Path | None,
          detection: dict) -> None:
    """Serve the HTTP API, the web page and (when configured) the LINE bot.

    The LINE webhook (/line/callback) is on when LINE_CHANNEL_SECRET and
    LINE_CHANNEL_ACCESS_TOKEN are set; FER8_LINE_API_URL and FER8_LINE_DATA_URL
    override the LINE API's base URLs. /healthz and /metrics (Prometheus) need no key.
    SIGTERM stops it cleanly: the requests in flight are answered, then it exits 0.
    """
    try:
        from fer8.serving.auth import exposure_warning, load_api_keys
        from fer8.serving.launch import ServeOptions, require_extra
        from fer8.serving.launch import serve as run_server

        require_extra()
    except ImportError as exc:
        click.echo(f"fer8: error: fer8 serve needs the serve extra ({_missing_serve_package(exc)} "
                   f"is missing): {install_command('serve')}", err=True)
        sys.exit(EXIT_USAGE)

    try:
        keys = load_api_keys(api_key_file)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if ssl_keyfile is not None and ssl_certfile is None:
        raise click.UsageError("--ssl-keyfile needs --ssl-certfile")
    warning = exposure_warning(host, bool(keys))
    if warning:
        click.echo(f"fer8: warning: {warning}", err=True)
    logging.getLogger("fer8").setLevel(logging.INFO)  # the startup lines say what is on
    run_server(ServeOptions(
        model=model, detection=detection, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_video_bytes=int(max_video_mb * 1024 * 1024),
        api_key_file=None if api_key_file is None else str(api_key_file), host=host,
        port=port, workers=workers, shutdown_timeout=shutdown_timeout,
        ssl_certfile=None if ssl_certfile is None else str(ssl_certfile),
        ssl_keyfile=None if ssl_keyfile is None else str(ssl_keyfile),
        log_level="debug" if _verbosity() > 1 else "info",
        log_format=_log_format(_verbosity())))


@cli.command()
@click.option("--data", "sources", required=True, multiple=True, metavar="PATH[@SPLIT][:WEIGHT]",
              help="Training data: class folders, a FER+ folder (label.csv), an ExpW folder "
                   "(label.lst) or fer2013.csv. Repeat for several sources; @train or @val "
                   "takes one side of the fixed split (by photo, film or subject); :WEIGHT "
                   "draws each image that many times per epoch (e.g. expw@train:3).")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: checkpoints, model.fer8, history.csv, curves.png.")
@click.option("--val", "val_sources", multiple=True, metavar="PATH[@SPLIT]",
              help="Validation data; repeat for several (the best epoch has the best mean "
                   "accuracy over them). Default: --val-fraction of each --data, per class.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.1, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Epochs at most. With --resume a larger value extends the run (the "
                   "learning-rate schedule fixed at its start is kept).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--image-size", type=click.IntRange(min=32), default=224, show_default=True,
              help="Side of the model input; 112 trains about 4x faster on CPUs.")
@click.option("--backbone", type=click.Choice(["resnet50", "vggface-resnet50", "facenet"]),
              default=None,
              help="facenet: FaceNet's Inception-ResNet-v1, trained to recognise faces "
                   "(start it from --backbone-weights facenet_keras.h5, see the README). "
                   "Default: the --init-model's, else the bundled model's when no "
                   "--backbone-weights are given, else resnet50.")
@click.option("--backbone-weights", default=None, metavar="imagenet|PATH|none",
              help="Starting weights instead of a model: 'imagenet' (resnet50 only; "
                   "downloaded once by Keras), a weight file (a keras-vggface .h5 for "
                   "vggface-resnet50, facenet_keras.h5 for facenet), or 'none'. Default: "
                   "the bundled model's backbone starts from the bundled model (no "
                   "download), another from none.")
@click.option("--init-model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Start from a trained .fer8 model, e.g. to fine-tune on your faces or "
                   "at a larger --image-size; classes it lacks (say worry) start fresh.")
@click.option("--freeze-stages", type=click.IntRange(0, 5), default=0, show_default=True,
              help="Keep the first N ResNet stages frozen (faster, less overfitting).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=3e-4,
              show_default=True, help="Peak AdamW learning rate (warm-up, then cosine decay).")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Epochs of linear learning-rate warm-up.")
@click.option("--label-smoothing", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option("--ema-momentum", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True,
              help="Validate and save an exponential moving average of the weights with "
                   "this momentum (e.g. 0.999; 0: the weights themselves).")
@click.option("--soft-labels", is_flag=True,
              help="Train on FER+ vote distributions instead of majority labels.")
@click.option("--class-weighting", type=click.Choice(["sqrt", "balanced", "none"]),
              default="sqrt", show_default=True, help="Loss weights against class imbalance.")
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
              help="Stop after N epochs without a better validation accuracy.")
@click.option("--steps-per-epoch", type=click.IntRange(min=1),
              help="Steps per epoch (default: one pass over the training data).")
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto",
              show_default=True, help="auto: mixed bfloat16 where the CPU has AVX512-BF16/AMX.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out at its next epoch.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path),
              help="Crop cache folder (default: crops/ in the fer8 cache, see FER8_HOME).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads detecting and aligning faces while preparing crops.")
@click.option("--keep-checkpoint", is_flag=True,
              help="Keep checkpoint.keras when the run ends, to extend it later with "
                   "--resume --epochs N (by default only model.fer8 is kept).")
@click.option("--grayscale/--colour", "grayscale", default=None,
              help="Whether the model sees faces in gray (default: gray when every training "
                   "face is gray or --init-model's model is gray).")
@click.option("--teacher", "teachers", multiple=True, metavar="NAME|PATH",
              help="A trained model whose probabilities on each training face are blended "
                   "into its target (knowledge distillation); repeat for several, whose "
                   "mean is used.")
@click.option("--teacher-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="The teachers' share of each target; the label keeps the rest.")
@click.option("--mask", type=click.Choice(["contour", "none"]), default=None,
              help="contour: cut every face out along its landmark contour onto black, in "
                   "training and (recorded in the model) at prediction, so that sources cut "
                   "out differently (the AffectNet-like set) look alike. Default: as the "
                   "model the run starts from does.")
@_detector_options
@_handle_errors
def train(sources: tuple[str, ...], run_dir: Path, val_sources: tuple[str, ...],
          val_fraction: float, epochs: int,
          batch_size: int, image_size: int, backbone: str | None,
          backbone_weights: str | None,
          init_model: Path | None, freeze_stages: int, learning_rate: float,
          warmup_epochs: float, label_smoothing: float, ema_momentum: float, soft_labels: bool,
          class_weighting: str, patience: int, steps_per_epoch: int | None, precision: str,
          seed: int, resume: bool, cache: Path | None, workers: int,
          keep_checkpoint: bool, grayscale: bool | None, teachers: tuple[str, ...],
          teacher_weight: float, mask: str | None, detection: dict) -> None:
    """Train a model on labelled faces; the best epoch is saved as OUT/model.fer8.

    Photos go through the same detect -> landmarks -> align steps as fer8 predict;
    pre-cropped faces (FER+, fer2013.csv, small images) are framed like predict frames
    them. Crops are cached, so a second run starts training at once.
    """
    _import_tensorflow_quietly()
    from fer8.training.loop import TrainConfig
    from fer8.training.loop import train as run_training

    if backbone_weights not in (None, "imagenet", "none"):
        backbone_weights = str(Path(backbone_weights).resolve())
    config = TrainConfig(
        # Absolute paths: a resumed run may be started from another folder.
        data=tuple(map(_absolute, sources)),
        val=tuple(map(_absolute, val_sources)) or None,
        val_fraction=val_fraction, grayscale=grayscale, **detection,
        epochs=epochs, batch_size=batch_size, image_size=image_size, backbone=backbone,
        backbone_weights=backbone_weights,
        init_model=str(init_model.resolve()) if init_model else None,
        freeze_stages=freeze_stages, learning_rate=learning_rate, warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing, ema_momentum=ema_momentum, soft_labels=soft_labels,
        class_weighting=class_weighting, patience=patience, steps_per_epoch=steps_per_epoch,
        precision=precision, seed=seed, teachers=tuple(map(_teacher, teachers)),
        teacher_weight=teacher_weight, mask=mask)
    if _verbosity() == 0:  # the per-epoch summary lines are the command's progress report
        logging.getLogger("fer8.training.loop").setLevel(logging.INFO)
    result = run_training(config, run_dir, resume=resume, cache=cache, workers=workers,
                          on_prepare=ProgressBar, on_epoch=ProgressBar,
                          keep_checkpoint=keep_checkpoint)
    if result.model_path is None:
        click.echo(f"fer8: no epoch finished; nothing saved in {run_dir}", err=True)
        sys.exit(130 if result.interrupted else EXIT_INPUT_FAILED)
    click.echo(f"fer8: best val_accuracy {result.best_val_accuracy:.4f} at epoch "
               f"{result.best_epoch}; model: {result.model_path}", err=True)
    sys.exit(130 if result.interrupted else EXIT_OK)


@cli.command()
@click.option("--data", "sources", required=True, multiple=True, metavar="PATH[@SPLIT]",
              help="Labelled data: class folders, a FER+ folder (label.csv), an ExpW folder "
                   "(label.lst) or fer2013.csv; @train or @val for one side of the fixed "
                   "split (by photo, film or subject). Repeat for several datasets.")
@click.option("--model", "model", metavar="NAME|PATH",
              help="Model name or .fer8 file (default: the bundled model).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write evaluation.json, and a confusion-matrix picture and a "
                   "reliability diagram per dataset, here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default=None,
              help="Default: table on a terminal, json otherwise.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test",
              show_default=True, help="Which rows of a fer2013.csv to evaluate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@_flip_option
@click.option("--progress/--no-progress", default=None,
              help="Progress bars on stderr (default: when stderr is a terminal).")
@_detector_options
@_handle_errors
def evaluate(sources: tuple[str, ...], model: str | None, out_dir: Path | None,
             fmt: str | None, split: str, batch_size: int, flip: bool,
             progress: bool | None, detection: dict) -> None:
    """Accuracy, macro-F1, per-class figures and a confusion matrix on labelled data.

    Each image goes through the full fer8 predict pipeline and its largest face (or
    the detected face matching a labelled box) is compared with the label; a face not
    found counts as wrong. Datasets with labelled boxes (ExpW) also get a row for the
    classifier alone on those boxes.
    """
    from fer8.pipeline.predictor import Predictor
    from fer8.training.datasets import parse_source
    from fer8.training.evaluation import evaluate as run_evaluation
    from fer8.training.evaluation import evaluate_labelled_boxes

    datasets = [(source, source.read(fer2013_split=split))
                for source in map(parse_source, sources)]
    predictor = Predictor(model, batch_size=batch_size, flip=flip,
                          **detection)
    rows = []  # (dataset name, framing, Evaluation, data summary)
    hidden = None if progress is None else not progress
    for source, dataset in datasets:
        bar = ProgressBar(f"evaluate {source.name}", len(dataset.samples), hidden=hidden)
        rows.append((source.name, "detected", run_evaluation(predictor, dataset,
                                                             on_progress=bar),
                     dataset.summary()))
        bar.close()
        if any(s.box is not None for s in dataset.samples):
            bar = ProgressBar(f"evaluate {source.name} (labelled boxes)",
                              sum(s.box is not None for s in dataset.samples), hidden=hidden)
            rows.append((source.name, "labelled boxes",
                         evaluate_labelled_boxes(predictor, dataset, on_progress=bar),
                         dataset.summary()))
            bar.close()
    reports = [{"dataset": name, "faces": framing, **evaluation.to_dict(), "data": summary}
               for name, framing, evaluation, summary in rows]
    report: dict[str, Any] = (
        {**reports[0], "model": predictor.model.spec.name} if len(reports) == 1
        else {"model": predictor.model.spec.name, "detector": detection["detector"],
              "datasets": reports})
    if out_dir is not None:
        from fer8.training.plots import plot_confusion, plot_reliability

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "evaluation.json").write_text(to_json(report) + "\n")
        for name, framing, evaluation, _ in rows:
            picture = out_dir / ("confusion_matrix.png" if len(rows) == 1 else
                                 f"confusion_{_file_name(name, framing)}.png")
            plot_confusion(evaluation, picture, title=f"{name} ({framing})")
            plot_reliability(evaluation.reliability,
                             out_dir / ("reliability.png" if len(rows) == 1 else
                                        f"reliability_{_file_name(name, framing)}.png"),
                             title=f"{name} ({framing})")
        logger.info("wrote %s, %d confusion-matrix pictures and as many reliability "
                    "diagrams", out_dir / "evaluation.json", len(rows))
    fmt = fmt or ("table" if sys.stdout.isatty() else "json")
    if fmt == "json":
        click.echo(to_json(report))
    else:
        if len(rows) == 1:
            click.echo(_per_class_table(rows[0][2]))
        click.echo(_datasets_table(rows))
    sys.exit(EXIT_INPUT_FAILED if any(row[2].unreadable for row in rows) else EXIT_OK)


@cli.command()
@click.option("--model", "model", metavar="NAME|PATH",
              help="Model name, .fer8 file or run folder (default: the bundled model).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "fer8"]), default="onnx",
              show_default=True,
              help="onnx: the network alone, for other runtimes; fer8: a model file in "
                   "this fer8's format (converts files from older versions).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="File to write (a new one, in a folder that exists).")
@click.option("--force", is_flag=True,
              help="Replace an existing --out file, and make its folder if missing.")
@_handle_errors
def export(model: str | None, fmt: str, out_path: Path, force: bool) -> None:
    """Write a model for other runtimes, or convert an older model file.

    The ONNX file takes a float32 batch (N, S, S, 3) already preprocessed and gives the
    probabilities (N, C); its metadata (fer8.labels, fer8.input_size,
    fer8.preprocessing) says how to prepare the input and read the output. A network
    whose head is global average pooling and dense layers also gives "features", the
    last feature map (N, K, h, w), which class activation maps weight.
    """
    from fer8.models.export import export_fer8, export_onnx
    from fer8.models.registry import resolve_model

    # Like fer8 train's run folder and --annotate's inputs: nothing is replaced, and no
    # folder made from a mistyped path, unless asked.
    if not force and out_path.exists():
        raise click.UsageError(f"--out {out_path} exists; pass --force to replace it")
    if not force and not out_path.parent.is_dir():
        raise click.UsageError(f"--out {out_path}: the folder {out_path.parent} does not "
                               "exist; make it, or pass --force")
    source = resolve_model(model)
    if fmt == "onnx":
        try:
            export_onnx(source, out_path)
        except ImportError as exc:  # a temperature to build into the graph
            click.echo(f"fer8: error: exporting a calibrated model needs the train extra "
                       f"({exc.name} is missing): {install_command('train')}", err=True)
            sys.exit(EXIT_USAGE)
    else:
        try:
            export_fer8(source, out_path)
        except ImportError as exc:
            click.echo(f"fer8: error: converting a model file needs the train extra "
                       f"({exc.name} is missing): {install_command('train')}", err=True)
            sys.exit(EXIT_USAGE)
    click.echo(out_path)


@cli.command()
@click.option("--model", "model", metavar="NAME|PATH",
              help="Model name or .fer8 file to calibrate (default: the bundled model).")
@click.option("--data", "sources", required=True, multiple=True, metavar="PATH[@SPLIT]",
              help="Labelled data to fit the temperature on, as for fer8 evaluate; data the "
                   "model was not trained on (its validation sets). Repeat for several "
                   "datasets: each weighs the same in the fit.")
@click.option("--out", "out_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The calibrated model file to write.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="val",
              show_default=True, help="Which rows of a fer2013.csv to use.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@_flip_option
@_detector_options
@_handle_errors
def calibrate(model: str | None, sources: tuple[str, ...], out_path: Path, force: bool,
              split: str, batch_size: int, flip: bool, detection: dict) -> None:
    """Fit the temperature that makes a model's confidences match its accuracy.

    Every image goes through the fer8 predict pipeline, as in fer8 evaluate; the
    temperature that minimises the negative log-likelihood of the true classes is
    stored in the new model file, which every runtime and fer8 export then apply. It
    changes no label, only the confidences. Prints each dataset's expected calibration
    error (15 bins) before and after.
    """
    import numpy as np

    from fer8.models.calibration import calibrate_model_file
    from fer8.models.modelfile import read_model_file
    from fer8.models.registry import resolve_model
    from fer8.pipeline.predictor import Predictor
    from fer8.training.datasets import parse_source
    from fer8.training.evaluation import predicted_probabilities

    if out_path.exists() and not force:
        raise click.BadParameter(f"{out_path} exists; add --force to replace it",
                                 param_hint="--out")
    source = resolve_model(model)
    datasets = [(spec.name, spec.read(fer2013_split=split))
                for spec in map(parse_source, sources)]
    # Fitted on the network's own probabilities: a model that already has a temperature
    # gets a new one, not one on top of it.
    network = read_model_file(source).with_temperature(1.0)
    predictor = Predictor(network, batch_size=batch_size, flip=flip, **detection)
    parts, truths, groups = [], [], []
    for name, dataset in datasets:
        progress = ProgressBar(f"calibrate on {name}", len(dataset.samples))
        probabilities, truth = predicted_probabilities(predictor, dataset, on_progress=progress)
        progress.close()
        if not len(truth):
            raise Fer8Error(f"{name}: no face of a class the model has was found")
        parts.append(probabilities)
        truths.append(truth)
        groups += [name] * len(truth)
    summary = calibrate_model_file(source, out_path, np.concatenate(parts),
                                   np.concatenate(truths), groups,
                                   fitted_on=", ".join(name for name, _ in datasets))
    click.echo(_calibration_table(summary))
    click.echo(f"fer8: temperature {summary['temperature']:.4f}; model: {out_path}", err=True)


def _calibration_table(summary: dict[str, Any]) -> str:
    rows = [*summary["per_dataset"].items(), ("all (pooled)", summary)]
    width = max(len("dataset"), *(len(name) for name, _ in rows))
    lines = [f"{'dataset':<{width}}  {'n':>6} {'ECE before':>10} {'ECE after':>9} "
             f"{'NLL before':>10} {'NLL after':>9}"]
    for name, row in rows:
        lines.append(f"{name:<{width}}  {row['n']:>6d} {row['ece_before']:>10.1%} "
                     f"{row['ece_after']:>9.1%} {row['nll_before']:>10.4f} "
                     f"{row['nll_after']:>9.4f}")
    return "\n".join(lines)


def _file_name(name: str, framing: str) -> str:
    return re.sub(r"[^A-Za-z0-9.@-]+", "_", f"{name}_{framing}").strip("_")


def _per_class_table(evaluation) -> str:
    from fer8.labels import display_name

    lines = [f"{'class':<11} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for label, row in evaluation.per_class().items():
        lines.append(f"{display_name(label):<11} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                     f"{row['f1']:>6.3f} {row['support']:>8d}")
    return "\n".join(lines) + "\n"


def _datasets_table(rows) -> str:
    """One row per dataset and framing: the model's headline figures.

    ``accuracy`` counts a face that was not found as wrong (``accuracy_all``); ``ECE``
    is the expected calibration error of the faces found (15 confidence bins)."""
    width = max(len("dataset"), *(len(name) for name, *_ in rows))
    lines = [f"{'dataset':<{width}}  {'faces':<14} {'n':>6} {'accuracy':>8} {'macro-F1':>8} "
             f"{'ECE':>6} {'missed':>6} {'unreadable':>10}"]
    for name, framing, evaluation, _ in rows:
        lines.append(f"{name:<{width}}  {framing:<14} {evaluation.n:>6d} "
                     f"{evaluation.accuracy_all:>8.1%} {evaluation.macro_f1:>8.3f} "
                     f"{evaluation.ece:>6.1%} "
                     f"{evaluation.no_face:>6d} {evaluation.unreadable:>10d}")
    return "\n".join(lines)


def _teacher(name: str) -> str:
    """A --teacher model: a path made absolute (resumed runs may start elsewhere), or a
    registered name as it is."""
    from fer8.models.registry import MODELS

    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if name in MODELS:
        return name
    raise click.BadParameter(f"{name}: no such model file, and not a model name",
                             param_hint="--teacher")


def _absolute(spec: str) -> str:
    """A --data/--val spec with its path absolute; a missing path is a usage error."""
    from dataclasses import replace

    from fer8.training.datasets import DatasetError, parse_source

    try:
        source = parse_source(spec)
    except DatasetError as exc:
        raise click.BadParameter(str(exc)) from None
    if not source.path.exists():
        raise click.BadParameter(f"{source.path}: no such file or folder")
    return str(replace(source, path=source.path.resolve()))


#: The serve extra's packages (pip's names) by the module each installs.
_SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart",
                   "linebot": "line-bot-sdk", "fastapi_offline": "fastapi-offline"}


def _missing_serve_package(exc: ImportError) -> str:
    """The first package of the serve extra that is not installed, by pip's name; the
    import that failed first is often one of theirs (anyio, FastAPI's), which says
    nothing about what to install."""
    from importlib.util import find_spec

    for module, package in _SERVE_PACKAGES.items():
        try:
            if find_spec(module) is None:
                return package
        except (ImportError, ValueError):
            return package
    return exc.name or str(exc)


def install_command(extra: str) -> str:
    """The pip command that adds ``extra`` to this very installation of fer8.

    ``pip install 'fer8[serve]'`` only works for fer8 from a package index: for a source
    checkout (run in place, or installed with ``pip install -e .`` or ``pip install .``)
    it fetches another fer8 or fails. The command names this interpreter's pip, so it
    installs into the environment that runs fer8.
    """
    import shlex
    from importlib import metadata

    pip = f"{shlex.quote(sys.executable)} -m pip install"
    package_dir = Path(__file__).resolve().parent
    checkout = package_dir.parent.parent
    if package_dir.parent.name == "src" and (checkout / "pyproject.toml").is_file():
        return f"{pip} -e {shlex.quote(f'{checkout}[{extra}]')}"  # runs from its source
    try:
        direct_url = metadata.distribution("fer8").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        direct_url = None
    if direct_url:  # installed from a folder or URL, not an index (PEP 610)
        import json
        from urllib.parse import unquote, urlparse

        url = json.loads(direct_url).get("url", "")
        if url.startswith("file://") and Path(unquote(urlparse(url).path)).is_dir():
            return f"{pip} {shlex.quote(f'{unquote(urlparse(url).path)}[{extra}]')}"
    return f"{pip} 'fer8[{extra}]'"


@dataclass(frozen=True)
class _Input:
    """One input of ``fer8 predict``: the source for the predictor, its path under
    --annotate (a video's is its ``.mp4``), and whether it is a video."""

    source: Any
    annotated: str
    video: bool = False


def _expand(paths: tuple[str, ...]) -> Iterator[_Input]:
    """Every input, with its path under --annotate.

    Annotated pictures keep the inputs' folders, relative to the deepest folder that
    holds every input (one folder given: that folder), so ``a/IMG_1.jpg`` and
    ``b/IMG_1.jpg`` stay apart; a name that still repeats (the same file given twice)
    gets ``-2``, ``-3`` before its extension. Nothing a user gave is drawn over.
    """
    from fer8.pipeline.images import IMAGE_EXTENSIONS, iter_image_files
    from fer8.pipeline.video import VIDEO_EXTENSIONS, is_video

    folders = [os.path.abspath(arg if os.path.isdir(arg) else os.path.dirname(arg) or ".")
               for arg in paths if arg != "-"]
    base = os.path.commonpath(folders) if folders else os.getcwd()
    taken: set[str] = set()
    for arg in paths:
        if arg == "-":
            stdin = io.BytesIO(sys.stdin.buffer.read())
            stdin.name = "-"
            yield _Input(stdin, _unique("stdin.png", taken))
            continue
        for path in iter_image_files([Path(arg)], IMAGE_EXTENSIONS | VIDEO_EXTENSIONS):
            name = os.path.relpath(os.path.abspath(path), base)
            if is_video(path):
                yield _Input(str(path), _unique(str(Path(name).with_suffix(".mp4")), taken),
                             video=True)
            else:
                yield _Input(str(path), _unique(name, taken))


def _results(predictor, inputs: list[_Input], *, detect: bool, sampling: dict,
             explain: bool = False) -> Iterator[tuple[_Input, Any, bool]]:
    """(input, result, whether it is the input's last) for every photo and every sampled
    video frame, in the order of the inputs. Consecutive photos go through
    ``predict_many`` together, so their faces share batches. With ``explain`` each photo
    goes through ``Predictor.explain`` instead, and its result carries the explanations
    (``ExplainedResult``)."""
    for video, group in itertools.groupby(inputs, key=lambda item: item.video):
        group = list(group)
        if not video and explain:
            for item in group:
                yield item, _explained(predictor, item.source, detect), True
            continue
        if not video:
            photos = predictor.predict_many((item.source for item in group), detect=detect)
            for item, result in zip(group, photos):
                yield item, result, True
            continue
        for item in group:
            previous = None
            for result in predictor.predict_video(item.source, **sampling):
                if previous is not None:
                    yield item, previous, False
                previous = result
            yield item, previous, True


class _VideoAnnotation:
    """The --annotate files of one video: the video with results drawn (mp4) and the
    timeline picture (``NAME.timeline.png``)."""

    def __init__(self, item: _Input, annotate_dir: Path, labels: tuple[str, ...]) -> None:
        from fer8.pipeline.timeline import Timeline

        self.item = item
        self.video_path = annotate_dir / item.annotated
        self.timeline_name = str(Path(item.annotated).with_suffix(".timeline.png"))
        self.timeline_path = annotate_dir / self.timeline_name
        self.timeline = Timeline(labels)
        self.video = None

    def add(self, result) -> None:
        from fer8.pipeline.annotate import AnnotatedVideo

        if result.error is not None and result.frame is None:
            return  # not a video at all: nothing to draw on
        if self.video is None:
            self.video = AnnotatedVideo(self.item.source, self.video_path)
        self.video.add(result)
        self.timeline.add(result)

    def close(self) -> dict[str, str]:
        """Finish both files; returns {annotated name: source} for sources.csv."""
        if self.video is None:
            return {}
        self.video.close()
        if self.video.frames_written == 0:  # no frame could be read: nothing to show
            self.video.path.unlink(missing_ok=True)
            return {}
        self.timeline.plot(self.timeline_path, title=os.path.basename(self.item.source))
        logger.info("annotated %s -> %s, %s", self.item.source, self.video_path,
                    self.timeline_path)
        return {self.item.annotated: self.item.source, self.timeline_name: self.item.source}


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name`` with ``-2``, ``-3``... before its extension if taken (compared
    case-insensitively, as some file systems do)."""
    stem, suffix = os.path.splitext(name)
    candidate, number = name, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{stem}-{number}{suffix}"
    taken.add(candidate.lower())
    return candidate


def _check_annotations(inputs: list[_Input], annotate_dir: Path) -> None:
    """Refuse an --annotate folder where an annotated picture would replace an input."""
    written = {os.path.abspath(annotate_dir / item.annotated) for item in inputs}
    written |= {os.path.abspath(annotate_dir / Path(item.annotated).with_suffix(".timeline.png"))
                for item in inputs if item.video}
    for item in inputs:
        if isinstance(item.source, str) and os.path.exists(item.source) and \
                os.path.abspath(item.source) in written:
            click.echo(f"fer8: error: --annotate {annotate_dir} would draw over the input "
                       f"{item.source}; choose another folder", err=True)
            sys.exit(EXIT_USAGE)


def _write_annotation_index(annotate_dir: Path, annotated: dict[str, str]) -> None:
    """Write (or update) ``sources.csv`` in the --annotate folder: which input each
    annotated picture came from."""
    import csv

    index = annotate_dir / ANNOTATION_INDEX
    rows: dict[str, str] = {}
    if index.is_file():
        with open(index, newline="") as handle:
            rows = {row["annotated"]: row["source"] for row in csv.DictReader(handle)
                    if (annotate_dir / row.get("annotated", "")).is_file()}
    rows.update(annotated)
    with open(index, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["annotated", "source"])
        writer.writerows(sorted(rows.items()))
    logger.info("wrote %d annotated pictures to %s; %s says where each came from",
                len(annotated), annotate_dir, index)


def _writer(fmt: str | None, labels: tuple[str, ...], sources: list[str], *,
            video: bool = False, landmarks: bool = False):
    from fer8.output import make_writer

    fmt = fmt or ("table" if sys.stdout.isatty() else "jsonl")
    return make_writer(fmt, sys.stdout, labels, sources=sources, video=video,
                       landmarks=landmarks)


def _same_terminal() -> bool:
    """Whether stdout and stderr are the same terminal."""
    try:
        return (sys.stdout.isatty() and sys.stderr.isatty()
                and os.ttyname(sys.stdout.fileno()) == os.ttyname(sys.stderr.fileno()))
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _write_annotated(source: Any, result, path: Path, max_pixels: int, *,
                     landmarks: bool = False) -> None:
    from fer8.pipeline.annotate import annotate, save_image
    from fer8.pipeline.images import load_image

    if isinstance(source, io.BytesIO):
        source.seek(0)
    save_image(annotate(load_image(source, max_pixels=max_pixels), result, landmarks=landmarks),
               path)
    logger.info("annotated %s -> %s", result.source, path)


@dataclass(frozen=True, eq=False)
class _ExplainedResult:
    """An image's result with its faces' explanations, for ``--explain``; writers read
    its ``result`` through the same attributes as an ``ImageResult``."""

    result: Any
    explanations: tuple = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)


def _explained(predictor, source: Any, detect: bool) -> Any:
    from fer8.errors import InvalidImageError
    from fer8.pipeline.images import describe_source
    from fer8.results import ImageResult

    name = describe_source(source)
    try:
        explanations = predictor.explain(source, detect=detect)
    except InvalidImageError as exc:
        return ImageResult(name, (), exc.problem)
    faces = tuple(item.face for item in explanations)
    return _ExplainedResult(ImageResult(name, faces), tuple(explanations))


def _explained_name(item: _Input) -> str:
    return str(Path(item.annotated).with_suffix(".explain.png"))


def _write_explained(source: Any, result, path: Path, max_pixels: int, *,
                     landmarks: bool = False) -> None:
    """The photo with each face's heatmap laid over it, then its box and label drawn."""
    from fer8.pipeline.annotate import annotate, save_image
    from fer8.pipeline.explain import overlay
    from fer8.pipeline.images import load_image

    if isinstance(source, io.BytesIO):
        source.seek(0)
    image = load_image(source, max_pixels=max_pixels)
    save_image(annotate(overlay(image, result.explanations), result.result,
                        landmarks=landmarks), path)
    logger.info("explained %s -> %s", result.source, path)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``fer8`` console script."""
    cli.main(args=argv, prog_name="fer8")


if __name__ == "__main__":  # pragma: no cover
    main()
