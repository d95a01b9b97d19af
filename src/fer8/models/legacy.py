"""The reader of model files an older fer8 wrote (format 1: Keras weights, no ONNX graph).

Reading one needs Keras, which lives in the training package (the ``train`` extra), and
``fer8.models`` must not depend on training: training imports models, never the other way.
So the training package registers its reader here when imported (``import fer8`` imports
it, which costs nothing: the package itself imports no TensorFlow), and this module hands
the reader out when a format-1 file turns up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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


# A function, not the reader itself: it imports Keras only when a format-1 file is read.
_factory: Callable[[], LegacyReader] | None = None


def register_legacy_reader(factory: Callable[[], LegacyReader]) -> None:
    """Install ``factory``, which returns the reader (and raises ImportError when the
    packages it needs are missing)."""
    global _factory
    _factory = factory


def legacy_reader() -> LegacyReader:
    """The registered reader.

    Raises:
        ImportError: None is registered, or its packages (the ``train`` extra) are missing.
    """
    if _factory is None:
        raise ImportError("no reader of format-1 model files is registered")
    return _factory()
