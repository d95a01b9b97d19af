"""Importing Keras (and TensorFlow) once, without TensorFlow's start-up chatter.

TensorFlow 2.21 writes lines straight to file descriptor 2 when it is imported (absl's
"All log messages before absl::InitializeLog()", CUDA probing, CPU feature notices) and
again when its first operation initialises the devices ("failed call to cuInit" on a
machine without a GPU), whatever ``TF_CPP_MIN_LOG_LEVEL`` says. A library that promises
to print nothing cannot leave that to its callers, so every fer8 module that needs Keras
gets it from :func:`import_keras`, which does both steps with descriptor 2 pointed at
``/dev/null``. With the ``fer8`` logger at DEBUG (``fer8 -vv``) the chatter is kept,
since it is what one needs to see when TensorFlow itself misbehaves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from types import ModuleType

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_done = False


def import_keras() -> ModuleType:
    """Return the ``keras`` module, imported and its devices initialised quietly.

    The first call takes a few seconds (the import); later ones return at once. While
    it runs, anything another thread writes to file descriptor 2 is lost too, which is
    why it is done once, and only here.

    Raises:
        ImportError: Keras or its backend cannot be imported (the error is raised
            after descriptor 2 is restored, so its message is seen).
    """
    global _done
    with _lock:
        if not _done:
            quiet = not logging.getLogger("fer8").isEnabledFor(logging.DEBUG)
            if quiet:
                # Hides TensorFlow's C++ INFO and WARNING lines after start-up too
                # (e.g. tf.data's "End of sequence" notices); a user's own setting wins.
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            with _stderr_silenced(quiet):
                import keras

                if "tensorflow" in sys.modules:  # Keras's backend, or tf.data's
                    sys.modules["tensorflow"].config.list_physical_devices()
            _done = True
            logger.debug("Keras %s on %s", keras.__version__, keras.backend.backend())
    import keras

    return keras


@contextlib.contextmanager
def _stderr_silenced(active: bool) -> Iterator[None]:
    """Points file descriptor 2 at /dev/null for the duration (when ``active``)."""
    if not active:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
