"""Commands run with stderr on a pseudo-terminal, and what a terminal would show.

A progress bar is redrawn in place with carriage returns and erase-line codes, so the
bytes alone do not say what a person sees; :func:`screen` replays them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

#: Control sequences that move nothing: the cursor shown or hidden, colours reset.
_INVISIBLE = re.compile(r"\x1b\[\?25[lh]|\x1b\[0m")


def run_with_stderr_on_a_terminal(
    args: list[str], *, stdout: Path, env: dict | None = None, timeout: float = 300
) -> tuple[int, str]:
    """Run ``python -m fer8 ARGS`` with stderr on a pseudo-terminal and stdout into a file;
    returns the exit code and every character written to the terminal."""
    with open(stdout, "wb") as out:
        return _on_a_terminal(args, out, env, timeout)


def run_on_a_terminal(
    args: list[str], *, env: dict | None = None, timeout: float = 300
) -> tuple[int, str]:
    """Run ``python -m fer8 ARGS`` with stdout and stderr on one pseudo-terminal, as in a
    person's shell; returns the exit code and every character written to it."""
    return _on_a_terminal(args, None, env, timeout)


def _on_a_terminal(args: list[str], stdout, env: dict | None, timeout: float) -> tuple[int, str]:
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "fer8", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower if stdout is None else stdout,
        stderr=follower,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    written = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        written += chunk
    os.close(leader)
    return process.wait(timeout=timeout), written.decode(errors="replace")


def screen(written: str) -> list[str]:
    """The lines a terminal shows after ``written``: ``\\r`` returns to the line's start,
    ``ESC [ K`` erases to its end, other characters overwrite what is under the cursor."""
    lines, column = [""], 0
    text = _INVISIBLE.sub("", written)
    i = 0
    while i < len(text):
        if text.startswith("\x1b[K", i):
            lines[-1] = lines[-1][:column]
            i += 3
            continue
        char = text[i]
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append("")
            column = 0
        else:
            line = lines[-1]
            lines[-1] = line[:column] + char + line[column + 1 :]
            column += 1
        i += 1
    return [line.rstrip() for line in lines if line.strip()]
