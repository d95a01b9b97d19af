"""``fer8 predict --engine ray`` as one library call: what is checked before a cluster
is joined (the extra, the model, the inputs), then the run.

:meth:`RayPrediction.prepare` fails fast, in the order a user would fix things, without
starting Ray (importing it takes seconds); :meth:`RayPrediction.run` joins the cluster
and writes the rows (:func:`fer8.distributed.ray_data.predict_files`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer8.distributed.inputs import InputFile

#: What the ``ray`` extra brings that a run needs, by module name.
RAY_PACKAGES = ("ray", "pyarrow")


@dataclass(frozen=True)
class RayPrediction:
    """A prediction run on a Ray cluster, its inputs listed and its settings checked.

    Attributes:
        files: The photos, as :func:`fer8.distributed.inputs.list_inputs` lists them.
        out: The ``.parquet`` or ``.jsonl`` file the rows go to.
        model: A model name or file, or None (the bundled model).
        options: :func:`fer8.distributed.ray_data.predict_dataset` settings (detector,
            batch size...).
    """

    files: tuple[InputFile, ...]
    out: Path
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        paths: Sequence[str],
        out: str | os.PathLike,
        model: str | None = None,
        **options: Any,
    ) -> RayPrediction:
        """Check what can be checked without a cluster and list the inputs.

        Args:
            paths: Files, folders, globs or URIs that pyarrow reads (photos only).
            out: A ``.parquet`` or ``.jsonl`` file.
            model: A model name or file, or None (the bundled model).
            **options: As :func:`fer8.distributed.ray_data.predict_dataset` takes them.

        Raises:
            ValueError: ``out`` is neither ``.parquet`` nor ``.jsonl``.
            ModuleNotFoundError: The ``ray`` extra is not installed (``name`` says
                which of :data:`RAY_PACKAGES` is missing).
            ModelNotFoundError: No such model.
            InvalidVideoError: A video was given (Ray runs photos only).
            FileNotFoundError: A path finds no image.
        """
        from fer8.distributed.inputs import list_inputs
        from fer8.distributed.rows import row_format
        from fer8.models.registry import resolve_model

        row_format(out)
        # Looked up, not imported: importing Ray takes seconds, and run() does it.
        missing = [name for name in RAY_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise ModuleNotFoundError(
                f"--engine ray needs the ray extra ({missing[0]} is missing)", name=missing[0]
            )
        resolve_model(model)  # a wrong model is said before the cluster starts
        return cls(tuple(list_inputs(paths)), Path(out), model, options)

    def run(
        self,
        address: str | None = None,
        *,
        quiet: bool = False,
        on_image: Callable[[dict[str, Any]], None] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> int:
        """Join the cluster (or start a local Ray instance), predict every file and
        write the rows to :attr:`out`.

        Args:
            address: The cluster (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``); None
                starts a local instance.
            quiet: Keep Ray's own notices and its C++ core's errors off stderr.
            on_image: Called with each image's first row (progress, error reports).
            on_start: Called once, when the cluster's first rows arrive.

        Returns:
            How many inputs could not be read.
        """
        from fer8.distributed.ray_data import connect, predict_files

        # Ray logs each run's plan and its own notices at INFO and WARNING, and its C++
        # core an error about Ray Data's own actor arguments.
        connect(address, ray_log_level=logging.ERROR if quiet else logging.INFO, quiet_core=quiet)
        return predict_files(
            self.files, self.out, self.model, on_image=on_image, on_start=on_start, **self.options
        )
