"""The one raw ASGI answer the server's middlewares send themselves: a JSON error that
closes the connection (they answer before FastAPI sees the request, so its exception
handlers cannot)."""

from __future__ import annotations

import json
from typing import Any


async def send_error(send: Any, status: int, detail: str) -> None:
    """Send ``{"detail": detail}`` with ``status``, and ``Connection: close``: the
    request's body may be left unread, so the connection cannot be reused."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
