"""``fer8 serve``: the HTTP API, the web page and the LINE bot (the serve extra)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from fer8.cli.common import command, exit_missing_extra, log_line_format, verbosity
from fer8.options.commands import ServerOptions


@command(ServerOptions)
def serve(options: ServerOptions) -> None:
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
        exit_missing_extra("fer8 serve", "serve", exc.name)

    try:
        keys = load_api_keys(options.api_key_file)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if options.ssl_keyfile is not None and options.ssl_certfile is None:
        raise click.UsageError("--ssl-keyfile needs --ssl-certfile")
    warning = exposure_warning(options.host, bool(keys))
    if warning:
        click.echo(f"fer8: warning: {warning}", err=True)
    logging.getLogger("fer8").setLevel(logging.INFO)  # the startup lines say what is on
    run_server(
        ServeOptions(
            model=options.model.name,
            detection=options.detection.detector_kwargs(),
            max_upload_bytes=int(options.max_upload_mb * 1024 * 1024),
            max_video_bytes=int(options.max_video_mb * 1024 * 1024),
            max_pixels=options.max_pixels,
            api_key_file=_text(options.api_key_file),
            host=options.host,
            port=options.port,
            workers=options.workers,
            shutdown_timeout=options.shutdown_timeout,
            ssl_certfile=_text(options.ssl_certfile),
            ssl_keyfile=_text(options.ssl_keyfile),
            log_level="debug" if verbosity() > 1 else "info",
            log_format=log_line_format(verbosity()),
        )
    )


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)
