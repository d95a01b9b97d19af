"""``fer8 serve``: an HTTP API, a web page and (when configured) the LINE bot.

FastAPI on uvicorn. The model is loaded once at start and runs in its own thread, which
batches the uploads waiting for it and takes videos a few frames at a time between them
(:class:`~fer8.serving.runner.ModelRunner`), so the event loop keeps answering
``/healthz`` and webhooks while photos are being classified. It needs the
``serve`` extra (``fer8 serve`` says how to install it); only ``fer8 serve`` imports
this module.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from fer8 import __version__
from fer8.drawing import to_jpeg
from fer8.options import SamplingOptions
from fer8.options.commands import ServerOptions
from fer8.pipeline.video import VIDEO_EXTENSIONS, looks_like_video
from fer8.results import ExplainedResult
from fer8.serving.auth import ApiKeyAuth, document_keys
from fer8.serving.limits import BodySizeLimit, too_large
from fer8.serving.metrics import RequestMetrics, ServerMetrics
from fer8.serving.query import query_options
from fer8.serving.runner import ModelRunner

if TYPE_CHECKING:
    from fer8.pipeline.predictor import Predictor
    from fer8.serving.line import LineSettings

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = ServerOptions.max_upload_mb  # fer8 serve's defaults
DEFAULT_MAX_VIDEO_MB = ServerOptions.max_video_mb
#: A video's ``fps``, ``every_frame`` and ``smooth``: fer8 predict's options, as a query.
_SAMPLING = Depends(query_options(SamplingOptions))
WEB_DIR = Path(str(resources.files("fer8") / "serving" / "web"))


def _explained(
    predictor: Predictor, data: bytes, source: str, *, jpeg: bool
) -> dict[str, Any] | bytes:
    """``explain=true``: the result with each face's heatmap (base64 PNG and the photo box
    it covers), or with ``annotate=true`` too, the photo with the heatmaps and the boxes
    drawn, as JPEG. Runs in the model's thread, in its turn (:meth:`ModelRunner.call`)."""
    from fer8.pipeline.images import load_image

    image = load_image(data, max_pixels=predictor.max_pixels)
    result = ExplainedResult.of(source, predictor.explain(image))
    if jpeg:
        return to_jpeg(result, image)
    height, width = image.shape[:2]
    return result.to_dict(width, height)


