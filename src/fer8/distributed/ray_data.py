"""Batch prediction on a Ray cluster with Ray Data: ``predict_dataset`` and the run
behind ``fer8 predict --engine ray``.

Ray Data already does what a home-made scheduler would have to: it streams files from
local disks or object stores to workers, keeps a pool of long-lived actors, applies
back-pressure so memory stays bounded, and retries the work of a worker that dies. fer8
adds one actor class: each actor loads a :class:`fer8.Predictor` once and runs
:meth:`~fer8.Predictor.predict_many` on a batch of images, so faces are batched across
images for the network exactly as on one machine.

This module is named ``ray_data`` and imports Ray inside functions only, so ``import
fer8`` never pulls Ray in and the name never shadows the ``ray`` package.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer8.distributed.inputs import InputFile
from fer8.distributed.rows import RowFileWriter, rows_table
from fer8.models.registry import MODELS, resolve_model
from fer8.results import ImageResult

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

logger = logging.getLogger(__name__)

#: Images per call of an actor: enough to fill a few forward passes and to make Ray's
#: per-batch cost small beside the work, few enough that a batch of large photos does
#: not hold much memory.
IMAGES_PER_BATCH = 32

#: CPUs a read task reserves. Reading a file is I/O (the decoding is the actors'), and
#: any share at all deadlocks a cluster whose CPUs the actors hold: the reads wait for
#: a CPU, the actors for the reads (seen with Ray's default of 1 and with 0.25).
READ_CPUS = 0

#: Ray's object store for a local instance that fer8 starts itself (bytes): the
#: images in flight and the rows, not a cache of the data set.
LOCAL_OBJECT_STORE_BYTES = 500_000_000


class _PredictBatch:
    """The Ray Data actor: one Predictor, loaded once, for every batch it is given.

    Args:
        model: A registered model name (each worker resolves it from its own install or
            cache), or the bytes of a model file, which travel with the job so workers
            need no copy of a file that only the driver has.
        threads: ONNX Runtime threads: the actor's CPUs, so that N actors on N cores
            do not each start a thread per core.
        detect: See :meth:`fer8.Predictor.predict_many`.
        predictor_options: Passed to :class:`fer8.Predictor`.
    """

    def __init__(
        self,
        model: str | bytes | None,
        threads: int,
        detect: bool,
        predictor_options: Mapping[str, Any],
    ) -> None:
        from fer8.models.registry import load_model
        from fer8.pipeline.predictor import Predictor

        if isinstance(model, bytes):
            with tempfile.TemporaryDirectory(prefix="fer8-model-") as folder:
                path = Path(folder) / "model.fer8"
                path.write_bytes(model)
                loaded = load_model(path, threads=threads)
        else:
            loaded = load_model(model, threads=threads)
        self.predictor = Predictor(loaded, **predictor_options)
        self.detect = detect

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        sources, names = _batch_inputs(batch)
        results = [
            result if name is None else replace(result, source=name)
            for result, name in zip(self.predictor.predict_many(sources, detect=self.detect), names)
        ]
        return rows_table(results, self.predictor.labels)


def _batch_inputs(batch: dict[str, np.ndarray]) -> tuple[list[Any], list[str | None]]:
    """What ``predict_many`` reads for each row of a batch, and the row's source name
    when the input itself does not carry it.

    ``bytes`` (``read_binary_files``) become file objects named by their path, so
    :func:`fer8.load_image` decodes them as it decodes the same file on one machine:
    same formats, same limits, the same error for a broken file, and the path as the
    source. ``image`` (``read_images``) arrays are taken as decoded. ``path`` alone (a
    data set of paths) is read by the worker itself.
    """
    paths = [str(p) for p in batch["path"]] if "path" in batch else None
    if "bytes" in batch:
        sources = []
        for index, data in enumerate(batch["bytes"]):
            stream = io.BytesIO(bytes(data))
            stream.name = paths[index] if paths else f"<row {index}>"
            sources.append(stream)
        return sources, [None] * len(sources)
    if "image" in batch:
        images = list(batch["image"])
        names: list[str | None] = [*paths] if paths else [None] * len(images)
        return images, names
    if paths is not None:
        return paths, [None] * len(paths)
    raise ValueError(
        f"a data set of images needs a 'bytes', 'image' or 'path' column; "
        f"this one has {', '.join(batch) or 'none'}"
    )


def predict_dataset(
    ds: ray.data.Dataset,
    model: str | os.PathLike | None = None,
    *,
    detect: bool = True,
    concurrency: int | tuple[int, int] | None = None,
    num_cpus: float = 1,
    images_per_batch: int = IMAGES_PER_BATCH,
    **predictor_options: Any,
) -> ray.data.Dataset:
    """Classify every face in a Ray Dataset of images; one row per face.

    Example:
        >>> ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
        >>> predict_dataset(ds, batch_size=32).write_parquet("s3://bucket/results/")

    ``read_binary_files(..., include_paths=True)`` is the input to prefer: workers
    decode each file with :func:`fer8.load_image`, so a broken file becomes a row with
    ``error`` set, and ``source`` is its path. ``ray.data.read_images`` decodes in Ray's
    own read tasks, where one broken file fails the whole job; its rows are taken as
    decoded (pass ``include_paths=True`` for the source names). A data set with only a
    ``path`` column has each worker read the file itself (a path every worker can see).

    The actors hold ``num_cpus`` each; when they take every CPU of the cluster, read
    with ``num_cpus=0`` (``read_binary_files(..., num_cpus=0)``), or the reads wait for
    a CPU that never comes free.

    Args:
        ds: Rows with ``bytes`` (and ``path``), ``image`` (and ``path``), or ``path``.
        model: A registered model name, a ``.fer8`` file or a run folder (default: the
            bundled model). A file is read here and sent with the job.
        detect: False takes each whole image as one face (pre-cropped faces).
        concurrency: Actors (each with its own model), or ``(min, max)`` for an
            autoscaling pool. Default: one per ``num_cpus`` CPUs of the cluster.
        num_cpus: CPUs reserved per actor, and its ONNX Runtime threads.
        images_per_batch: Images handed to an actor per call.
        **predictor_options: :class:`fer8.Predictor` options: ``batch_size`` (faces
            per forward pass), ``max_faces``, ``flip``, ``detector``,
            ``detector_options``, ``max_pixels``, ``workers``.

    Returns:
        A lazy Dataset with the columns of :func:`fer8.output.row_columns`: source,
        face (``None`` for an image without faces or an unreadable one), x, y, w, h,
        label, confidence, one column per class, error.

    Raises:
        ModelNotFoundError: ``model`` names no file or registered model.
    """
    from ray.data import ActorPoolStrategy

    if num_cpus <= 0:
        raise ValueError("num_cpus must be positive")
    if concurrency is None:
        concurrency = _default_actors(num_cpus)
    pool = (
        ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
        if isinstance(concurrency, tuple)
        else ActorPoolStrategy(size=concurrency)
    )
    # Ray Data's actors are restarted when they die and their batch is run again
    # (its defaults, max_restarts=-1 and max_task_retries=-1). A rerun's output blocks
    # that the first attempt already delivered are dropped by Ray (a streaming task is
    # replayed), which holds because a batch gives the same rows every time.
    return ds.map_batches(
        _PredictBatch,
        fn_constructor_kwargs={
            "model": _model_for_workers(model),
            "threads": max(1, round(num_cpus)),
            "detect": detect,
            "predictor_options": dict(predictor_options),
        },
        batch_size=images_per_batch,
        batch_format="numpy",
        compute=pool,
        num_cpus=num_cpus,
    )


def _default_actors(num_cpus: float) -> int:
    """One actor per ``num_cpus`` CPUs of the cluster."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1) // num_cpus))


