"""dlib's 68-point landmark model as plain arrays: the reader of dlib's file.

dlib stores its ``shape_predictor`` (an ensemble of regression trees, Kazemi & Sullivan
2014) in its portable serialization: every integer is a control byte (its byte count in
the low four bits, 0x80 when negative) and that many little-endian bytes, and every
float is two such integers, a mantissa and a power of two. dlib reads the 99 MB file one
number at a time, building half a million small matrices: 0.3-0.5 s each time a process
loads it. This module reads it once into a few arrays (:class:`ShapeModel`), which
:mod:`fer8.pipeline.shape_cache` keeps in fer8's cache for later processes to map in
milliseconds, and :mod:`fer8.pipeline.shape_predictor` evaluates.

The file's layout (dlib/image_processing/shape_predictor.h): the version (1), the mean
shape (a column matrix of 2 x parts floats), the forests (a vector of cascades, each a
vector of trees, each tree a vector of splits ``idx1, idx2, thresh`` then a vector of
leaf matrices), then per cascade the landmark each feature pixel is anchored to and its
offset (x, y floats) from it. Python cannot walk 22 million numbers one at a time in
well under a second, so the numbers are found in bulk: each leaf matrix opens with the
same header bytes, which are searched for; every leaf is then walked in step with all
the others (one numpy operation per number of a leaf), and the splits between trees
likewise. Every boundary found is checked (each leaf ends where the next begins, each
tree's splits end where its leaves begin, the model ends where the file does), so a file
laid out otherwise is refused with :class:`~fer8.errors.ModelFormatError`, never read
wrong.
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ModelFormatError

logger = logging.getLogger(__name__)

# A control byte's size (its low four bits) and sign (its high bit); dlib ignores the
# three bits between.
_SIZE = (np.arange(256) & 0x0F).astype(np.int64)
_STEP = _SIZE + 1  # a whole number: its control byte and its bytes
_SIGN = np.where(np.arange(256) & 0x80, -1, 1).astype(np.int64)
# dlib's float_details marks infinities and NaN with these exponents.
_SPECIAL_EXPONENT = 32000
# Leaves read at once: bounds the memory the bulk steps use (a few MB a chunk).
_CHUNK = 8192


@dataclass(frozen=True)
class ShapeModel:
    """dlib's shape predictor as arrays (C cascades, T trees each, S splits and L = S + 1
    leaves per tree, F feature pixels per cascade, P parts).

    Attributes:
        initial_shape: The mean shape, (2P,) float32: x0, y0, x1, y1, ... in the face
            box's unit square.
        split_idx: (C, T, S, 2) int32: the two feature pixels each split compares.
        split_thresh: (C, T, S) float32: a split goes left when ``pixel[idx1] -
            pixel[idx2] > thresh``.
        leaf_values: (C, T, L, 2P) float32: what each leaf adds to the shape.
        anchor_idx: (C, F) int32: the part each feature pixel is placed from.
        deltas: (C, F, 2) float32: its offset from that part in the mean shape.
    """

    initial_shape: NDArray[np.float32]
    split_idx: NDArray[np.int32]
    split_thresh: NDArray[np.float32]
    leaf_values: NDArray[np.float32]
    anchor_idx: NDArray[np.int32]
    deltas: NDArray[np.float32]

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by field name (what :mod:`fer8.pipeline.shape_cache` stores)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def check(self) -> None:
        """Raise :class:`ModelFormatError` unless the arrays fit together: shapes that
        agree and indices in range, so that evaluating the model cannot index out of
        bounds (arrays read back from a cache file are checked too)."""
        parts2 = self.initial_shape.shape[0] if self.initial_shape.ndim == 1 else -1
        cascades, trees, splits = (
            self.split_thresh.shape if self.split_thresh.ndim == 3 else (-1,) * 3
        )
        features = self.anchor_idx.shape[1] if self.anchor_idx.ndim == 2 else -1
        expected = {
            "initial_shape": (parts2,),
            "split_idx": (cascades, trees, splits, 2),
            "leaf_values": (cascades, trees, splits + 1, parts2),
            "anchor_idx": (cascades, features),
            "deltas": (cascades, features, 2),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape or min(shape) < 1 or parts2 % 2:
                raise ModelFormatError(
                    f"landmark model arrays: {name} has shape "
                    f"{getattr(self, name).shape}, not {shape}"
                )
        if splits & (splits + 1):
            raise ModelFormatError(f"landmark model arrays: {splits} splits is not a full tree")
        if self.split_idx.min() < 0 or self.split_idx.max() >= features:
            raise ModelFormatError("landmark model arrays: a split's pixel index is out of range")
        if self.anchor_idx.min() < 0 or self.anchor_idx.max() >= parts2 // 2:
            raise ModelFormatError("landmark model arrays: an anchor index is out of range")


def read_shape_predictor(path: str | os.PathLike) -> ShapeModel:
    """Read dlib's serialized ``shape_predictor`` file into arrays.

    Raises:
        ModelFormatError: The file is not a shape predictor dlib wrote (or is laid out
            in a way this reader does not know: trees of unequal depth, numbers wider
            than a float's).
        OSError: It cannot be read.
    """
    path = Path(path)
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            raise ModelFormatError(f"{path}: an empty file, not a dlib shape predictor")
        # Mapped, not read: the pages are the system's file cache, not a copy. The map
        # closes when the last array that views it goes.
        data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        model = _Reader(data).read()
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from exc
    except (IndexError, ValueError) as exc:  # a number runs past the end, or similar
        raise ModelFormatError(f"{path}: not a dlib shape predictor ({exc})") from exc
    model.check()
    return model


class _Reader:
    """One pass over a serialized shape predictor (see the module's docstring)."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.buf = np.frombuffer(data, np.uint8)
        self.pos = 0

    # Numbers one at a time: the small parts (the header, the anchors and offsets).

    def numbers(self, count: int) -> list[int]:
        """The next ``count`` integers."""
        data, pos, end_of_file, values = self.data, self.pos, len(self.data), []
        for _ in range(count):
            control = data[pos]
            size = control & 0x0F
            end = pos + 1 + size
            if not 1 <= size <= 8 or control & 0x70 or end > end_of_file:
                raise ModelFormatError(f"no number at byte {pos}")
            value = int.from_bytes(data[pos + 1 : end], "little")
            values.append(-value if control & 0x80 else value)
            pos = end
        self.pos = pos
        return values

    def number(self) -> int:
        return self.numbers(1)[0]

    def floats(self, count: int) -> NDArray[np.float32]:
        numbers = np.array(self.numbers(2 * count), np.int64).reshape(count, 2)
        return _to_floats(numbers[:, 0], numbers[:, 1])

    def column(self) -> NDArray[np.float32]:
        """A ``matrix<float,0,1>``: rows and columns (negative in current dlib), values."""
        rows, cols = (abs(n) for n in self.numbers(2))
        if cols != 1:
            raise ModelFormatError(f"a matrix of {cols} columns, not a column")
        return self.floats(rows)

    # Numbers in bulk: the trees.

    def read(self) -> ShapeModel:
        version = self.number()
        if version != 1:
            raise ModelFormatError(f"shape predictor version {version}, not 1")
        initial_shape = self.column()
        parts2 = len(initial_shape)
        cascades, trees = self.number(), self.number()
        first_tree = self.pos
        splits = self.number()
        self.pos = int(self._skip(np.array([self.pos]), 4 * splits)[0])
        leaves = self.number()
        if leaves != splits + 1 or cascades < 1 or trees < 1:
            raise ModelFormatError(f"{cascades} cascades of {trees} trees of {leaves} leaves")
        header = bytes(self.data[self.pos : self._skip(np.array([self.pos]), 2)[0]])
        starts = self._leaf_starts(header, cascades * trees * leaves, first_tree, parts2)
        values, ends = self._leaves(starts + len(header), parts2)
        # Within a tree each leaf ends where the next one's header begins.
        within = np.arange(len(starts) - 1) % leaves != leaves - 1
        if not np.array_equal(ends[:-1][within], starts[1:][within]):
            raise ModelFormatError("leaf values do not follow one another")
        split_idx, split_thresh = self._splits(
            first_tree, ends[leaves - 1 :: leaves], starts[::leaves], trees, splits, leaves
        )
        self.pos = int(ends[-1])
        anchor_idx, deltas = self._anchors(cascades)
        if self.pos != len(self.data):
            raise ModelFormatError(f"{len(self.data) - self.pos} bytes after the model")
        return ShapeModel(
            initial_shape=initial_shape,
            split_idx=split_idx.reshape(cascades, trees, splits, 2),
            split_thresh=split_thresh.reshape(cascades, trees, splits),
            leaf_values=values.reshape(cascades, trees, leaves, parts2),
            anchor_idx=anchor_idx,
            deltas=deltas,
        )

    def _skip(self, positions: NDArray[np.int64], count: int) -> NDArray[np.int64]:
        """Where each of ``positions`` is after ``count`` numbers."""
        for _ in range(count):
            positions = positions + _STEP[self.buf[positions]]
        return positions

    def _walk(self, positions: NDArray[np.int64], count: int) -> NDArray[np.int64]:
        """The start of each of ``count`` numbers from each of ``positions``: (n, count)."""
        starts = np.empty((len(positions), count), np.int64)
        for k in range(count):
            starts[:, k] = positions
            positions = positions + _STEP[self.buf[positions]]
        return starts

    def _ints(self, starts: NDArray[np.int64]) -> NDArray[np.int64]:
        return _ints(self.buf, starts)[0]

    def _floats(self, starts: NDArray[np.int64]) -> NDArray[np.float32]:
        return _floats(self.buf, starts)[0]

    def _leaf_starts(self, header: bytes, count: int, start: int, parts2: int) -> NDArray[np.int64]:
        """Where each leaf matrix's header is: ``count`` of them after ``start``."""
        find, found = self.data.find, list[int]()
        least = len(header) + 4 * parts2  # a leaf: its header, then floats of 4+ bytes
        position = find(header, start)
        while position >= 0 and len(found) < count:
            found.append(position)
            position = find(header, position + least)
        if len(found) != count:
            raise ModelFormatError(f"{len(found)} leaf matrices, not {count}")
        return np.array(found, np.int64)

    def _leaves(
        self, starts: NDArray[np.int64], parts2: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Each leaf's ``parts2`` values and where it ends, a chunk of leaves at a time
        (:func:`_leaf_floats`)."""
        buf, width = self.buf, 6 * parts2
        if starts.size and starts.max() + 2 * width > len(buf):  # a small model: room to read
            buf = np.concatenate([buf, np.zeros(2 * width, np.uint8)])
        values = np.empty((len(starts), parts2), np.float32)
        ends = np.empty(len(starts), np.int64)
        for chunk in np.array_split(np.arange(len(starts)), max(1, len(starts) // _CHUNK)):
            values[chunk], ends[chunk] = _leaf_floats(buf, starts[chunk], parts2)
        return values, ends

    def _splits(
        self,
        first_tree: int,
        leaf_ends: NDArray[np.int64],
        first_leaves: NDArray[np.int64],
        trees: int,
        splits: int,
        leaves: int,
    ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Every tree's splits, read from the bytes between its previous tree's last leaf
        (or the first tree) and its own first leaf's header."""
        starts = np.concatenate([[first_tree], leaf_ends[:-1]])
        new_cascade = np.arange(len(starts)) % trees == 0
        new_cascade[0] = False  # the first cascade's size was read already
        counts = self._ints(starts[new_cascade])
        starts[new_cascade] += _STEP[self.buf[starts[new_cascade]]]
        tokens = self._walk(starts, 2 + 4 * splits)
        sizes = self._ints(tokens[:, [0, -1]])
        last = tokens[:, -1]
        if (
            np.any(counts != trees)
            or np.any(sizes != [splits, leaves])
            or not np.array_equal(last + _STEP[self.buf[last]], first_leaves)
        ):
            raise ModelFormatError("the trees' splits are not where their leaves begin")
        fields = tokens[:, 1:-1].reshape(-1, splits, 4)
        idx = self._ints(fields[..., :2].ravel()).reshape(-1, 2)
        thresh = self._floats(fields[..., 2].ravel())
        return idx.astype(np.int32), thresh

    def _anchors(self, cascades: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The anchor parts, then the offsets, of each cascade's feature pixels."""
        if self.number() != cascades:
            raise ModelFormatError("the anchors are not one list per cascade")
        anchors = [self.numbers(self.number()) for _ in range(cascades)]
        if self.number() != cascades:
            raise ModelFormatError("the offsets are not one list per cascade")
        deltas = [self.floats(2 * self.number()).reshape(-1, 2) for _ in range(cascades)]
        if len({len(a) for a in anchors + deltas}) != 1:
            raise ModelFormatError("cascades with different numbers of feature pixels")
        return np.array(anchors, np.int32), np.array(deltas, np.float32)


def _ints(
    buf: NDArray[np.uint8], starts: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The integers (of up to 4 bytes) that begin at ``starts``, and where each ends."""
    control = buf[starts]
    size = _SIZE[control]
    if starts.size and (size.min() < 1 or size.max() > 4 or np.any(control & 0x70)):
        raise ModelFormatError("no number, or one wider than 4 bytes, in the trees")
    # Byte by byte: numpy gathers single bytes far faster than unaligned words.
    value = buf[starts + 1].astype(np.int64)
    for k in range(1, int(size.max()) if starts.size else 0):
        wide = np.flatnonzero(size > k)
        value[wide] |= buf[starts[wide] + 1 + k].astype(np.int64) << (8 * k)
    return value * _SIGN[control], starts + 1 + size


def _floats(
    buf: NDArray[np.uint8], starts: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The floats (a mantissa, then an exponent) that begin at ``starts``, and where
    each ends."""
    mantissa, middle = _ints(buf, starts)
    exponent, ends = _ints(buf, middle)
    return _to_floats(mantissa, exponent), ends


def _to_floats(mantissa: NDArray[np.int64], exponent: NDArray[np.int64]) -> NDArray[np.float32]:
    """dlib's floats from their mantissas and exponents: the mantissa made a float, then
    scaled (dlib's ``ldexpf``), exact for the 24-bit mantissas of floats."""
    if exponent.size and np.abs(exponent).max() >= _SPECIAL_EXPONENT:
        raise ModelFormatError("an infinite or NaN value")
    return np.ldexp(mantissa.astype(np.float32), exponent.astype(np.int32))


def _leaf_floats(
    buf: NDArray[np.uint8], starts: NDArray[np.int64], count: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The ``count`` floats that begin at each of ``starts`` (a chunk of leaves), and
    where each leaf's floats end.

    Most floats take 6 bytes: a 3-byte mantissa (control byte 0x03, or 0x83 when
    negative) and a 1-byte exponent (0x01 or 0x81). The ``6 * count`` bytes from each
    leaf's start are taken at once, and the floats up to the first one not laid out so
    are read as three 16-bit words each, their bits assembled directly (a 3-byte
    mantissa is a normalised 24-bit one); each control byte in its place puts the next
    one in place. Half the leaves are read whole so. That first other float (a
    mantissa whose low bytes are zero, which dlib drops) is read alone, and the leaves
    with floats left are then walked a float at a time, all in step.
    """
    rows = len(starts)
    values = np.empty((rows, count), np.float32)
    columns = np.arange(count)
    window = np.lib.stride_tricks.sliding_window_view(buf, 6 * count)
    words = window[starts].view("<u2").reshape(rows, count, 3)
    head, middle, tail = (words[..., k].astype(np.uint32) for k in range(3))
    exponent = tail >> 8
    biased = np.where(tail & 0x80, 150 - exponent, 150 + exponent)  # m * 2**e; wraps if < 0
    regular = (head & 0x7F == 3) & (tail & 0x7F == 1) & (middle >= 0x8000) & (biased - 1 < 254)
    run = np.where(regular.all(axis=1), count, np.argmin(regular, axis=1))
    bits = (head & 0x80) << 24 | biased << 23 | (middle & 0x7FFF) << 8 | head >> 8
    values[:] = bits.view(np.float32)  # right up to each row's run; the rest is overwritten
    ends, read = starts + 6 * run, run
    alone = np.flatnonzero(read < count)
    values[alone, read[alone]], ends[alone] = _floats(buf, ends[alone])
    read[alone] += 1
    # The rest, a float at a time (assuming 1-byte exponents, checked after).
    rest = np.flatnonzero(read < count)
    if rest.size:
        left, position = count - read[rest], ends[rest]
        at = np.empty((len(rest), int(left.max()) + 1), np.int64)
        for step in range(at.shape[1]):
            at[:, step] = position
            position = np.minimum(position + 3 + _SIZE[buf[position]], len(buf) - 1)
        valid = columns[: at.shape[1] - 1] < left[:, None]
        floats, after = _floats(buf, at[:, :-1][valid])
        if not np.array_equal(after, at[:, 1:][valid]):
            raise ModelFormatError("a leaf value that is not a float's")
        row, k = np.nonzero(valid)
        values[rest[row], read[rest][row] + k] = floats
        ends[rest] = at[np.arange(len(rest)), left]
    return values, ends
