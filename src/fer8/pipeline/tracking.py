"""Following faces from frame to frame: a track id per face, and probabilities smoothed
along each track.

Matching is by box overlap and position, checked by a coarse look at the face: between
sampled frames a fifth of a second apart a face moves little and looks the same, and a
tracker that needs no embedding network costs nothing next to the classifier. A face
that leaves the picture and comes back after ``max_gap`` seconds gets a new id; so does
one that looks suddenly different (another person in the same place), and a scene cut
(:func:`fer8.pipeline.video.is_cut`) ends every track. A face that the picture's edge
cuts is matched by its box alone: its landmarks, and so its look, are not to be trusted.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fer8.results import Box

#: Seconds of each track's probabilities averaged when a caller does not say
#: (``--smooth``): none, each frame keeps its own.
DEFAULT_SMOOTHING = 0.0

#: Boxes in consecutive samples overlapping at least this much are the same face.
MIN_IOU = 0.3
#: Boxes overlapping less are still the same face when their centres are within this
#: many face widths (a fast head turn, a frame skipped by the detector).
MAX_SHIFT = 1.0
#: A track not seen for longer than this (seconds) ends; its face, if it comes back, gets
#: a new id.
MAX_GAP = 1.0
#: A face whose look (:func:`appearance`) correlates less than this with its track's last
#: is another face. Different expressions of one person stay above it (JAFFE: at least
#: 0.70 over 10 women's 7 expressions each), while the two example portraits, one
#: person replaced by another at the same place, are at 0.49.
MIN_LIKENESS = 0.6
#: A box this close to the picture's edge (a fraction of its width) is of a face the edge
#: cuts, whose look is not compared (see :meth:`Tracker.update`).
EDGE = 0.1


def appearance(face: NDArray[np.uint8]) -> NDArray[np.float32]:
    """An aligned face crop's look, for :class:`Tracker`: the crop in grey at 16x16, less
    its mean, of unit norm, so that light and contrast do not count, only the pattern.
    Aligned crops put the eyes in fixed places, so this compares faces, not poses."""
    import cv2

    gray = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if face.ndim == 3 else face
    look = cv2.resize(gray, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    look -= look.mean()
    norm = float(np.linalg.norm(look))
    return look / norm if norm > 1e-3 else look


@dataclass
class _Track:
    id: int
    box: Box
    seen: float
    look: NDArray[np.float32] | None = None


class Tracker:
    """Gives each face box a track id that stays the same while the face stays in view.

    Call :meth:`update` once per sampled frame, in order. Each new box is matched to the
    live track whose last box overlaps it most (IoU at least ``min_iou``) or, failing
    that, whose centre is nearest (within ``max_shift`` face widths); pairs are taken
    best first, so two faces side by side never swap ids for a better total. When the
    faces' crops are given, a box whose face looks unlike the track's last (correlation
    below ``min_likeness``) is not that track's. An unmatched box starts a new track.

    Args:
        min_iou: See :data:`MIN_IOU`.
        max_shift: See :data:`MAX_SHIFT`.
        max_gap: See :data:`MAX_GAP`.
        min_likeness: See :data:`MIN_LIKENESS`.
    """

    def __init__(
        self,
        *,
        min_iou: float = MIN_IOU,
        max_shift: float = MAX_SHIFT,
        max_gap: float = MAX_GAP,
        min_likeness: float = MIN_LIKENESS,
    ) -> None:
        self.min_iou = min_iou
        self.max_shift = max_shift
        self.max_gap = max_gap
        self.min_likeness = min_likeness
        self._tracks: list[_Track] = []
        self._next_id = 1

    def update(
        self,
        boxes: Sequence[Box],
        time: float,
        faces: Sequence[NDArray[np.uint8] | None] | None = None,
        *,
        picture: tuple[int, int] | None = None,
        cut: bool = False,
    ) -> list[int]:
        """The track id of each box of one frame at ``time`` seconds, in the boxes' order.

        Args:
            boxes: The frame's face boxes.
            time: The frame's time, in seconds.
            faces: Each box's aligned face crop (RGB or grey), to check that a face still
                looks like its track; ``None`` matches by the boxes alone, and a ``None``
                entry (a crop that could not be aligned, framed otherwise) skips the check
                for that box.
            picture: The frame's width and height. A face that the frame's edge cuts
                (its box touches the edge: coming into the picture or leaving it) is
                matched by its box alone, and its track keeps the look it had: landmarks
                fitted to half a face align it badly, so its crop looks like no one.
            cut: The frame starts a new shot: every track ends, each box gets a new id.
        """
        if cut:
            self._tracks = []
        self._tracks = [t for t in self._tracks if time - t.seen <= self.max_gap]
        looks = (
            [
                None if face is None or (picture and _at_edge(box, *picture)) else appearance(face)
                for box, face in zip(boxes, faces)
            ]
            if faces is not None
            else [None] * len(boxes)
        )
        pairs = []
        for b, box in enumerate(boxes):
            for t, track in enumerate(self._tracks):
                look = looks[b]
                if (
                    track.look is not None
                    and look is not None
                    and float(track.look @ look) < self.min_likeness
                ):
                    continue  # someone else, where that face was
                score = self._score(track.box, box)
                if score is not None:
                    pairs.append((score, b, t))
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for _, b, t in sorted(pairs, reverse=True):
            if ids[b] is None and t not in taken:
                ids[b] = self._tracks[t].id
                taken.add(t)
                self._tracks[t].box, self._tracks[t].seen = boxes[b], time
                if looks[b] is not None:
                    self._tracks[t].look = looks[b]
        for b, box in enumerate(boxes):
            if ids[b] is None:
                ids[b] = self._next_id
                self._tracks.append(_Track(self._next_id, box, time, looks[b]))
                self._next_id += 1
        return [i for i in ids if i is not None]  # every entry is set above

    def _score(self, old: Box, new: Box) -> float | None:
        """How well two boxes match: an overlap scores above any shift; ``None`` if
        they are not the same face."""
        iou = old.iou(new)
        if iou >= self.min_iou:
            return 1.0 + iou
        width = (old.w + new.w) / 2
        shift = math.dist(
            (old.x + old.w / 2, old.y + old.h / 2), (new.x + new.w / 2, new.y + new.h / 2)
        ) / max(width, 1)
        # Also about the same size: a small face passing in front of a large one is
        # another face.
        similar = 0.5 <= new.w / max(old.w, 1) <= 2.0
        return 1.0 - shift / self.max_shift if shift <= self.max_shift and similar else None


def _at_edge(box: Box, width: int, height: int) -> bool:
    # A detector's box of a half face ends a pixel or two short of the edge.
    near = EDGE * box.w
    return (
        box.x <= near
        or box.y <= near
        or box.x + box.w >= width - near
        or box.y + box.h >= height - near
    )


@dataclass
class _History:
    times: deque[float] = field(default_factory=deque)
    rows: deque[NDArray[np.float32]] = field(default_factory=deque)
    seen: float = 0.0


class Smoother:
    """Averages each track's probabilities over the last ``window`` seconds.

    The window trails the frame (the frame itself and those before it), so smoothing
    works on a live camera and needs only the last ``window`` seconds of each track;
    tracks not seen for longer are forgotten.
    """

    def __init__(self, window: float) -> None:
        if window < 0:
            raise ValueError(f"the smoothing window must be 0 or more seconds, got {window}")
        self.window = window
        self._tracks: dict[int, _History] = {}

    def update(self, track: int, time: float, row: NDArray[np.float32]) -> NDArray[np.float32]:
        """Record one face's probabilities and return the track's average over the window."""
        history = self._tracks.setdefault(track, _History())
        history.times.append(time)
        history.rows.append(np.asarray(row, np.float32))
        history.seen = time
        while history.times and history.times[0] < time - self.window - 1e-6:
            history.times.popleft()
            history.rows.popleft()
        for other in [k for k, h in self._tracks.items() if time - h.seen > self.window]:
            del self._tracks[other]
        return np.mean(history.rows, axis=0).astype(np.float32)
