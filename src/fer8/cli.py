"""The ``fer8`` command: argument parsing and output only; the work is the library's.

Results go to stdout and everything else (errors, logs, progress) to stderr, so
``fer8 predict *.jpg --format jsonl > out.jsonl`` gives a clean file.
Exit codes: 0 every input read, 1 some input failed, 2 usage or model errors.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from fer8 import __version__
from fer8.errors import Fer8Error, ModelFormatError, ModelNotFoundError
from fer8.output import FORMATS

logger = logging.getLogger("fer8")

EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE = 0, 1, 2


def _handle_errors(command: Callable[..., int]) -> Callable[..., int]:
    """Turn fer8's errors into one line on stderr (a traceback too with -v)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return command(*args, **kwargs)
        except (ModelNotFoundError, ModelFormatError, FileNotFoundError) as exc:
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fer8")
@click.option("-v", "--verbose", count=True,
              help="More logging: -v for progress details and tracebacks, -vv for debug.")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """fer8: facial expression recognition (angry, disgusted, fearful, happy, neutral, sad,
    surprised, worry) with face detection, landmark alignment and a ResNet50 classifier."""
    level = logging.WARNING if verbose == 0 else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="fer8: %(message)s" if verbose < 2
                        else "%(asctime)s %(name)s %(levelname)s: %(message)s")
    ctx.obj = {"verbose": verbose}


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up chatter hidden.

    TensorFlow 2.21 writes half a dozen lines (oneDNN, CUDA probing) straight to file
    descriptor 2 on import, whatever ``TF_CPP_MIN_LOG_LEVEL`` says; on a command line
    they bury the one line that matters. A failed import is re-raised with stderr back.
    Only called by commands that need a model; ``-vv`` keeps the chatter.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401  (imports TensorFlow, the configured backend)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format. Default: table on a terminal, jsonl otherwise.")
@click.option("--annotate", "annotate_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write each image with boxes, labels and confidence drawn into this folder.")
@click.option("--model", "model", metavar="NAME|PATH",
              help="Model name or .fer8 file (default: the bundled model).")
@click.option("--max-faces", type=click.IntRange(min=1), help="Keep the N largest faces per image.")
@click.option("--no-detect", is_flag=True,
              help="Take each whole image as one face (pre-cropped faces).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Faces per forward pass of the model.")
@click.option("--precision", type=click.Choice(["float32", "bfloat16"]), default="float32",
              show_default=True, help="bfloat16 is faster in batches on CPUs with AVX512-BF16.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal and "
                   "stdout is not).")
@_handle_errors
def predict(paths: tuple[str, ...], fmt: str | None, annotate_dir: Path | None,
            model: str | None, max_faces: int | None, no_detect: bool, batch_size: int,
            precision: str, progress: bool | None) -> int:
    """Classify the expression of every face in images.

    PATHS are image files, folders (searched recursively for images) or - for one
    image's bytes on stdin.
    """
    from fer8.predictor import Predictor

    inputs = list(_expand(paths))
    if _verbosity() < 2:
        _import_tensorflow_quietly()
    if not inputs:
        click.echo("fer8: error: no image files found in " + ", ".join(paths), err=True)
        sys.exit(EXIT_INPUT_FAILED)
    predictor = Predictor(model, precision=precision, max_faces=max_faces,
                          batch_size=batch_size)
    writer = _writer(fmt, predictor.labels)
    # By default the bar shows only when results go elsewhere than the terminal
    # (`> out.jsonl`): on a terminal the rows themselves show progress, and a bar
    # on the same screen would be drawn through them.
    show_progress = progress if progress is not None else (
        sys.stderr.isatty() and not sys.stdout.isatty())
    failed = 0
    results = predictor.predict_many((source for source, _ in inputs), detect=not no_detect)
    with click.progressbar(length=len(inputs), label="predict", file=sys.stderr,
                           hidden=not show_progress or len(inputs) < 2) as bar:
        for (source, annotated_name), result in zip(inputs, results):
            if result.error is not None:
                failed += 1
                click.echo(f"fer8: {result.source}: {result.error}", err=True)
            elif annotate_dir is not None:
                _write_annotated(source, result, annotate_dir / annotated_name)
            writer.write(result)
            bar.update(1)
    writer.close()
    sys.exit(EXIT_INPUT_FAILED if failed else EXIT_OK)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--model", "model", metavar="NAME|PATH",
              help="Model name or .fer8 file (default: the bundled model).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Larger uploads are refused with 413.")
@click.option("--precision", type=click.Choice(["float32", "bfloat16"]), default="float32",
              show_default=True)
@_handle_errors
def serve(host: str, port: int, model: str | None, max_upload_mb: float, precision: str) -> None:
    """Serve the HTTP API, the web page and (when configured) the LINE bot.

    The LINE webhook (/line/callback) is on when LINE_CHANNEL_SECRET and
    LINE_CHANNEL_ACCESS_TOKEN are set; FER8_LINE_API_URL and FER8_LINE_DATA_URL
    override the LINE API's base URLs.
    """
    try:
        from fer8.line import LineSettings
        from fer8.server import create_app, run
    except ImportError as exc:
        click.echo(f"fer8: error: fer8 serve needs the serve extra ({exc.name} is missing): "
                   "pip install 'fer8[serve]'", err=True)
        sys.exit(EXIT_USAGE)
    from fer8.predictor import Predictor

    if _verbosity() < 2:
        _import_tensorflow_quietly()
    logging.getLogger("fer8").setLevel(logging.INFO)  # the startup lines say what is on
    predictor = Predictor(model, precision=precision)
    app = create_app(predictor, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                     line=LineSettings.from_env())
    run(app, host, port, log_level="debug" if _verbosity() > 1 else "info")


def _expand(paths: tuple[str, ...]) -> Iterator[tuple[Any, str]]:
    """(source for the predictor, file name for --annotate) for every input."""
    from fer8.images import iter_image_files

    for arg in paths:
        if arg == "-":
            stdin = io.BytesIO(sys.stdin.buffer.read())
            stdin.name = "-"
            yield stdin, "stdin.png"
            continue
        root = Path(arg)
        for path in iter_image_files([root]):
            relative = path.relative_to(root) if root.is_dir() else Path(path.name)
            yield str(path), str(relative)


def _writer(fmt: str | None, labels: tuple[str, ...]):
    from fer8.output import make_writer

    fmt = fmt or ("table" if sys.stdout.isatty() else "jsonl")
    return make_writer(fmt, sys.stdout, labels)


def _write_annotated(source: Any, result, path: Path) -> None:
    from fer8.annotate import annotate, save_image
    from fer8.images import load_image

    if isinstance(source, io.BytesIO):
        source.seek(0)
    save_image(annotate(load_image(source), result), path)
    logger.info("annotated %s -> %s", result.source, path)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``fer8`` console script."""
    cli.main(args=argv, prog_name="fer8")


if __name__ == "__main__":  # pragma: no cover
    main()
