"""What ``fer8 serve`` tells its operator: ``/metrics`` for Prometheus, and an access log.

Metrics (prometheus-client, in the Prometheus text format):

- ``fer8_requests_total{method,route,status}``: requests answered, by route template
  (``/v1/predict``, not the path a client made up: unknown paths are ``other``, so a
  scanner cannot grow the series without bound);
- ``fer8_request_duration_seconds{route}``: a latency histogram per route;
- ``fer8_requests_in_progress``: requests being answered now;
- ``fer8_faces_total``: faces found in uploads (a video's every sampled frame counts);
- ``fer8_upload_refused_bytes_total``: bytes of uploads refused as too large (413),
  as declared or as far as they were received;
- ``fer8_model_load_seconds{pid}``: how long each server process took to load its model.

With several worker processes (``fer8 serve --workers N``) every process writes its
values to ``$PROMETHEUS_MULTIPROC_DIR`` and ``/metrics``, whichever worker answers it,
adds them up (prometheus-client's multiprocess mode).

The access log (logger ``fer8.access``, level INFO) has one line per request: method,
route, status, milliseconds and faces found. It never holds a query string, a header or
an upload's bytes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from fer8.serving.asgi import send_error

access_logger = logging.getLogger("fer8.access")

#: Set (by ``fer8 serve --workers N``) when several processes share the metrics.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds: a cached photo takes ~5 ms, a ResNet50 batch ~0.1-1 s, a long video a minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: The route label of a request that matched no route.
UNMATCHED = "other"


class ServerMetrics:
    """The server's metrics, in a registry of their own (one per app, so that two apps
    in one process, as in the tests, count apart), or in the shared files of a
    multi-process server."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # In multiprocess mode values go to files whatever the registry; /metrics reads
        # the files back with a collector of its own.
        self._registry = None if self.multiprocess else CollectorRegistry()
        registry = self._registry
        self.requests = Counter(
            "fer8_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "fer8_request_duration_seconds",
            "Time to answer a request, from its headers to the last byte of the response.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "fer8_requests_in_progress",
            "Requests being answered.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.faces = Counter(
            "fer8_faces",
            "Faces found in uploads (each sampled video frame's faces count).",
            registry=registry,
        )
        self.refused_bytes = Counter(
            "fer8_upload_refused_bytes",
            "Bytes of uploads refused as too large (413), as declared or as far as received.",
            registry=registry,
        )
        self.model_load = Gauge(
            "fer8_model_load_seconds",
            "Seconds this server process took to load its model.",
            multiprocess_mode="all",
            registry=registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type."""
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            generate_latest,
        )

        registry = self._registry
        if registry is None:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def process_stopped(self) -> None:
        """Drop this process's live gauges from the shared files (multiprocess mode), so
        a stopped worker's requests in progress are not counted for ever."""
        if self.multiprocess:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(os.getpid())


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request, and logs one line for it.

    It sits outside the API-key check and the upload limit, so refused requests are
    counted too. A handler that found faces says how many in ``request.state.faces``.

    Args:
        app: The application inside.
        metrics: Where to count.
        routes: The application's routes, to name a request that was answered before
            routing (an upload refused from its declared size still counts as
            ``/v1/predict``).
    """

    def __init__(self, app: Any, metrics: ServerMetrics, routes: Sequence[Any] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})  # the dict request.state writes to
        status = 500  # if the application fails before it answers
        received = 0

        async def counting_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        responded = False

        async def observing_send(message: dict) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, counting_receive, observing_send)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when a stop's deadline has passed
            # (an upload that never ends, say). Unanswered, the client would see its
            # connection drop, and uvicorn would log the cancellation as an error with a
            # traceback; a 503 tells the client to try again, elsewhere or later.
            if responded:
                raise
            status = 503
            await _stopping(send)
        finally:
            self.metrics.in_progress.dec()
            self._record(scope, state, status, received, time.perf_counter() - started)

    def _record(self, scope: dict, state: dict, status: int, received: int, elapsed: float) -> None:
        route = self._route(scope)
        method = scope.get("method", "?")
        faces = state.get("faces")
        metrics = self.metrics
        metrics.requests.labels(method, route, str(status)).inc()
        metrics.latency.labels(route).observe(elapsed)
        if faces:
            metrics.faces.inc(faces)
        if status == 413:
            declared = dict(scope["headers"]).get(b"content-length", b"")
            metrics.refused_bytes.inc(max(received, int(declared) if declared.isdigit() else 0))
        where = route if route != UNMATCHED else _printable(scope.get("path", ""))
        access_logger.info(
            "%s %s %d %.0f ms faces=%s",
            method,
            where,
            status,
            1000 * elapsed,
            "-" if faces is None else faces,
        )

    def _route(self, scope: dict) -> str:
        route = scope.get("route")
        if route is None:  # answered before routing: find the route it was meant for
            from starlette.routing import Match

            route = next((r for r in self.routes if r.matches(scope)[0] is Match.FULL), None)
        return getattr(route, "path", None) or UNMATCHED


async def _stopping(send: Any) -> None:
    await send_error(send, 503, "the server is stopping; send the request again")


def _printable(path: str, limit: int = 200) -> str:
    """A client's path, safe for one log line: control characters escaped, cut short."""
    return path[:limit].encode("unicode_escape").decode("ascii")