def _model_for_workers(model: str | os.PathLike | None) -> str | bytes | None:
    """A registered name as it is (workers resolve it), anything else as the file's
    bytes; resolving it here also makes a wrong ``--model`` fail before any work."""
    path = resolve_model(model)
    if model is None or os.fspath(model) in MODELS:
        return None if model is None else os.fspath(model)
    return path.read_bytes()


def connect(
    address: str | None,
    *,
    object_store_memory: int = LOCAL_OBJECT_STORE_BYTES,
    num_cpus: int | None = None,
    ray_log_level: int | None = None,
    quiet_core: bool = False,
) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``host:port``, ``ray://...``), or
    start a local instance with a small object store when it is ``None``.

    A local instance that fer8 starts gets ``object_store_memory`` rather than Ray's
    default of 30% of the machine's memory, which on a shared machine takes memory
    others need; a cluster's own settings are left alone.

    Args:
        ray_log_level: The level of Ray's own Python loggers, which Ray sets when it
            is imported and again in ``ray.init`` (so it is set after both); ``None``
            keeps warnings, such as the notice that a local instance uses token
            authentication.
        quiet_core: Keep Ray's C++ core from writing its errors to this process's
            stderr (``RAY_BACKEND_LOG_LEVEL=fatal`` unless set; the processes of a
            local instance inherit it). Ray Data's actor pool has its core log an error
            for every run, that its actors' arguments are in the object store
            (ray-project/ray#57733), which is Ray Data's doing and harmless here.
    """
    import ray
    import ray.data

    def set_levels() -> None:
        if ray_log_level is not None:
            for name in ("ray", "ray.data"):
                logging.getLogger(name).setLevel(ray_log_level)

    set_levels()
    if ray.is_initialized():
        return
    if quiet_core:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    level = logging.WARNING if ray_log_level is None else ray_log_level
    ray.data.DataContext.get_current().enable_progress_bars = False
    # Workers' output stays in the cluster's log files: Ray would copy it to this
    # process's stdout, which belongs to results.
    # The core reads RAY_BACKEND_LOG_LEVEL in ray.init and says so on stderr, at a level
    # it has not yet applied: that one line is dropped with the rest of the core's
    # stderr during the call (a failure to connect is an exception, not lost).
    with _core_stderr_dropped() if quiet_core else contextlib.nullcontext():
        if address is None:
            ray.init(
                num_cpus=num_cpus,
                object_store_memory=object_store_memory,
                include_dashboard=False,
                logging_level=level,
                log_to_driver=False,
            )
        else:
            ray.init(address=address, logging_level=level, log_to_driver=False)
    set_levels()


@contextlib.contextmanager
def _core_stderr_dropped() -> Iterator[None]:
    """File descriptor 2 goes to the null device meanwhile: where C++ code writes;
    Python's own messages are flushed before and after."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def predict_files(
    files: Sequence[InputFile],
    out: str | os.PathLike,
    model: str | os.PathLike | None = None,
    *,
    on_image: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[], None] | None = None,
    **options: Any,
) -> int:
    """Predict ``files`` on the connected Ray cluster and write the rows to ``out``.

    The rows stream back to this process and are written as they come, so ``out``
    is one file (Parquet or JSON Lines, from its extension) whatever the number of
    workers, and the run can report progress. Rows come in no particular order.

    Args:
        files: From :func:`fer8.distributed.inputs.list_inputs`.
        out: A ``.parquet`` or ``.jsonl`` file; it appears only when every row is in.
        model: See :func:`predict_dataset`.
        on_image: Called once per image with its first row (for a progress bar and
            error reports).
        on_start: Called once, when the cluster's first rows arrive (its actors are up
            and working), before they go to ``on_image``; rows of files found missing
            here come before it.
        **options: :func:`predict_dataset` options.

    Returns:
        How many inputs could not be read (rows with ``error`` set).
    """
    import ray

    labels = resolve_labels(model)
    # A missing local file would fail Ray's whole read; plain predict gives it an
    # error row, and so does this run, without sending it to Ray.
    missing: list[InputFile] = []
    present: list[InputFile] = []
    for file in files:
        local = "://" not in file.path
        (missing if local and not os.path.exists(file.path) else present).append(file)
    batches: Iterable[pa.Table] = [
        rows_table([ImageResult(file.source, (), "no such file") for file in missing], labels)
    ]
    if present:
        # Ray reports each path as it was given to it, with a URI's scheme dropped.
        names = {}
        for file in present:
            names[file.path] = file.source
            names[file.path.split("://", 1)[-1]] = file.source
        actors = options.pop("concurrency", None) or _default_actors(options.get("num_cpus", 1))
        # Reads hold no CPU (see READ_CPUS), so Ray would start a worker process per
        # read task; as many reads in flight as actors keeps each actor fed without that.
        most = actors[1] if isinstance(actors, tuple) else actors
        ds = ray.data.read_binary_files(
            [file.path for file in present],
            include_paths=True,
            num_cpus=READ_CPUS,
            concurrency=most,
        )
        rows = predict_dataset(ds, model, concurrency=actors, **options)
        batches = itertools.chain(
            batches,
            _first_called(
                on_start,
                (
                    _rename_sources(table, names)
                    for table in rows.iter_batches(batch_format="pyarrow", batch_size=None)
                ),
            ),
        )
    writer = RowFileWriter(out, labels)
    failed = 0
    try:
        for table in batches:
            writer.write(table)
            for row in table.to_pylist():
                if row["face"] is None or row["face"] == 0:
                    failed += row["error"] is not None
                    if on_image is not None:
                        on_image(row)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return failed


def _first_called(
    callback: Callable[[], None] | None, tables: Iterable[pa.Table]
) -> Iterator[pa.Table]:
    """``tables``, with ``callback`` called once just before the first is handed on."""
    for index, table in enumerate(tables):
        if index == 0 and callback is not None:
            callback()
        yield table


def resolve_labels(model: str | os.PathLike | None) -> tuple[str, ...]:
    """The model's labels, read from its file's spec (no network loaded)."""
    from fer8.models.modelfile import read_spec

    return read_spec(resolve_model(model)).labels


def _rename_sources(table: pa.Table, names: Mapping[str, str]) -> pa.Table:
    import pyarrow as pa

    index = table.schema.get_field_index("source")
    sources = [names.get(source, source) for source in table.column(index).to_pylist()]
    return table.set_column(index, "source", pa.array(sources, pa.string()))
