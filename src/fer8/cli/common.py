"""What every ``fer8`` command shares: the command group and its -v, turning fer8's errors
into one line and an exit code, and the pip command that adds an extra to this
installation. The options shared by several commands are settings of :mod:`fer8.options`,
made click options by :mod:`fer8.cli.options`.

Exit codes: 0 every input read, 1 some input failed, 2 usage or model errors, 141 the
reader of stdout went away (``| head``), quietly, as Unix tools end.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from fer8 import __version__
from fer8.cli.options import with_options
from fer8.errors import (
    ChecksumMismatchError,
    Fer8Error,
    ModelFormatError,
    ModelNotFoundError,
)

if TYPE_CHECKING:
    from fer8.output import Writer

logger = logging.getLogger("fer8")


T = TypeVar("T")


EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE = 0, 1, 2
#: The reader of stdout went away (``fer8 predict long.mp4 | head -2``): what a shell
#: reports for a Unix tool that SIGPIPE ended, 128 + 13.
EXIT_BROKEN_PIPE = 141


def handle_errors(command: Callable[..., T]) -> Callable[..., T]:
    """Turn fer8's errors into one line on stderr (a traceback too with -v); end
    quietly when the reader of stdout goes away."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            try:
                return command(*args, **kwargs)
            finally:
                # Written out here, where a reader gone is handled below, not by
                # Python's flush at exit, which would print a traceback-like message.
                sys.stdout.flush()
        except BrokenPipeError:
            _stdout_gone()
        except (
            ModelNotFoundError,
            ModelFormatError,
            ChecksumMismatchError,
            FileNotFoundError,
            FileExistsError,
        ) as exc:
            fail(exc, EXIT_USAGE)
        except (Fer8Error, OSError) as exc:
            fail(exc, EXIT_INPUT_FAILED)

    return wrapper


def _stdout_gone() -> NoReturn:
    """Exit without a word, as Unix tools do when their reader has gone (``| head``).
    stdout is pointed at /dev/null first: what is left in its buffer would fail again
    when Python flushes it at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (tests): nothing is flushed at exit
    finally:
        os.close(devnull)
    sys.exit(EXIT_BROKEN_PIPE)


def fail(exc: BaseException, code: int) -> NoReturn:
    """Exit with ``code`` after one line on stderr saying ``exc`` (and, with -v, the
    traceback before it)."""
    if verbosity() > 0:
        click.echo(traceback.format_exc().rstrip(), err=True)
    click.echo(f"fer8: error: {exc}", err=True)
    sys.exit(code)


def verbosity() -> int:
    """How many -v were given (0 outside a command)."""
    ctx = click.get_current_context(silent=True)
    return (ctx.obj or {}).get("verbose", 0) if ctx is not None else 0


class _Group(click.Group):
    """fer8's command group: its help names the bundled model's network and the classes
    it predicts, read from the model file's spec when help is shown (a few
    milliseconds), so it always says what ``fer8 predict`` without ``--model`` runs."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        template = self.help or ""
        self.help = _bundled_model(template)
        try:
            super().format_help_text(ctx, formatter)
        finally:
            self.help = template


#: How help names the networks of ``fer8 train --backbone``.
NETWORKS = {
    "facenet": "FaceNet's Inception-ResNet-v1",
    "resnet50": "a ResNet50",
    "vggface-resnet50": "a VGGFace2 ResNet50",
}


def _bundled_model(template: str) -> str:
    """``template`` with ``{network}`` and ``{classes}`` said of the bundled model."""
    from fer8.labels import display_name
    from fer8.models.modelfile import read_spec
    from fer8.models.registry import resolve_model

    try:
        spec = read_spec(resolve_model(None))
    except Fer8Error:
        return template.replace("{network}", "(no bundled model is installed)").replace(
            "{classes}", "nothing"
        )
    network = f"{NETWORKS.get(spec.backbone, spec.backbone)} at {spec.input_size} pixels"
    classes = ", ".join(display_name(label) for label in spec.labels)
    return template.replace("{network}", network).replace("{classes}", classes)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fer8")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More logging: -v for progress details and tracebacks, -vv for debug.",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """fer8: facial expression recognition with face detection, landmark alignment and a
    classifier network.

    The bundled model (used without --model) is {network} and predicts {classes}. A
    model trained with fer8 train predicts the classes of its data.
    """
    level = logging.WARNING if verbose == 0 else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format=log_line_format(verbose))
    ctx.obj = {"verbose": verbose}


def command(options: type, name: str = "options") -> Callable[[Callable[..., Any]], click.Command]:
    """A ``fer8`` subcommand whose function takes one options object of the class
    ``options`` (:mod:`fer8.options`) as its keyword ``name``, one click option per
    setting (:func:`fer8.cli.options.with_options`), and whose fer8 errors become one
    line and an exit code."""

    def decorate(function: Callable[..., Any]) -> click.Command:
        return cli.command()(with_options(options, name)(handle_errors(function)))

    return decorate


def log_line_format(verbose: int) -> str:
    return "fer8: %(message)s" if verbose < 2 else "%(asctime)s %(name)s %(levelname)s: %(message)s"


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
    package_dir = Path(__file__).resolve().parent.parent  # fer8/cli/common.py: fer8
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


def exit_missing_extra(what: str, extra: str, missing: str | None) -> NoReturn:
    """Say that ``what`` needs ``extra`` (``missing`` is the package not installed) and the
    pip command that adds it; exit with the usage code."""
    click.echo(
        f"fer8: error: {what} needs the {extra} extra ({missing} is missing): "
        f"{install_command(extra)}",
        err=True,
    )
    sys.exit(EXIT_USAGE)


def result_writer(
    fmt: str | None,
    labels: tuple[str, ...],
    sources: list[str],
    *,
    video: bool = False,
    landmarks: bool = False,
) -> Writer:
    """The writer of a command's results on stdout (:func:`fer8.output.make_writer`): in
    ``fmt``, or by default a table on a terminal and JSON Lines otherwise."""
    from fer8.output import make_writer

    fmt = fmt or ("table" if sys.stdout.isatty() else "jsonl")
    return make_writer(fmt, sys.stdout, labels, sources=sources, video=video, landmarks=landmarks)


def same_terminal() -> bool:
    """Whether stdout and stderr are the same terminal."""
    try:
        return (
            sys.stdout.isatty()
            and sys.stderr.isatty()
            and os.ttyname(sys.stdout.fileno()) == os.ttyname(sys.stderr.fileno())
        )
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
