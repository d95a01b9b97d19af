"""fer8's cache folder, where downloaded models, prepared crops and converted landmark
models live.

Only the standard library is imported here: the ``fer8`` command finds the folder
before its heavy imports (:mod:`fer8.pipeline.landmark_worker`), and the model registry
finds it the same way, so the two can never disagree.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where fer8 keeps its files: the argument, ``$FER8_HOME``, or
    ``$XDG_CACHE_HOME/fer8`` (``~/.cache/fer8`` when that is unset)."""
    if override is not None:
        return Path(override)
    if os.environ.get("FER8_HOME"):
        return Path(os.environ["FER8_HOME"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "fer8"
