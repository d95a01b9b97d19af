"""dlib's landmark model in a process of its own: where the model file is, whether a core
is free for the process, and the process's code.

Only the standard library is imported here, so the ``fer8`` command can start the
process before it imports anything heavy (:mod:`fer8.console`);
:class:`fer8.pipeline.landmarking.LandmarkProcess` talks to it.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

from fer8.errors import ModelNotFoundError

LANDMARK_MODEL_FILE = "shape_predictor_68_face_landmarks.dat"


def landmark_model_path() -> Path:
    """Locate dlib's 68-point model: ``$FER8_LANDMARK_MODEL`` or face-recognition-models.

    Raises:
        ModelNotFoundError: Neither is available.
    """
    override = os.environ.get("FER8_LANDMARK_MODEL")
    if override:
        path = Path(override)
        if not path.is_file():
            raise ModelNotFoundError(f"FER8_LANDMARK_MODEL={override}: no such file")
        return path
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / "models" / LANDMARK_MODEL_FILE
            if path.is_file():
                return path
    raise ModelNotFoundError(
        f"dlib's landmark model {LANDMARK_MODEL_FILE} was not found: "
        "pip install face-recognition-models, or set FER8_LANDMARK_MODEL to the file"
    )


def has_a_core() -> bool:
    """Whether a core looks free for the process (Linux: at least two usable cores and
    a load average below their number less one). On a busy machine the process would
    only add its start-up to the work: there the model is better loaded in process.
    ``$FER8_LANDMARK_PROCESS`` set to 1 or 0 decides instead (benchmarks)."""
    forced = os.environ.get("FER8_LANDMARK_PROCESS")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        cores = len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not Linux: no cheap way to tell
        return False
    return cores >= 2 and load <= cores - 1


OK = b"ok\0\0"
# The landmark process: loads the model, says ok, then for each face reads a header
# (height, width, left, top, right, bottom as int32) and the RGB pixels, and writes ok
# and 68 x, y int32 points; it ends at the end of its input, at once: the parent waits
# for it, and freeing the model's half a million small arrays one by one would only
# make it wait longer.
WORKER = """
import os
import sys
import numpy as np
import dlib
predictor = dlib.shape_predictor(sys.argv[1])
read, write = sys.stdin.buffer, sys.stdout.buffer
write.write(b"ok\\0\\0"); write.flush()
while True:
    header = read.read(24)
    if len(header) < 24:
        os._exit(0)
    height, width, left, top, right, bottom = np.frombuffer(header, np.int32).tolist()
    image = np.frombuffer(read.read(height * width * 3), np.uint8).reshape(height, width, 3)
    shape = predictor(image, dlib.rectangle(left, top, right, bottom))
    points = np.array([(p.x, p.y) for p in shape.parts()], np.int32)
    write.write(b"ok\\0\\0" + points.tobytes()); write.flush()
"""


_lock = threading.Lock()
_prestarted: dict[Path, subprocess.Popen] = {}  # started early, not yet taken, by model


def start(path: Path) -> subprocess.Popen:
    """Start a landmark process for the model file ``path`` (it loads the model at once)."""
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def prestart() -> None:
    """Start a landmark process for the default model now, for a
    :class:`~fer8.pipeline.landmarking.LandmarkProcess` made later in this process to
    take (:func:`take`): the model then loads while this process imports the rest of
    fer8. Nothing happens when no model file is found (the later load reports it)."""
    try:
        path = landmark_model_path()
    except ModelNotFoundError:
        return
    with _lock:
        if path not in _prestarted:
            _prestarted[path] = start(path)
            if len(_prestarted) == 1:
                atexit.register(_end_untaken)


def prestarted() -> bool:
    """Whether a process started by :func:`prestart` waits to be taken."""
    return bool(_prestarted)


def take(path: Path) -> subprocess.Popen | None:
    """The process :func:`prestart` started for ``path``, once; None if none was."""
    with _lock:
        return _prestarted.pop(path, None)


def _end_untaken() -> None:
    """End the processes no one took (a usage error, ``--help``), loading or not."""
    with _lock:
        processes = list(_prestarted.values())
        _prestarted.clear()
    for process in processes:
        process.kill()
        process.wait()
