"""The exceptions fer8 raises.

Every error derives from :class:`Fer8Error`, so callers can catch fer8's failures in one
place, and each also derives from the built-in it resembles, so code that already handles
``ValueError`` or ``LookupError`` keeps working.
"""

from __future__ import annotations


class Fer8Error(Exception):
    """Base class of every error fer8 raises on purpose."""


class InvalidImageError(Fer8Error, ValueError):
    """An input could not be read as an image (missing, empty, corrupt, too large...).

    The message always starts with the name of the source, so that one bad file in a
    folder of thousands can be found.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class ModelNotFoundError(Fer8Error, LookupError):
    """No model file exists under the given name or path."""


class ModelFormatError(Fer8Error, ValueError):
    """A file exists but is not a valid fer8 model file."""


class ChecksumMismatchError(Fer8Error, ValueError):
    """A downloaded or cached file does not have the published SHA-256."""


class DownloadError(Fer8Error, OSError):
    """A file that is fetched on first use (e.g. ImageNet weights) could not be downloaded."""


class InvalidVideoError(Fer8Error, ValueError):
    """A video could not be opened, or broke off part-way (truncated, corrupt).

    Like :class:`InvalidImageError`, the message starts with the name of the source;
    ``frame`` is the first frame that could not be read, or ``None`` when the file could
    not be opened at all.
    """

    def __init__(self, source: str, problem: str, frame: int | None = None) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem
        self.frame = frame


class ExplanationError(Fer8Error, ValueError):
    """A model's predictions cannot be explained with class activation maps: its head
    is not global average pooling followed by dense layers, or its network cannot give
    its last feature map (a Keras model in training)."""
