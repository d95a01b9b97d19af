"""The command line's progress bars: click's, on stderr, with every other message on a
line of its own.

A bar on a terminal is one line redrawn in place, without a newline; a message written
meanwhile (a file that could not be read, a warning) would run on from the bar's end
(``predict [####---] 50%  00:00:09fer8: img_100.jpg: corrupt ...``). :class:`ProgressBar`
clears the bar's line first, writes the message and draws the bar again below it, both
for its own :meth:`ProgressBar.echo` and for log records, whose stderr handlers it
borrows while it is drawn. Only the CLI uses this module.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import click

#: Carriage return, then erase to the end of the line (ANSI "EL"): the bar's line is
#: blank again, and the cursor at its start.
_CLEAR_LINE = "\r\x1b[K"


class ProgressBar:
    """A click progress bar on stderr, drawn only on a terminal (or when asked).

    Call it with a number of steps done (or use :meth:`update`); it closes itself when
    the last step is done. Use :meth:`echo` for messages while it is open.

    Args:
        label: Shown before the bar.
        total: Steps to the end.
        hidden: Draw nothing; ``None``: hidden unless stderr is a terminal.
    """

    def __init__(self, label: str, total: int, *, hidden: bool | None = None) -> None:
        if hidden is None:
            hidden = not sys.stderr.isatty()
        self._bar = click.progressbar(length=total, label=label, file=sys.stderr, hidden=hidden)
        self._lock = threading.RLock()  # log records may come from worker threads
        self._bar.__enter__()
        self._open = True
        self._borrowed: list[tuple[logging.StreamHandler, Any]] = []
        if self._drawn:
            self._borrow_log_handlers()

    @property
    def _drawn(self) -> bool:
        """Whether the bar is a line redrawn in place (on a terminal, not hidden); off a
        terminal click prints only the label, on a line of its own."""
        isatty = getattr(self._bar.file, "isatty", None)
        return self._open and not self._bar.hidden and bool(isatty and isatty())

    def __call__(self, steps: int = 1) -> None:
        self.update(steps)

    def update(self, steps: int = 1) -> None:
        """Count ``steps`` more done; the last one closes the bar."""
        with self._lock:
            if not self._open:
                return
            self._bar.update(steps)
            if self._bar.length is not None and self._bar.pos >= self._bar.length:
                self.close()

    def restart_clock(self) -> None:
        """Time what is left from now on: work that had to start first (a Ray cluster's
        actors loading their models) would otherwise count as the rate, and the time
        left would read minutes for a run of seconds."""
        with self._lock:
            self._bar.start = self._bar.last_eta = time.time()
            self._bar.avg = []
            self._bar.eta_known = False

    def echo(self, message: str) -> None:
        """Write ``message`` on stderr on a line of its own, the bar drawn again below it."""
        with self._lock:
            if not self._drawn:
                click.echo(message, err=True)
                return
            click.echo(_CLEAR_LINE + message, file=self._bar.file)
            # click redraws only a line that changed; this one is gone from the screen.
            self._bar._last_line = None
            self._bar.render_progress()

    def close(self) -> None:
        """End the bar (a newline after it); the log handlers write as before."""
        with self._lock:
            if not self._open:
                return
            self._open = False
            for handler, stream in self._borrowed:
                handler.setStream(stream)
            self._borrowed = []
            self._bar.__exit__(None, None, None)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _borrow_log_handlers(self) -> None:
        """Route the root logger's stderr handlers through :meth:`echo` while open."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                sys.stderr,
                sys.__stderr__,
            ):
                self._borrowed.append((handler, handler.setStream(_Lines(self))))


class _Lines:
    """A text stream that hands each complete line to :meth:`ProgressBar.echo`."""

    def __init__(self, bar: ProgressBar) -> None:
        self._bar = bar
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._bar.echo(line)
        return len(text)

    def flush(self) -> None:
        pass
