"""The ``fer8`` command's entry point (``python -m fer8`` and the console script).

Before it imports the command line (fer8, click, numpy: a fifth of a second), it starts
what the command will need and what takes longest: for a first ``fer8 predict`` (before
fer8 has converted dlib's landmark model to arrays it maps in milliseconds), dlib's
model in a process of its own, which then loads on the other core while this one
imports (see :class:`fer8.pipeline.landmarking.LandmarkProcess`). Only the standard
library is imported until then.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``fer8`` command with ``argv`` (the process's arguments when None)."""
    if starts_landmark_process(sys.argv[1:] if argv is None else argv):
        from fer8.pipeline import landmark_worker

        landmark_worker.prestart()
    from fer8.cli import main as run

    run(None if argv is None else list(argv))


def starts_landmark_process(args: Sequence[str]) -> bool:
    """Whether the command ``args`` will run dlib's model in a process of its own, as a
    first ``fer8 predict`` does when a core is free, and not on Ray (help: no)."""
    command = next((arg for arg in args if not arg.startswith("-")), None)
    if command != "predict" or {"-h", "--help"} & set(args):
        return False
    engine = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--engine"]
    if "ray" in engine or "--engine=ray" in args:
        return False
    from fer8.pipeline.landmark_worker import wants_process  # not for the other commands

    return wants_process()
