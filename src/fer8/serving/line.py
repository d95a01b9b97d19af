"""The LINE bot: a user sends a photo, the bot replies with each face's expression; a
video, and it replies with each face's expression over time.

The webhook (``POST /line/callback``) checks ``X-Line-Signature`` over the raw body,
answers 200 at once and handles each event in a worker thread: fetch the image
(``MessagingApiBlob.get_message_content``, or the sender's URL for an external content
provider), classify it, reply with the reply token. LINE redelivers events that it thinks
were missed; each ``webhookEventId`` is answered once.

Uses the official line-bot-sdk v3 (``pip install 'fer8[serve]'``); only ``fer8 serve``
imports this module.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, HTTPException, Request
from linebot.v3 import WebhookParser
from linebot.v3.exceptions import InvalidSignatureError
from linebot.v3.messaging import (
    ApiClient,
    Configuration,
    MessagingApi,
    MessagingApiBlob,
    ReplyMessageRequest,
    TextMessage,
)
from linebot.v3.webhooks import ImageMessageContent, MessageEvent, VideoMessageContent

from fer8.errors import InvalidImageError
from fer8.labels import display_name, percent
from fer8.options import SamplingOptions
from fer8.results import FrameResult, ImageResult

if TYPE_CHECKING:
    from fer8.serving.runner import ModelRunner

logger = logging.getLogger(__name__)

NO_FACE_REPLY = (
    "I couldn't find a face in this photo. Try a clear, front-facing photo "
    "where the face is not too small."
)
UNREADABLE_REPLY = "Sorry, I couldn't read that image. Please send a JPEG or PNG photo."
NO_FACE_IN_VIDEO_REPLY = (
    "I couldn't find a face in this video. Try one where a face is "
    "clearly visible and not too small."
)
UNREADABLE_VIDEO_REPLY = "Sorry, I couldn't read that video. Please send an MP4 video."
#: How the bot samples a video: every 0.2 s, each face's probabilities averaged over half
#: a second, so that a blink is not a change of expression.
VIDEO_SAMPLING = SamplingOptions(fps=5.0, smooth=0.5)
#: Faces described in a video reply, at most (in order of appearance).
MAX_VIDEO_FACES = 5
# Images fetched from an external content provider are refused past this size.
MAX_EXTERNAL_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class LineSettings:
    """A LINE channel's credentials and the API's base URLs (overridable for proxies and tests)."""

    channel_secret: str
    access_token: str
    api_url: str = "https://api.line.me"
    data_url: str = "https://api-data.line.me"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LineSettings | None:
        """Settings from ``LINE_CHANNEL_SECRET``, ``LINE_CHANNEL_ACCESS_TOKEN``,
        ``FER8_LINE_API_URL`` and ``FER8_LINE_DATA_URL``; ``None`` when either credential
        is missing."""
        if environ is None:
            environ = os.environ
        secret = environ.get("LINE_CHANNEL_SECRET")
        token = environ.get("LINE_CHANNEL_ACCESS_TOKEN")
        if not secret or not token:
            return None
        return cls(
            channel_secret=secret,
            access_token=token,
            api_url=environ.get("FER8_LINE_API_URL") or cls.api_url,
            data_url=environ.get("FER8_LINE_DATA_URL") or cls.data_url,
        )


def reply_text(result: ImageResult) -> str:
    """The bot's answer for one photo: ``Happy 92.4% (Surprised 5.1%)``, a line per face,
    largest first (the results' order, as in ``fer8 predict`` and on the web page)."""
    if result.error is not None:
        return UNREADABLE_REPLY
    if not result.faces:
        return NO_FACE_REPLY
    lines = []
    faces = result.faces
    for number, face in enumerate(faces, start=1):
        ranked = sorted(face.probabilities.items(), key=lambda item: item[1], reverse=True)
        text = f"{display_name(face.label)} {percent(face.confidence)}"
        if len(ranked) > 1:
            runner_up, probability = ranked[1]
            text += f" ({display_name(runner_up)} {percent(probability)})"
        lines.append(f"{number}. {text}" if len(faces) > 1 else text)
    if len(faces) > 1:
        lines.insert(0, f"{len(faces)} faces, largest first:")
    return "\n".join(lines)


def video_reply_text(results: list[FrameResult], labels: tuple[str, ...]) -> str:
    """The bot's answer for a video: each face's expression and how it changed, one line
    per face in order of appearance: ``Face 1: Neutral, then Happy from 2.4 s (mostly
    Happy)``."""
    from fer8.pipeline.timeline import Timeline

    if not results or (results[0].error is not None and results[0].frame is None):
        return UNREADABLE_VIDEO_REPLY
    timeline = Timeline(labels).extend(results)
    broken = results[-1].error is not None
    if not timeline.tracks:
        return UNREADABLE_VIDEO_REPLY if broken and len(results) == 1 else NO_FACE_IN_VIDEO_REPLY
    tracks = timeline.tracks
    lines = [
        f"Face {number}: {timeline.summary(track)}"
        for number, track in enumerate(tracks[:MAX_VIDEO_FACES], start=1)
    ]
    if len(tracks) > MAX_VIDEO_FACES:
        lines.append(f"... and {len(tracks) - MAX_VIDEO_FACES} more faces")
    if broken:
        readable = max((r.time or 0.0) for r in results[:-1]) if len(results) > 1 else 0.0
        lines.append(f"(The video is damaged: I could read only its first {readable:.1f} s.)")
    return "\n".join(lines)


def usage_text(labels: tuple[str, ...]) -> str:
    names = ", ".join(display_name(label) for label in labels)
    return f"Send me a photo or a video of a face and I'll tell you its expression ({names})."


class _SeenEvents:
    """The most recent webhook event ids, to answer each event once."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def first_time(self, event_id: str) -> bool:
        with self._lock:
            if event_id in self._ids:
                return False
            self._ids[event_id] = None
            if len(self._ids) > self._capacity:
                self._ids.popitem(last=False)
            return True


class LineBot:
    """Handles verified webhook events for one channel."""

    def __init__(self, settings: LineSettings, runner: ModelRunner, *, workers: int = 4) -> None:
        self.settings = settings
        self.runner = runner
        self.parser = WebhookParser(settings.channel_secret)
        self._api = ApiClient(
            Configuration(host=settings.api_url, access_token=settings.access_token)
        )
        self._data_api = _HostApiClient(
            Configuration(host=settings.data_url, access_token=settings.access_token)
        )
        self._seen = _SeenEvents()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fer8-line")
        logger.info(
            "LINE bot on: webhook at /line/callback, API %s, content %s",
            settings.api_url,
            settings.data_url,
        )

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.post("/line/callback", summary="LINE Messaging API webhook")
        async def callback(request: Request) -> dict[str, str]:
            signature = request.headers.get("x-line-signature")
            if not signature:
                raise HTTPException(400, detail="missing X-Line-Signature header")
            body = await request.body()
            received = time.perf_counter()
            try:
                # In a thread: a few megabytes of events take the SDK seconds to parse,
                # and the event loop must keep answering meanwhile.
                events = await anyio.to_thread.run_sync(
                    self.parser.parse, body.decode("utf-8"), signature
                )
            except (InvalidSignatureError, UnicodeDecodeError):
                raise HTTPException(400, detail="invalid signature") from None
            except Exception as exc:
                # Signed, but not a body the SDK can read. Its parser raises whatever the
                # JSON makes it raise: fuzzing found RecursionError (deep nesting), which
                # escaped as a 500 with a traceback, besides ValueError, KeyError, TypeError.
                problem = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
                raise HTTPException(400, detail=f"malformed webhook body ({problem})") from None
            for event in events:
                event_id = getattr(event, "webhook_event_id", None)
                if event_id is not None and not self._seen.first_time(event_id):
                    logger.info("LINE event %s already answered; redelivery ignored", event_id)
                    continue
                self._pool.submit(self._handle_logged, event, received)
            return {"status": "ok"}

        return router

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _handle_logged(self, event: Any, received: float) -> None:
        try:
            if self.handle(event):
                logger.info(
                    "LINE event %s: replied %.0f ms after the webhook",
                    getattr(event, "webhook_event_id", "?"),
                    1000 * (time.perf_counter() - received),
                )
        except Exception:  # a failed reply must not take the worker down
            logger.exception("LINE event %s failed", getattr(event, "webhook_event_id", "?"))

    def handle(self, event: Any) -> bool:
        """Answer one event; returns whether a reply was sent."""
        if not isinstance(event, MessageEvent) or not event.reply_token:
            return False  # follows, unfollows, joins...: nothing to answer
        if isinstance(event.message, VideoMessageContent):
            self._reply(event.reply_token, self._video_reply(event.message))
            return True
        if not isinstance(event.message, ImageMessageContent):
            self._reply(event.reply_token, usage_text(self.runner.predictor.labels))
            return True
        source = f"line-message-{event.message.id}"
        try:
            data = self._content(event.message)
        except InvalidImageError as exc:  # an external image: too large, not http(s)...
            result = ImageResult(source, (), exc.problem)
        except Exception as exc:  # LINE's content API failed (expired, missing): say so
            logger.warning("LINE message %s: content not fetched (%s)", event.message.id, exc)
            result = ImageResult(source, (), f"content not fetched ({type(exc).__name__})")
        else:
            result = self.runner.submit(data, source).result()
        if result.error is not None:
            logger.info("LINE message %s: %s", event.message.id, result.error)
        self._reply(event.reply_token, reply_text(result))
        return True

    def _video_reply(self, message: Any) -> str:
        source = f"line-message-{message.id}"
        try:
            data = self._content(message)
        except InvalidImageError as exc:  # an external video: too large, not http(s)...
            logger.info("LINE message %s: %s", message.id, exc.problem)
            return UNREADABLE_VIDEO_REPLY
        except Exception as exc:  # LINE's content API failed (expired, missing): say so
            logger.warning("LINE message %s: content not fetched (%s)", message.id, exc)
            return UNREADABLE_VIDEO_REPLY
        results = self.runner.submit_video(data, source, VIDEO_SAMPLING).result()
        if results and results[-1].error is not None:
            logger.info("LINE message %s: %s", message.id, results[-1].error)
        return video_reply_text(results, self.runner.predictor.labels)

    def _content(self, message: Any) -> bytes:
        provider = message.content_provider
        if provider.type == "external" and provider.original_content_url:
            return _download(provider.original_content_url, MAX_EXTERNAL_BYTES)
        return bytes(MessagingApiBlob(self._data_api).get_message_content(message.id))

    def _reply(self, reply_token: str, text: str) -> None:
        request = ReplyMessageRequest(reply_token=reply_token, messages=[TextMessage(text=text)])
        MessagingApi(self._api).reply_message(request)


class _HostApiClient(ApiClient):
    """An SDK client that sends every call to its configured host.

    The SDK's ``MessagingApiBlob`` hard-codes ``https://api-data.line.me`` in each call
    instead of reading ``Configuration.host``; routing it here is what makes
    ``FER8_LINE_DATA_URL`` (a proxy, a test server) work.
    """

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["_host"] = self.configuration.host
        return super().call_api(*args, **kwargs)


def _download(url: str, limit: int) -> bytes:
    """Fetch an external content provider's image, refusing more than ``limit`` bytes.

    Only http(s): urllib also opens ``file:`` and ``ftp:`` URLs, and a ``file:`` URL in
    a webhook would have been read from the server's own disk. A failed download is an
    unreadable image, so the sender still gets an answer.
    """
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise InvalidImageError(url, "not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            data = response.read(limit + 1)
    except OSError as exc:  # URLError, HTTPError, timeouts
        raise InvalidImageError(url, f"download failed ({exc})") from None
    if len(data) > limit:
        raise InvalidImageError(url, f"image larger than {limit:,} bytes")
    return data
