"""Expressions over time: each track's probabilities through a video, as a picture and as
a few words.

:class:`Timeline` keeps, per track, a time and a row of probabilities per sampled frame
(a few dozen bytes each: a ten-minute video at 5 fps is 3,000 rows). ``fer8 predict
--annotate`` plots it; the LINE bot describes it (:meth:`Timeline.summary`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer8.labels import display_name
from fer8.results import FrameResult

#: A label held for less than this (seconds) is a flicker, not a change of expression,
#: in :meth:`Timeline.segments`.
MIN_SEGMENT = 1.0


@dataclass(frozen=True)
class Segment:
    """A stretch of one track during which one expression leads."""

    label: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class Timeline:
    """Each track's probabilities over time, collected from a video's frame results."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)
        self._times: dict[int, list[float]] = {}
        self._rows: dict[int, list[list[float]]] = {}

    def add(self, result: FrameResult) -> None:
        """Record one sampled frame (frames with an error have no faces)."""
        for face in result.faces:
            self._times.setdefault(face.track, []).append(float(result.time or 0.0))
            self._rows.setdefault(face.track, []).append(
                [face.probabilities[label] for label in self.labels]
            )

    def extend(self, results: Iterable[FrameResult]) -> Timeline:
        for result in results:
            self.add(result)
        return self

    @property
    def tracks(self) -> list[int]:
        """Track ids in order of first appearance."""
        return list(self._times)

    def segments(self, track: int, min_duration: float = MIN_SEGMENT) -> list[Segment]:
        """The track's leading expression as stretches of time; a stretch shorter than
        ``min_duration`` joins the one before it (or, at the start, the one after)."""
        times, rows = self._times[track], self._rows[track]
        step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        segments: list[Segment] = []
        for t, row in zip(times, rows):
            label = self.labels[int(np.argmax(row))]
            if segments and segments[-1].label == label:
                segments[-1] = Segment(label, segments[-1].start, t + step)
            else:
                segments.append(Segment(label, t, t + step))
        merged: list[Segment] = []
        for segment in segments:
            if merged and (segment.duration < min_duration or merged[-1].label == segment.label):
                merged[-1] = Segment(merged[-1].label, merged[-1].start, segment.end)
            elif merged and merged[-1].duration < min_duration:
                merged[-1] = Segment(segment.label, merged[-1].start, segment.end)
            else:
                merged.append(segment)
        return merged

    def dominant(self, track: int) -> str:
        """The track's expression with the highest mean probability."""
        return self.labels[int(np.argmax(np.mean(self._rows[track], axis=0)))]

    def summary(self, track: int) -> str:
        """A track in a few words: ``Happy throughout``, or ``Neutral, then Happy from
        2.4 s (mostly Happy)`` (at most four changes are named)."""
        segments = self.segments(track)
        if len(segments) == 1:
            return f"{display_name(segments[0].label)} throughout"
        parts = [display_name(segments[0].label)]
        parts += [f"then {display_name(s.label)} from {s.start:.1f} s" for s in segments[1:5]]
        if len(segments) > 5:
            parts.append(f"and {len(segments) - 5} more changes")
        return ", ".join(parts) + f" (mostly {display_name(self.dominant(track))})"

    def plot(self, path: str | os.PathLike, *, title: str = "") -> Path:
        """Draw :meth:`figure` into ``path`` (PNG)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure(title=title).savefig(path, dpi=100)
        return path

    def figure(self, *, title: str = ""):
        """Each track's probabilities over time, one panel per track, as a matplotlib
        ``Figure``. Uses matplotlib's object API (no pyplot), so it needs no display and
        keeps no global state."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from fer8.pipeline.annotate import label_color

        tracks: list[int | None] = [*self.tracks] or [None]
        figure = Figure(figsize=(10, 1.0 + 1.8 * len(tracks)), constrained_layout=True)
        FigureCanvasAgg(figure)
        axes = figure.subplots(len(tracks), 1, sharex=True, squeeze=False)[:, 0]
        for axis, track in zip(axes, tracks):
            if track is None:
                axis.text(
                    0.5, 0.5, "no face found", ha="center", va="center", transform=axis.transAxes
                )
            else:
                rows = np.asarray(self._rows[track])
                for column, label in enumerate(self.labels):
                    color = tuple(c / 255 for c in label_color(label))
                    axis.plot(
                        self._times[track],
                        rows[:, column],
                        ".-",
                        markersize=3,
                        color=color,
                        label=display_name(label),
                    )
                axis.set_title(f"face #{track}", loc="left", fontsize="medium")
            axis.set_ylabel("probability")
            # Room above 1 and below 0: a certain expression's curve is not drawn on the
            # frame's edge, where it could not be seen.
            axis.set_ylim(-0.04, 1.06)
            axis.set_yticks([0, 0.5, 1])
            axis.grid(alpha=0.3)
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        axes[-1].set_xlabel("time (s)")
        if title:
            figure.suptitle(title)
        return figure
