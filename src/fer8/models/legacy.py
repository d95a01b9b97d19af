"""The reader of model files an older fer8 wrote (format 1: Keras weights, no ONNX graph).

Reading one needs Keras, which lives in the training package (the ``train`` extra), and
``fer8.models`` must not depend on training: training imports models, never the other way.
So the training package registers its reader here when it is imported, and
:func:`legacy_reader` imports that package by name only when a format-1 file turns up
and no reader is registered yet (the way :mod:`codecs` finds an encoding): ``import fer8``
and reading a current file import neither ``fer8.training`` nor TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fer8.models.modelfile import ModelSpec


class LegacyReader(Protocol):
    """What fer8.models needs from the Keras side for a format-1 file."""

    def read_graph(self, path: str | os.PathLike) -> tuple[ModelSpec, bytes]:
        """The file's spec and its network as a serialized ONNX graph."""
        ...

    def rewrite(self, path: str | os.PathLike, out: str | os.PathLike, *, compact: bool) -> Path:
        """Write the file again in the current format, at ``out``."""
        ...


#: The package that registers the reader when imported (fer8.training's __init__).
READER_PACKAGE = "fer8.training"

# A function, not the reader itself: it imports Keras only when a format-1 file is read.
_factory: Callable[[], LegacyReader] | None = None


def register_legacy_reader(factory: Callable[[], LegacyReader]) -> None:
    """Install ``factory``, which returns the reader (and raises ImportError when the
    packages it needs are missing)."""
    global _factory
    _factory = factory


def legacy_reader() -> LegacyReader:
    """The registered reader, importing :data:`READER_PACKAGE` first when none is.

    Raises:
        ImportError: None is registered, or its packages (the ``train`` extra) are missing.
    """
    if _factory is None:
        import_module(READER_PACKAGE)  # registers it
    if _factory is None:
        raise ImportError("no reader of format-1 model files is registered")
    return _factory()
