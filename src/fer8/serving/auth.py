"""API keys for ``fer8 serve``: ``/v1/*`` answers only requests that carry one.

Keys come from ``--api-key-file`` (one key a line) or ``FER8_API_KEYS`` (separated by
commas). With keys set, ``/v1/*`` needs ``Authorization: Bearer KEY``: 401 without one,
403 with a wrong one. The web page, ``/healthz``, ``/metrics`` and the LINE webhook (which
checks LINE's own signature) stay open, so a load balancer's health check and a
Prometheus scraper need no key and the page can ask for one.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The environment variable read when no key file is given.
KEYS_ENV = "FER8_API_KEYS"
#: Paths that need a key when keys are set.
PROTECTED_PREFIXES = ("/v1/",)


def load_api_keys(
    path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The API keys: the file's if ``path`` is given, else ``$FER8_API_KEYS``'s.

    The file has one key a line; blank lines and lines starting with ``#`` are skipped.
    The variable separates keys with commas. The file wins over the variable (an option
    given on the command line is the more deliberate of the two).

    Returns:
        The keys, in order, without repeats; empty when neither is set.

    Raises:
        ValueError: The file has no key, or a key has a space in it (a Bearer token
            cannot carry one, so no client could ever send it).
        OSError: The file cannot be read.
    """
    environ = os.environ if environ is None else environ
    if path is not None:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        where = os.fspath(path)
        keys = [line.strip() for line in lines]
        keys = [key for key in keys if key and not key.startswith("#")]
        if not keys:
            raise ValueError(f"{where}: no API key in it (one key a line)")
    else:
        where = KEYS_ENV
        keys = [key.strip() for key in environ.get(KEYS_ENV, "").split(",")]
        keys = [key for key in keys if key]
    for key in keys:
        if any(character.isspace() for character in key):
            raise ValueError(f"{where}: an API key cannot contain spaces")
    return tuple(dict.fromkeys(keys))


def exposure_warning(host: str, has_keys: bool) -> str | None:
    """A one-line warning when ``host`` lets other machines in and no key is asked."""
    if has_keys or _is_loopback(host):
        return None
    return (
        f"serving on {host} without API keys: anyone who can reach this address can "
        f"use the API (set --api-key-file or {KEYS_ENV})"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class ApiKeyAuth:
    """ASGI middleware: ``/v1/*`` needs ``Authorization: Bearer KEY`` with one of ``keys``.

    Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`, against every
    key without stopping at a match, so neither the time to answer nor its variance tells
    how much of a guess was right or how long a key is. A refused request's body is not
    read: uvicorn drops what is left of it and keeps the connection usable.
    """

    def __init__(
        self, app: Any, keys: Sequence[str], prefixes: tuple[str, ...] = PROTECTED_PREFIXES
    ) -> None:
        if not keys:
            raise ValueError("ApiKeyAuth needs at least one key")
        self.app = app
        self._digests = tuple(_digest(key.encode()) for key in keys)
        self.prefixes = prefixes

    def accepts(self, key: bytes) -> bool:
        """Whether ``key`` is one of the keys, in time independent of which and how close."""
        given = _digest(key)
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(given, digest)
        return matched

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            await _refuse(
                send, 401, "this server needs an API key: send 'Authorization: Bearer KEY'"
            )
        elif not self.accepts(token.strip()):
            await _refuse(send, 403, "invalid API key")
        else:
            await self.app(scope, receive, send)


def document_keys(app: Any, prefixes: tuple[str, ...] = PROTECTED_PREFIXES) -> None:
    """Say in ``app``'s OpenAPI schema that ``prefixes`` need a Bearer key, so that
    /docs has an *Authorize* button and its *Try it out* sends the key."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI builds it once and keeps it: changed once, here
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        if "apiKey" not in schemes:
            schemes["apiKey"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "One of the server's API keys.",
            }
            for path, operations in schema.get("paths", {}).items():
                if path.startswith(prefixes):
                    for operation in operations.values():
                        operation["security"] = [{"apiKey": []}]
                        operation.setdefault("responses", {}).update(
                            {
                                "401": {"description": "no API key"},
                                "403": {"description": "not one of the server's API keys"},
                            }
                        )
        return schema

    app.openapi = openapi


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


async def _refuse(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:  # RFC 6750: says which scheme to use
        headers.append((b"www-authenticate", b'Bearer realm="fer8"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
