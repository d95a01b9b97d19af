"""Running ``fer8 serve``: one process, or ``--workers N`` processes, and a clean stop.

Each worker is a uvicorn worker process with its own model: a Python process uses about
one core for everything around the network (decoding, detection, JSON), so a many-core
machine needs several. The workers share the listening socket (the kernel hands each new
connection to one of them) and the metrics (:mod:`fer8.serving.metrics`). A worker cannot
be handed a loaded model, so it gets :class:`ServeOptions` as JSON in ``$FER8_SERVE_OPTIONS``
and builds its app with :func:`worker_app`.

On SIGTERM (and Ctrl-C) the server stops accepting connections, lets the requests in
flight finish for up to ``shutdown_timeout`` seconds, answers the LINE events already
taken in, and exits 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fer8.options.commands import ServerOptions
from fer8.serving.metrics import MULTIPROC_ENV

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

#: Where a worker process finds its options.
OPTIONS_ENV = "FER8_SERVE_OPTIONS"
DEFAULT_SHUTDOWN_TIMEOUT = ServerOptions.shutdown_timeout


@dataclass(frozen=True)
class ServeOptions:
    """Everything a server process needs to build its app (plain values: they travel as
    JSON to worker processes).

    Attributes:
        model: Model name or path; ``None`` for the bundled model.
        detection: ``Predictor`` keyword arguments for the detector
            (``{"detector": ..., "detector_options": {...}}``).
        max_upload_bytes: Larger uploads get 413.
        max_video_bytes: The same for videos.
        max_pixels: Larger images get 400 (:class:`~fer8.pipeline.predictor.Predictor`'s
            ``max_pixels``).
        api_key_file: Where the API keys are; ``None`` reads ``$FER8_API_KEYS``.
        host: Address to listen on.
        port: Port to listen on.
        workers: Server processes, each with its own model.
        shutdown_timeout: Seconds the requests in flight get to finish after SIGTERM.
        log_level: uvicorn's log level.
        log_format: The format of fer8's log lines (workers set up their own logging).
        ssl_certfile: A PEM certificate (chain) to serve HTTPS with; ``None`` for HTTP.
            Browsers allow the web page's webcam only on ``localhost`` or over HTTPS.
        ssl_keyfile: The certificate's private key, when not in ``ssl_certfile``.
    """

    model: str | None = None
    detection: dict[str, Any] = field(default_factory=dict)
    max_upload_bytes: int = int(ServerOptions.max_upload_mb * 1024 * 1024)
    max_video_bytes: int = int(ServerOptions.max_video_mb * 1024 * 1024)
    max_pixels: int = ServerOptions.max_pixels
    api_key_file: str | None = None
    host: str = ServerOptions.host
    port: int = ServerOptions.port
    workers: int = ServerOptions.workers
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    log_level: str = "info"
    log_format: str = "fer8: %(message)s"
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        return cls(**json.loads(text))


#: The serve extra's packages (pip's names) by the module each installs.
SERVE_PACKAGES = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "multipart": "python-multipart",
    "linebot": "line-bot-sdk",
    "fastapi_offline": "fastapi-offline",
}


def require_extra() -> None:
    """Import what the ``serve`` extra brings, so that a missing part is said at once,
    not after a model has been loaded.

    Raises:
        ModuleNotFoundError: A part is missing; its ``name`` is the first package of
            :data:`SERVE_PACKAGES` not installed, by pip's name.
    """
    try:
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401

        import fer8.serving.line  # noqa: F401  (line-bot-sdk)
        import fer8.serving.server  # noqa: F401  (fastapi, python-multipart)
    except ImportError as exc:
        missing = _missing_package(exc)
        raise ModuleNotFoundError(f"{missing} is missing", name=missing) from exc


def _missing_package(exc: ImportError) -> str:
    """The first package of the serve extra that is not installed, by pip's name; the
    import that failed first is often one of theirs (anyio, FastAPI's), which says
    nothing about what to install."""
    from importlib.util import find_spec

    for module, package in SERVE_PACKAGES.items():
        try:
            if find_spec(module) is None:
                return package
        except (ImportError, ValueError):  # ValueError: a module set to None (tests)
            return package
    return exc.name or str(exc)


def build_app(options: ServeOptions) -> FastAPI:
    """Load the model and build the app, as one server process does.

    Raises:
        ModelNotFoundError, ModelFormatError: The model cannot be loaded.
        ValueError: The API key file holds no usable key.
    """
    from fer8.models.registry import load_model
    from fer8.pipeline.predictor import Predictor
    from fer8.serving.auth import load_api_keys
    from fer8.serving.line import LineSettings
    from fer8.serving.server import create_app

    keys = load_api_keys(options.api_key_file)
    started = time.perf_counter()
    # Workers share the cores: each ONNX Runtime session gets its share, not all of
    # them (N sessions of N threads each would fight over every core).
    threads = 0 if options.workers == 1 else max(1, (os.cpu_count() or 1) // options.workers)
    predictor = Predictor(
        load_model(options.model, threads=threads),
        max_pixels=options.max_pixels,
        **options.detection,
    )
    loaded = time.perf_counter() - started
    logger.info(
        "model %s loaded in %.1f s%s",
        predictor.model.spec.name,
        loaded,
        "; /v1/* needs an API key" if keys else "",
    )
    return create_app(
        predictor,
        max_upload_bytes=options.max_upload_bytes,
        max_video_bytes=options.max_video_bytes,
        line=LineSettings.from_env(),
        api_keys=keys,
        model_load_seconds=loaded,
    )


def worker_app() -> FastAPI:
    """The app of one worker process: uvicorn's factory for ``--workers N``."""
    options = ServeOptions.from_json(os.environ[OPTIONS_ENV])
    # A spawned process starts with no logging set up: as the CLI does it.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=options.log_format)
    logging.getLogger("fer8").setLevel(logging.INFO)
    return build_app(options)


def serve(options: ServeOptions) -> None:
    """Serve until SIGTERM or Ctrl-C, then stop cleanly (see the module's docstring).

    Raises:
        ModelNotFoundError, ModelFormatError: The model cannot be loaded (with several
            workers this is checked before any starts: a worker that fails to load
            would be restarted for ever).
        OSError: The server could not start (uvicorn has logged why: the port is
            taken, say).
    """
    import uvicorn

    settings: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "log_level": options.log_level,
        "access_log": False,  # fer8.access logs each request once, with its faces
        "timeout_graceful_shutdown": options.shutdown_timeout,
        "ssl_certfile": options.ssl_certfile,
        "ssl_keyfile": options.ssl_keyfile,
    }
    if options.workers == 1:
        server = uvicorn.Server(uvicorn.Config(build_app(options), **settings))
        with _stopping_on_signals(server):
            server.run()
        if not server.started:
            raise OSError(f"fer8 serve could not listen on {options.host}:{options.port}")
        return
    # Several workers: uvicorn's supervisor handles the signals, stops the workers (each
    # as gracefully as one server) and returns.
    from fer8.models.modelfile import read_spec
    from fer8.models.registry import resolve_model

    path = resolve_model(options.model)
    read_spec(path)  # a broken file fails here, once
    metrics_dir = tempfile.mkdtemp(prefix="fer8-metrics-")
    saved = {name: os.environ.get(name) for name in (OPTIONS_ENV, MULTIPROC_ENV)}
    os.environ[OPTIONS_ENV] = replace(options, model=str(path)).to_json()
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            "fer8.serving.launch:worker_app", factory=True, workers=options.workers, **settings
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _stopping_on_signals(server: Any) -> Iterator[None]:
    """SIGTERM and SIGINT stop ``server`` gracefully, and the process then exits 0.

    While it runs, uvicorn has handlers of its own; when it has shut down it puts back
    the previous ones and raises the signal again, so that the default action (death by
    SIGTERM, KeyboardInterrupt) would happen after all. The handlers installed here make
    that second delivery harmless, and a signal that comes before uvicorn's handlers
    still stops the server (it starts, sees ``should_exit`` and shuts down).
    """

    def stop(sig: int, frame: object) -> None:
        if not server.should_exit:
            logger.info("%s: stopping", signal.Signals(sig).name)
        server.should_exit = True

    saved = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
