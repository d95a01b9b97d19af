"""The ``fer8`` command: argument parsing and output only; the work is the library's.

Results go to stdout and everything else (errors, logs, progress) to stderr, so
``fer8 predict *.jpg --format jsonl > out.jsonl`` gives a clean file.
Exit codes: 0 every input read, 1 some input failed, 2 usage or model errors.

One module per command (:mod:`fer8.cli.predict`, ``live``, ``serve``, ``train``,
``evaluate``, ``calibrate``, ``quantize``, ``export``); what they share is in
:mod:`fer8.cli.common`. Their options are the settings of :mod:`fer8.options`, made click
options by :mod:`fer8.cli.options`.
Importing a command's module adds it to the group, so this package imports them all.
"""

from __future__ import annotations

# Each module registers its command on `cli` when imported (the order is help's order
# only where click does not sort, which it does).
from fer8.cli import (  # noqa: F401
    calibrate,
    evaluate,
    export,
    live,
    predict,
    quantize,
    serve,
    train,
)
from fer8.cli.common import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    cli,
    install_command,
)
from fer8.cli.predict import ANNOTATION_INDEX

__all__ = [
    "ANNOTATION_INDEX",
    "EXIT_INPUT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "cli",
    "install_command",
    "main",
]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``fer8`` console script."""
    cli.main(args=argv, prog_name="fer8")
