"""Test servers on 127.0.0.1: fer8's app under a real uvicorn (in a thread, or
``fer8 serve`` in a process of its own), and a fake LINE API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class UvicornThread:
    """Runs an ASGI app with uvicorn on an ephemeral loopback port, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServeProcess:
    """``python -m fer8 serve ARGS`` on a free loopback port, its output in ``log``.

    Entering waits until ``/healthz`` answers; leaving sends SIGTERM (if it still runs)
    and waits for the exit. With ``cafile`` the server is expected to speak HTTPS, with a
    certificate that file verifies.
    """

    def __init__(
        self,
        *args: str,
        log: Path,
        env: dict[str, str] | None = None,
        start_timeout: float = 180,
        cafile: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"{'https' if cafile else 'http'}://127.0.0.1:{self.port}"
        self.context = None
        if cafile is not None:
            import ssl

            self.context = ssl.create_default_context(cafile=str(cafile))
        self.args = [sys.executable, "-m", "fer8", "serve", "--port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.log = log
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServeProcess:
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=out, env=self.env)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with urllib.request.urlopen(
                    f"{self.url}/healthz", timeout=5, context=self.context
                ) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"fer8 serve did not start:\n{self.log_text()}")
            time.sleep(0.25)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class FakeLine:
    """The two LINE APIs the bot calls, recording what it sends.

    ``GET /v2/bot/message/{id}/content`` serves ``self.contents[id]`` (the data API),
    ``GET /external/{name}`` serves ``self.contents[name]`` (an external provider), and
    ``POST /v2/bot/message/reply`` records the reply. ``self.gate`` can hold content
    downloads back, to show the webhook answers before the bot's work is done.
    """

    TOKEN = "test-access-token"
    SECRET = "test-channel-secret"

    def __init__(self) -> None:
        self.contents: dict[str, bytes] = {}
        self.replies: list[dict] = []
        self.authorizations: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self._replied = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                fake.authorizations.append(self.headers.get("Authorization", ""))
                parts = self.path.strip("/").split("/")
                key = (
                    parts[3]
                    if parts[:3] == ["v2", "bot", "message"] and parts[4:] == ["content"]
                    else parts[1]
                    if parts[0] == "external"
                    else None
                )
                fake.gate.wait(timeout=60)
                if key not in fake.contents:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(fake.contents[key])))
                self.end_headers()
                self.wfile.write(fake.contents[key])

            def do_POST(self) -> None:
                fake.authorizations.append(self.headers.get("Authorization", ""))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v2/bot/message/reply":
                    self.send_error(404)
                    return
                with fake._replied:
                    fake.replies.append({"body": json.loads(body), "time": time.monotonic()})
                    fake._replied.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"sentMessages": [{"id": "1", "quoteToken": "q"}]}')

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeLine:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()

    def wait_for_replies(self, count: int, timeout: float = 60) -> list[dict]:
        with self._replied:
            self._replied.wait_for(lambda: len(self.replies) >= count, timeout=timeout)
        return self.replies

    @classmethod
    def sign(cls, body: bytes) -> str:
        digest = hmac.new(cls.SECRET.encode(), body, hashlib.sha256).digest()
        return base64.b64encode(digest).decode()


def webhook_body(*events: dict) -> bytes:
    return json.dumps({"destination": "Ufer8bot", "events": list(events)}).encode()


def message_event(
    event_id: str, reply_token: str, message: dict, *, redelivery: bool = False
) -> dict:
    return {
        "type": "message",
        "mode": "active",
        "timestamp": 1764000000000,
        "source": {"type": "user", "userId": "U0123456789abcdef"},
        "webhookEventId": event_id,
        "deliveryContext": {"isRedelivery": redelivery},
        "replyToken": reply_token,
        "message": message,
    }


def image_message(message_id: str, external_url: str | None = None) -> dict:
    provider = (
        {"type": "external", "originalContentUrl": external_url, "previewImageUrl": external_url}
        if external_url
        else {"type": "line"}
    )
    return {"type": "image", "id": message_id, "quoteToken": "quote", "contentProvider": provider}


def text_message(message_id: str, text: str) -> dict:
    return {"type": "text", "id": message_id, "quoteToken": "quote", "text": text}
