"""The upload limit of ``fer8 serve``: a request body over ``--max-upload-mb`` (or, for a
video, ``--max-video-mb``) is answered 413 as soon as that is known, before it is held in
memory whole (:class:`BodySizeLimit`, an ASGI middleware beside :mod:`~fer8.serving.auth`
and :mod:`~fer8.serving.metrics`).
"""

from __future__ import annotations

import re
from typing import Any

from fer8.pipeline.video import VIDEO_EXTENSIONS
from fer8.serving.asgi import send_error


class BodySizeLimit:
    """ASGI middleware: answer 413 as soon as a request body passes ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before the body reaches the
    application; a chunked body is counted as it streams and refused when it crosses the
    limit, so an oversized upload never sits in memory whole.

    Before answering, the rest of the body is read and dropped, up to ``drain_bytes``
    more. The server closes the connection after a 413, and closing a socket that still
    holds unread upload bytes makes the kernel send a reset, which can destroy the 413
    before the client has read it (Go's net/http drains for the same reason). A body too
    large to drain, or one the client holds back until ``100 Continue``, is refused unread.

    On ``video_paths``, a video may be up to ``video_max_bytes``: a raw body of type
    ``video/*``, or a multipart upload whose first part declares a video (its type, or
    its file name's extension), which is read ahead (4 kB) to decide and then handed on.
    """

    def __init__(
        self,
        app: Any,
        max_bytes: int,
        drain_bytes: int | None = None,
        video_max_bytes: int | None = None,
        video_paths: tuple[str, ...] = ("/v1/predict",),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = 4 * max_bytes if drain_bytes is None else drain_bytes
        self.video_max_bytes = max(max_bytes, video_max_bytes or 0)
        self.video_paths = video_paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        limit = self.max_bytes
        if (
            self.video_max_bytes > self.max_bytes
            and scope.get("path") in self.video_paths
            and (size is None or size > self.max_bytes)
        ):
            # A video has a limit of its own: the raw body's type says so, or the first
            # part's headers of a multipart upload do (read ahead, and given back, unless
            # the body is over either limit anyway).
            limit, receive = await self._video_limit(
                headers, receive, peek=size is None or size <= self.video_max_bytes
            )
        if size is not None and size > limit:
            holds_back = headers.get(b"expect", b"").lower() == b"100-continue"
            if not holds_back and size <= limit + self.drain_bytes:
                await self._drain(receive)
            await self._refuse(send, limit)
            return
        received = 0
        body_read = False
        started = False

        async def limited_receive() -> dict:
            nonlocal received, body_read
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_read = not message.get("more_body", False)
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                if not body_read:
                    await self._drain(receive)
                await self._refuse(send, limit)

    async def _video_limit(self, headers: dict, receive: Any, *, peek: bool) -> tuple[int, Any]:
        """The limit for this request, and a ``receive`` that replays what was read ahead."""
        content_type = headers.get(b"content-type", b"").lower()
        if content_type.startswith(b"video/"):
            return self.video_max_bytes, receive
        if not peek or not content_type.startswith(b"multipart/form-data"):
            return self.max_bytes, receive
        ahead: list[dict] = []
        head = b""
        while len(head) < _HEAD_BYTES:
            message = await receive()
            ahead.append(message)
            if message["type"] != "http.request":
                break
            head += message.get("body", b"")
            if not message.get("more_body", False):
                break

        async def replay() -> dict:
            return ahead.pop(0) if ahead else await receive()

        video = _VIDEO_PART.search(head[:_HEAD_BYTES]) is not None
        return (self.video_max_bytes if video else self.max_bytes), replay

    async def _drain(self, receive: Any) -> None:
        """Read and drop what is left of the request body, until it ends or more than
        ``drain_bytes`` have been dropped."""
        drained = 0
        while drained <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client has gone
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, send: Any, limit: int) -> None:
        video = limit > self.max_bytes
        await send_error(send, 413, too_large(limit, video=video))


class _BodyTooLarge(Exception):
    pass


def too_large(limit: int, *, video: bool = False) -> str:
    """The 413's message: the limit, and the ``fer8 serve`` option that sets it."""
    what, option = ("video upload", "--max-video-mb") if video else ("upload", "--max-upload-mb")
    return (
        f"{what} larger than {limit:,} bytes ({limit / 2**20:g} MB); "
        f"fer8 serve {option} sets the limit"
    )


#: How much of a multipart body is read ahead to find its first part's headers.
_HEAD_BYTES = 4096
#: A multipart part that declares a video: its type, or its file name's extension.
_VIDEO_PART = re.compile(
    rb"content-type:[ \t]*video/|filename=\"[^\"\r\n]*\.(?:"
    + b"|".join(ext[1:].encode() for ext in sorted(VIDEO_EXTENSIONS))
    + rb")\"",
    re.IGNORECASE,
)
