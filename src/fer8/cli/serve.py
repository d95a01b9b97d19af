"""``fer8 serve``: the HTTP API, the web page and the LINE bot (the serve extra)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from fer8.cli.common import (
    EXIT_USAGE,
    cli,
    detection_options,
    handle_errors,
    install_command,
    log_line_format,
    verbosity,
)
from fer8.pipeline.images import MAX_PIXELS


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--model",
    "model",
    metavar="NAME|PATH",
    help="Model name or .fer8 file (default: the bundled model).",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Larger uploads are refused with 413.",
)
@click.option(
    "--max-video-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=100.0,
    show_default=True,
    help="The same for videos (a video/* body, or a file declared a video).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=MAX_PIXELS,
    show_default=True,
    help="Refuse larger images with 400 (raise it for panoramas).",
)
@click.option(
    "--api-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="API keys, one a line: /v1/* then needs 'Authorization: Bearer KEY' "
    "(default: FER8_API_KEYS, keys separated by commas; none: no key asked).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes, each with its own model, to use more cores.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM, how long the requests in flight get to finish.",
)
@click.option(
    "--ssl-certfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve HTTPS with this PEM certificate: browsers allow the page's webcam "
    "only on localhost or over HTTPS.",
)
@click.option(
    "--ssl-keyfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The certificate's private key (PEM), if not in --ssl-certfile.",
)
@detection_options
@handle_errors
def serve(
    host: str,
    port: int,
    model: str | None,
    max_upload_mb: float,
    max_video_mb: float,
    max_pixels: int,
    api_key_file: Path | None,
    workers: int,
    shutdown_timeout: float,
    ssl_certfile: Path | None,
    ssl_keyfile: Path | None,
    detection: dict,
) -> None:
    """Serve the HTTP API, the web page and (when configured) the LINE bot.

    The LINE webhook (/line/callback) is on when LINE_CHANNEL_SECRET and
    LINE_CHANNEL_ACCESS_TOKEN are set; FER8_LINE_API_URL and FER8_LINE_DATA_URL
    override the LINE API's base URLs. /healthz and /metrics (Prometheus) need no key.
    SIGTERM stops it cleanly: the requests in flight are answered, then it exits 0.
    """
    try:
        from fer8.serving.auth import exposure_warning, load_api_keys
        from fer8.serving.launch import ServeOptions, require_extra
        from fer8.serving.launch import serve as run_server

        require_extra()
    except ImportError as exc:
        click.echo(
            f"fer8: error: fer8 serve needs the serve extra ({_missing_serve_package(exc)} "
            f"is missing): {install_command('serve')}",
            err=True,
        )
        sys.exit(EXIT_USAGE)

    try:
        keys = load_api_keys(api_key_file)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if ssl_keyfile is not None and ssl_certfile is None:
        raise click.UsageError("--ssl-keyfile needs --ssl-certfile")
    warning = exposure_warning(host, bool(keys))
    if warning:
        click.echo(f"fer8: warning: {warning}", err=True)
    logging.getLogger("fer8").setLevel(logging.INFO)  # the startup lines say what is on
    run_server(
        ServeOptions(
            model=model,
            detection=detection,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_video_bytes=int(max_video_mb * 1024 * 1024),
            max_pixels=max_pixels,
            api_key_file=None if api_key_file is None else str(api_key_file),
            host=host,
            port=port,
            workers=workers,
            shutdown_timeout=shutdown_timeout,
            ssl_certfile=None if ssl_certfile is None else str(ssl_certfile),
            ssl_keyfile=None if ssl_keyfile is None else str(ssl_keyfile),
            log_level="debug" if verbosity() > 1 else "info",
            log_format=log_line_format(verbosity()),
        )
    )


#: The serve extra's packages (pip's names) by the module each installs.
_SERVE_PACKAGES = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "multipart": "python-multipart",
    "linebot": "line-bot-sdk",
    "fastapi_offline": "fastapi-offline",
}


def _missing_serve_package(exc: ImportError) -> str:
    """The first package of the serve extra that is not installed, by pip's name; the
    import that failed first is often one of theirs (anyio, FastAPI's), which says
    nothing about what to install."""
    from importlib.util import find_spec

    for module, package in _SERVE_PACKAGES.items():
        try:
            if find_spec(module) is None:
                return package
        except (ImportError, ValueError):
            return package
    return exc.name or str(exc)