def create_app(
    predictor: Predictor,
    *,
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024),
    max_video_bytes: int = int(DEFAULT_MAX_VIDEO_MB * 1024 * 1024),
    line: LineSettings | None = None,
    api_keys: Sequence[str] = (),
    model_load_seconds: float | None = None,
) -> FastAPI:
    """Build the application around a loaded predictor.

    Args:
        predictor: The loaded models; shared by every request.
        max_upload_bytes: Larger request bodies get 413.
        max_video_bytes: The same for videos: a raw body of type ``video/*``, or a
            multipart file declared as a video (its type or its extension).
        line: LINE channel settings; ``None`` leaves ``/line/callback`` unrouted (404).
        api_keys: When given, ``/v1/*`` needs one of them as a Bearer token
            (:mod:`fer8.serving.auth`).
        model_load_seconds: How long loading the predictor took, for ``/metrics``.
    """
    runner = ModelRunner(predictor)
    bot = None
    if line is not None:
        from fer8.serving.line import LineBot

        bot = LineBot(line, runner)
    else:
        logger.info(
            "LINE bot off: set LINE_CHANNEL_SECRET and LINE_CHANNEL_ACCESS_TOKEN "
            "to answer webhooks at /line/callback"
        )

    metrics = ServerMetrics()
    if model_load_seconds is not None:
        metrics.model_load.set(model_load_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if bot is not None:
            bot.close()
        runner.close()
        metrics.process_stopped()

    app = FastAPI(
        title="fer8",
        version=__version__,
        lifespan=lifespan,
        description="Facial expression recognition.",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodySizeLimit, max_bytes=max_upload_bytes, video_max_bytes=max_video_bytes)
    if api_keys:  # outside the upload limit: a stranger learns nothing, not even the limit
        app.add_middleware(ApiKeyAuth, keys=tuple(api_keys))
        document_keys(app)
    app.add_middleware(RequestMetrics, metrics=metrics, routes=app.router.routes)
    app.state.runner = runner
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.mount("/swagger", StaticFiles(directory=_swagger_dir()), name="swagger")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:  # browsers and bots ask for it at the root
        return FileResponse(WEB_DIR / "favicon.ico", media_type="image/x-icon")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="fer8 API",
            swagger_js_url="/swagger/swagger-ui-bundle.js",
            swagger_css_url="/swagger/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )

    @app.get("/healthz", summary="Liveness: answers while predictions run")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:  # fer8.serving.metrics says what is there
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/models", summary="The loaded model")
    async def models() -> dict[str, Any]:
        spec = predictor.model.spec
        return {
            "name": spec.name,
            "labels": list(spec.labels),
            "input_size": spec.input_size,
            "backbone": spec.backbone,
            "runtime": predictor.model.runtime,
        }

    @app.post(
        "/v1/predict",
        summary="Classify every face in one image or video",
        description=(
            "Send the image or video as multipart field `file`, or as the raw body with an "
            "`image/*`, `video/*` or `application/octet-stream` content type. Returns the same "
            "object as `fer8 predict --format json` for one image, or with `annotate=true` "
            "the image with boxes and labels drawn, as JPEG. With `explain=true` each face "
            "also has `explanation`: the class explained (`label`), the photo box its "
            "heatmap covers (`box`) and the heatmap, an RGBA PNG in base64 (`png`) to "
            "stretch over that box (colour and opacity: where the evidence for the class "
            "lies); with `annotate=true` too, the JPEG shows the heatmaps. A video returns the array "
            "`fer8 predict --format json` prints for it: an object per sampled frame "
            "(`fps`, `every_frame`, `smooth` as on the command line); a video that breaks "
            "off ends with an object whose `error` names the frame."
        ),
        responses={
            400: {"description": "not an image or video"},
            413: {"description": "too large"},
            415: {"description": "wrong content type"},
            200: {"content": {"image/jpeg": {}}},
        },
        # The handler reads the body itself (either form), so the schema says what it takes.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {"file": {"type": "string", "format": "binary"}},
                        }
                    },
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def predict(
        request: Request,
        annotate: bool = Query(False),
        explain: bool = Query(False),
        sampling: SamplingOptions = _SAMPLING,
    ):
        try:
            data, source, declared_video = await _read_upload(request)
        except ClientDisconnect:
            # The client went away mid-upload, or sent a broken chunk that uvicorn has
            # already answered: there is no one to answer (this was logged as an error
            # with a traceback, "Exception in ASGI application").
            return Response(status_code=400)
        if declared_video or looks_like_video(data[:16]):
            if annotate or explain:
                asked = "annotate=true" if annotate else "explain=true"
                raise HTTPException(
                    400, detail=f"{asked} takes photos; for a video, use fer8 predict --annotate"
                )
            frames = await asyncio.wrap_future(runner.submit_video(data, source, sampling))
            if len(frames) == 1 and frames[0].frame is None:
                raise HTTPException(400, detail=f"{source}: {frames[0].error}")
            request.state.faces = sum(len(frame.faces) for frame in frames)  # access log
            return JSONResponse([frame.to_dict() for frame in frames])
        if len(data) > max_upload_bytes:  # declared a video, sent an image
            raise HTTPException(413, detail=too_large(max_upload_bytes))
        if explain:
            from fer8.errors import ExplanationError, InvalidImageError

            try:
                # In the model's queue, like photos: beside it, it would fight them
                # for the cores.
                answer = await asyncio.wrap_future(
                    runner.call(
                        functools.partial(_explained, predictor, data, source, jpeg=annotate)
                    )
                )
            except InvalidImageError as exc:
                raise HTTPException(400, detail=f"{source}: {exc.problem}") from None
            except ExplanationError as exc:
                raise HTTPException(400, detail=str(exc)) from None
            if annotate:
                return Response(answer, media_type="image/jpeg")
            return JSONResponse(answer)
        result = await asyncio.wrap_future(runner.submit(data, source))
        if result.error is not None:
            raise HTTPException(400, detail=f"{source}: {result.error}")
        request.state.faces = len(result.faces)  # for the access log and /metrics
        if annotate:
            # The upload is decoded again: results carry no pixels, which keeps memory
            # flat, and a decode costs ~5 ms against ~90 ms of model.
            jpeg = await anyio.to_thread.run_sync(
                functools.partial(to_jpeg, result, data, max_pixels=predictor.max_pixels)
            )
            return Response(jpeg, media_type="image/jpeg")
        return JSONResponse(result.to_dict())

    if bot is not None:
        app.include_router(bot.router())
    return app


async def _read_upload(request: Request) -> tuple[bytes, str, bool]:
    """The upload's bytes, its name, and whether it is declared a video (by its type or
    its file name)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        async with request.form() as form:  # closes the uploads' temporary files
            uploads = [item for item in form.getlist("file") if not isinstance(item, str)]
            if not uploads:
                raise HTTPException(400, detail="multipart upload needs a file in field 'file'")
            if len(uploads) > 1:  # the last one was taken without a word
                raise HTTPException(
                    400,
                    detail=f"multipart upload has {len(uploads)} files in field 'file'; send one",
                )
            upload = uploads[0]
            name = upload.filename or "upload"
            video = (upload.content_type or "").lower().startswith("video/") or os.path.splitext(
                name
            )[1].lower() in VIDEO_EXTENSIONS
            return await upload.read(), name, video
    if content_type.startswith(("image/", "video/")) or content_type == "application/octet-stream":
        return await request.body(), "upload", content_type.startswith("video/")
    raise HTTPException(
        415,
        detail=f"content type {content_type or '(none)'!r} is not accepted: send an image "
        "or a video as multipart field 'file' or as a raw image/* or video/* body",
    )


def _swagger_dir() -> str:
    """Swagger UI's files, so /docs needs no CDN: Swagger UI 5, which reads the OpenAPI
    3.1 that FastAPI writes (swagger-ui-bundle's 4.15 rendered nothing), as the
    fastapi-offline package ships it (its ``static`` folder; fer8 uses only the files)."""
    import fastapi_offline

    return str(Path(fastapi_offline.__file__).parent / "static")
