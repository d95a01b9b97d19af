"""fer8.progress: the command line's bars, replayed as a terminal would show them."""

from __future__ import annotations

import io
import logging
import time

from terminal import screen

from fer8.progress import ProgressBar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_messages_and_log_records_take_lines_of_their_own(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(logging.Formatter("fer8: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        with ProgressBar("predict", 4) as bar:
            bar.update(1)
            bar.echo("fer8: b.jpg: corrupt or truncated image")
            bar.update(1)
            logging.getLogger("fer8.test").warning("a warning from the library")
            bar.update(2)
        assert handler.stream is terminal  # given back when the bar ends
    finally:
        logging.getLogger().removeHandler(handler)
    lines = screen(terminal.getvalue())
    assert lines[:2] == [
        "fer8: b.jpg: corrupt or truncated image",
        "fer8: a warning from the library",
    ]
    assert len(lines) == 3 and lines[2].startswith("predict") and lines[2].endswith("100%")


def test_off_a_terminal_messages_are_plain_lines(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    with ProgressBar("predict", 2) as bar:  # hidden: stderr is no terminal
        bar.update(1)
        bar.echo("fer8: b.jpg: empty file")
        bar.update(1)
    assert stream.getvalue() == "fer8: b.jpg: empty file\n"


def test_the_time_left_is_timed_from_the_restart(monkeypatch):
    """A minute of start-up, then 10 of 100 steps in a second: 9 s left, not 9 minutes."""
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with ProgressBar("predict", 100) as bar:
        now[0] += 60
        bar.restart_clock()
        now[0] += 1
        bar.update(10)
        assert screen(terminal.getvalue())[-1].endswith("10%  00:00:09")
        bar.update(90)
    with ProgressBar("predict", 100) as bar:  # without the restart
        now[0] += 61
        bar.update(10)
        assert screen(terminal.getvalue())[-1].endswith("10%  00:09:09")
        bar.update(90)
