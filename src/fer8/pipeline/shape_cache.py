"""dlib's landmark model converted once to arrays in fer8's cache, mapped in milliseconds.

dlib takes 0.3-0.5 s to load its 99 MB model in every process. fer8 reads it once
(:func:`fer8.pipeline.shape_model.read_shape_predictor`, about 0.7 s) and keeps the
arrays in one file, ``<fer8 cache>/landmarks/<model>-<hash of its path>.shapes``, that
later processes map (:func:`load`) without reading it: the pages the trees touch are the
system's file cache. The file says which model file it was made from (its size and
modification time): a changed model is converted again. It is written whole to a
temporary name and renamed, so a reader never sees half of it, and checked on every
load (its layout, a CRC-32 of its arrays, the indices in range): a damaged or foreign
file is reported in one line and made again, never used.

The first process that needs the model converts it: ``fer8 predict``'s landmark process
after it has served (see :mod:`fer8.pipeline.landmark_worker`), or a process of its own
started at the lowest priority when the process that used dlib ends
(:func:`convert_later`), so the first run is no slower than dlib's load. ``python -m fer8.pipeline.shape_cache MODEL`` converts
``MODEL`` now.

File layout: the magic line, a 4-byte little-endian header length, the JSON header
(the source file's size and time, each array's dtype, shape and offset, the arrays'
CRC-32), then the arrays, each at an offset that is a multiple of 64.
"""

from __future__ import annotations

import atexit
import json
import logging
import mmap
import os
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from fer8.errors import ModelFormatError
from fer8.pipeline.landmark_worker import (
    CACHE_FORMAT,
    CACHE_MAGIC,
    cache_file,
    read_cache_header,
    source_key,
)
from fer8.pipeline.shape_model import ShapeModel, read_shape_predictor

logger = logging.getLogger(__name__)

_ALIGN = 64
_lock = threading.Lock()
_later: set[str] = set()  # model files this process converts when it ends


def load(model_path: str | os.PathLike) -> ShapeModel | None:
    """The arrays of the model file ``model_path`` from fer8's cache, mapped; None when
    there is no current copy (never made, or made from another version of the file), or
    when the copy cannot be used (damaged, or written by another version of fer8): that
    is reported in one line and the file removed, to be made again."""
    model_path = Path(model_path)
    path = cache_file(model_path)
    if not path.is_file():
        return None
    try:
        header = read_cache_header(path)
        if header is None:
            raise ModelFormatError("not a copy this version of fer8 reads")
        if header.get("source") != source_key(model_path):
            logger.debug("%s was made from another version of %s", path, model_path)
            return None
        return _load(path, header)
    except (ModelFormatError, OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning(
            "fer8's copy of the landmark model, %s, cannot be used (%s): it is made again",
            path,
            exc,
        )
        path.unlink(missing_ok=True)
        return None


def _load(path: Path, header: dict) -> ShapeModel:
    with open(path, "rb") as file:
        data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    start, end = header["payload"]
    if len(data) != end:
        raise ModelFormatError(f"{len(data)} bytes, not {end}")
    if zlib.crc32(memoryview(data)[start:end]) != header["crc32"]:
        raise ModelFormatError("its arrays do not match their checksum")
    arrays = {}
    for name, (dtype, shape, offset) in header["arrays"].items():
        count = int(np.prod(shape))
        arrays[name] = np.frombuffer(data, np.dtype(dtype), count, offset).reshape(shape)
    model = ShapeModel(**arrays)
    model.check()
    return model


def save(model: ShapeModel, model_path: str | os.PathLike, source: dict | None = None) -> Path:
    """Write ``model``, read from ``model_path``, to fer8's cache (whole, then renamed).

    Args:
        source: The model file's key (:func:`~fer8.pipeline.landmark_worker.source_key`)
            as it was when it was read; now when None.

    Raises:
        OSError: The cache cannot be written.
    """
    model_path = Path(model_path)
    path = cache_file(model_path)
    arrays, offset = {}, 0
    for name, array in model.arrays().items():
        arrays[name] = (array.dtype.str, list(array.shape), offset)
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    header = {
        "format": CACHE_FORMAT,
        "model": str(model_path),
        "source": source or source_key(model_path),
        "arrays": arrays,
    }
    # The header's size depends on the offsets, which depend on the header's size:
    # the arrays start after room for the header, rounded up.
    room = -(-(len(CACHE_MAGIC) + 4 + len(json.dumps(header)) + 200) // _ALIGN) * _ALIGN
    payload = np.zeros(offset, np.uint8)
    for name, array in model.arrays().items():
        where = arrays[name][2]
        payload[where : where + array.nbytes] = np.ascontiguousarray(array).view(np.uint8).ravel()
    header["arrays"] = {name: (d, s, o + room) for name, (d, s, o) in arrays.items()}
    header["payload"] = [room, room + len(payload)]
    header["crc32"] = zlib.crc32(payload.data)
    text = json.dumps(header).encode()
    head = CACHE_MAGIC + len(text).to_bytes(4, "little") + text
    if len(head) > room:
        raise AssertionError("the header outgrew its room")  # the 200 bytes of slack
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{path.name}.*.partial"):  # a writer killed an hour ago
        if time.time() - stale.stat().st_mtime > 3600:
            stale.unlink(missing_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as file:
            file.write(head.ljust(room, b"\0"))
            file.write(payload.data)
        os.replace(partial, path)  # a reader sees the old file or the whole new one
    finally:
        partial.unlink(missing_ok=True)
    return path


def convert(model_path: str | os.PathLike) -> ShapeModel:
    """Read dlib's model file and keep its arrays in fer8's cache (a cache that cannot
    be written is logged, not raised: the arrays are still returned).

    Raises:
        ModelFormatError: The file is not a shape predictor this reader knows.
    """
    model_path = Path(model_path)
    source = source_key(model_path)  # before reading: a file changed meanwhile is made again
    model = read_shape_predictor(model_path)
    try:
        path = save(model, model_path, source)
        logger.debug("landmark model %s converted to %s", model_path, path)
    except OSError as exc:
        logger.warning("could not keep the landmark model's arrays in fer8's cache: %s", exc)
    return model


def convert_later(model_path: str | os.PathLike) -> None:
    """Convert ``model_path`` in a process of its own, at the lowest priority, started
    when this process ends (so that it takes no CPU from this one's work) and outliving
    it. Once per model file and process."""
    path = str(model_path)
    with _lock:
        if path in _later:
            return
        _later.add(path)
    atexit.register(convert_in_background, path)


def convert_in_background(model_path: str | os.PathLike) -> subprocess.Popen | None:
    """Start converting ``model_path`` now in a process of its own, at the lowest
    priority from its first import on, not ended with this one or by this terminal's
    Ctrl-C (None if it could not start)."""
    code = (
        "import os, sys\n"
        "os.nice(19) if hasattr(os, 'nice') else None\n"
        "from fer8.pipeline.shape_cache import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    try:
        return subprocess.Popen(
            [sys.executable, "-c", code, str(model_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        logger.debug("could not start converting the landmark model: %s", exc)
        return None


def main(argv: list[str] | None = None) -> int:
    """``python -m fer8.pipeline.shape_cache MODEL``: convert ``MODEL`` now (at the
    lowest priority, unless a current copy exists)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m fer8.pipeline.shape_cache MODEL.dat")
    if hasattr(os, "nice"):
        os.nice(19)
    try:
        if load(args[0]) is None:
            convert(args[0])
    except (ModelFormatError, OSError) as exc:
        raise SystemExit(f"fer8: error: {exc}") from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
