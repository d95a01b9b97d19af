"""``fer8 serve``: a real uvicorn server on 127.0.0.1, real HTTP requests, a fake LINE API."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'fer8[serve]'")
httpx = pytest.importorskip("httpx")

from conftest import LABELS  # noqa: E402
from servers import (  # noqa: E402
    FakeLine,
    UvicornThread,
    image_message,
    message_event,
    text_message,
    webhook_body,
)

import fer8  # noqa: E402
from fer8.results import Box, Face, ImageResult  # noqa: E402
from fer8.serving.limits import BodySizeLimit  # noqa: E402
from fer8.serving.line import (  # noqa: E402
    NO_FACE_REPLY,
    UNREADABLE_REPLY,
    LineSettings,
    reply_text,
    usage_text,
)
from fer8.serving.server import create_app  # noqa: E402


@pytest.fixture(scope="module")
def api(predictor):
    with UvicornThread(create_app(predictor, max_upload_bytes=1_000_000)) as url:
        yield url


@pytest.fixture()
def bot(predictor):
    """A server with the LINE bot on, pointed at a fake LINE API."""
    with FakeLine() as line:
        settings = LineSettings(
            FakeLine.SECRET, FakeLine.TOKEN, api_url=line.url, data_url=line.url
        )
        with UvicornThread(create_app(predictor, line=settings)) as url:
            yield url, line


def expected(predictor, path, source):
    result = predictor.predict(path).to_dict()
    return {**result, "source": source}


def assert_same_result(got: dict, want: dict) -> None:
    """Equal JSON results: same structure, boxes and labels; probabilities within 1e-5."""
    assert {k: v for k, v in got.items() if k != "faces"} == {
        k: v for k, v in want.items() if k != "faces"
    }
    assert len(got["faces"]) == len(want["faces"])
    for a, b in zip(got["faces"], want["faces"]):
        assert a["box"] == b["box"] and a["label"] == b["label"]
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-5)
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)


# --- the HTTP API ------------------------------------------------------------------------


def test_multipart_and_raw_uploads_give_the_cli_json(api, predictor, astronaut_path, hopper_path):
    with open(astronaut_path, "rb") as file:
        response = httpx.post(f"{api}/v1/predict", files={"file": ("me.png", file, "image/png")})
    assert response.status_code == 200
    assert_same_result(response.json(), expected(predictor, astronaut_path, "me.png"))
    raw = httpx.post(
        f"{api}/v1/predict",
        content=hopper_path.read_bytes(),
        headers={"Content-Type": "image/jpeg"},
    )
    assert raw.status_code == 200
    assert_same_result(raw.json(), expected(predictor, hopper_path, "upload"))


def test_annotate_returns_the_drawn_jpeg(api, astronaut_path, astronaut):
    response = httpx.post(
        f"{api}/v1/predict?annotate=true",
        files={"file": ("a.png", astronaut_path.read_bytes(), "image/png")},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    drawn = fer8.load_image(response.content)
    assert drawn.shape == astronaut.shape
    assert np.abs(drawn.astype(int) - astronaut).mean() > 0.5  # something was drawn


def test_explain_adds_each_faces_heatmap_as_a_png(api, predictor, two_faces, tmp_path):
    from PIL import Image

    photo = tmp_path / "two.png"
    Image.fromarray(two_faces).save(photo)
    response = httpx.post(
        f"{api}/v1/predict?explain=true",
        files={"file": ("two.png", photo.read_bytes(), "image/png")},
    )
    assert response.status_code == 200
    answer = response.json()
    want = expected(predictor, photo, "two.png")
    assert_same_result(
        {
            **answer,
            "faces": [
                {k: v for k, v in face.items() if k != "explanation"} for face in answer["faces"]
            ],
        },
        want,
    )
    height, width = two_faces.shape[:2]
    for face in answer["faces"]:
        item = face["explanation"]
        assert item["label"] == face["label"]
        x, y, w, h = item["box"]
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
        picture = Image.open(io.BytesIO(base64.b64decode(item["png"])))
        assert picture.mode == "RGBA" and max(picture.size) <= 256
        assert np.asarray(picture)[..., 3].max() == 255  # the map's peak is opaque
    drawn = httpx.post(
        f"{api}/v1/predict?explain=true&annotate=true",
        files={"file": ("two.png", photo.read_bytes(), "image/png")},
    )
    assert drawn.headers["content-type"] == "image/jpeg"
    plain = httpx.post(
        f"{api}/v1/predict?annotate=true",
        files={"file": ("two.png", photo.read_bytes(), "image/png")},
    )
    assert (
        np.abs(fer8.load_image(drawn.content).astype(int) - fer8.load_image(plain.content)).mean()
        > 0.5
    )  # the heatmaps are drawn


def test_the_api_and_the_bot_answer_with_either_detector(tiny_model, astronaut_path):
    from fer8.pipeline.detection import detect

    image = fer8.load_image(astronaut_path)
    for detector in ("yunet", "haar"):
        predictor = fer8.Predictor(tiny_model, detector=detector, warmup=False)
        with FakeLine() as line:
            settings = LineSettings(
                FakeLine.SECRET, FakeLine.TOKEN, api_url=line.url, data_url=line.url
            )
            with UvicornThread(create_app(predictor, line=settings)) as url:
                response = httpx.post(
                    f"{url}/v1/predict",
                    files={"file": ("a.png", astronaut_path.read_bytes(), "image/png")},
                )
                assert response.status_code == 200
                (face,) = response.json()["faces"]
                assert face["box"] == detect(image, detector)[0].to_list()
                drawn = httpx.post(
                    f"{url}/v1/predict?annotate=true",
                    files={"file": ("a.png", astronaut_path.read_bytes(), "image/png")},
                )
                assert drawn.status_code == 200 and drawn.content[:2] == b"\xff\xd8"
                line.contents["m1"] = astronaut_path.read_bytes()
                body = webhook_body(message_event("e1", "r1", image_message("m1")))
                assert post_webhook(url, body, FakeLine.sign(body)).status_code == 200
                (reply,) = line.wait_for_replies(1)
                assert reply["body"]["messages"][0]["text"] == reply_text(
                    predictor.predict(astronaut_path)
                )


def test_bad_uploads_are_refused_with_the_right_status(api, astronaut_path):
    not_image = httpx.post(f"{api}/v1/predict", files={"file": ("a.png", b"hello", "image/png")})
    assert not_image.status_code == 400 and "not an image" in not_image.json()["detail"]
    assert (
        httpx.post(
            f"{api}/v1/predict", content=b"", headers={"Content-Type": "image/png"}
        ).status_code
        == 400
    )
    wrong_type = httpx.post(
        f"{api}/v1/predict", content=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    no_field = httpx.post(f"{api}/v1/predict", files={"photo": ("a.png", b"x", "image/png")})
    assert no_field.status_code == 400 and "'file'" in no_field.json()["detail"]


def test_oversized_uploads_get_413_declared_or_streamed(api, astronaut_path):
    big = bytes(1_200_000)
    declared = httpx.post(f"{api}/v1/predict", content=big, headers={"Content-Type": "image/png"})
    assert declared.status_code == 413

    def chunks():  # no Content-Length: the server must count as the body streams
        for start in range(0, len(big), 64_000):
            yield big[start : start + 64_000]

    streamed = httpx.post(
        f"{api}/v1/predict", content=chunks(), headers={"Content-Type": "image/png"}
    )
    assert streamed.status_code == 413
    multipart = httpx.post(f"{api}/v1/predict", files={"file": ("big.png", big, "image/png")})
    assert multipart.status_code == 413
    # The reply says which option of fer8 serve raises the limit.
    for reply in (declared, streamed, multipart):
        assert reply.json()["detail"] == (
            "upload larger than 1,000,000 bytes (0.953674 MB); "
            "fer8 serve --max-upload-mb sets the limit"
        )
    # The server is still fine afterwards.
    ok = httpx.post(f"{api}/v1/predict", files={"file": ("a.png", astronaut_path.read_bytes())})
    assert ok.status_code == 200


class FakeUpload:
    """An ASGI request body in chunks, recording the order of reads and the answer."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.events: list[str] = []

    async def receive(self) -> dict:
        body = self.chunks.pop(0)
        self.events.append(f"read {len(body)}")
        return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.events.append(f"answer {message['status']}")


async def read_whole_body(scope, receive, send):
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def reads_and_answer(headers: list, chunks: int, **limits) -> list[str]:
    """What BodySizeLimit does with an upload of ``chunks`` 300 kB chunks, in order."""
    upload = FakeUpload([bytes(300_000)] * chunks)
    limit = BodySizeLimit(read_whole_body, max_bytes=1_000_000, **limits)
    asyncio.run(limit({"type": "http", "headers": headers}, upload.receive, upload.send))
    return upload.events


@pytest.mark.parametrize(
    "headers", [[(b"content-length", b"1500000")], []], ids=["declared", "streamed"]
)
def test_an_oversized_body_is_read_to_its_end_before_the_413(headers):
    """The server closes the connection after a 413; closing it on unread upload bytes
    makes the kernel send a reset, which once destroyed the 413's body before the client
    read it (a CI failure: "peer closed connection ... expected 48")."""
    assert reads_and_answer(headers, 5) == ["read 300000"] * 5 + ["answer 413"]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"9000000")],
        [(b"content-length", b"1200000"), (b"expect", b"100-continue")],
    ],
    ids=["beyond-drain", "100-continue"],
)
def test_a_body_too_large_to_drain_or_not_yet_sent_is_refused_unread(headers):
    assert reads_and_answer(headers, 30, drain_bytes=2_000_000) == ["answer 413"]


def test_an_endless_stream_is_drained_only_up_to_the_cap():
    # 4 reads cross the limit; 7 more pass the 2 MB drain cap; the other 19 stay unread.
    assert reads_and_answer([], 30, drain_bytes=2_000_000) == ["read 300000"] * 11 + ["answer 413"]


def test_health_models_page_and_offline_docs(api):
    assert httpx.get(f"{api}/healthz").json() == {"status": "ok"}
    model = httpx.get(f"{api}/v1/models").json()
    assert model == {
        "name": "tiny",
        "labels": list(LABELS),
        "input_size": 48,
        "backbone": "test-cnn",
        "runtime": "onnxruntime",
    }
    page = httpx.get(f"{api}/")
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert httpx.get(f"{api}{asset}").status_code == 200
    docs = httpx.get(f"{api}/docs").text
    assert "/swagger/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert httpx.get(f"{api}/swagger/swagger-ui-bundle.js").status_code == 200
    schema = httpx.get(f"{api}/openapi.json").json()
    assert {"/v1/predict", "/v1/models", "/healthz"} <= set(schema["paths"])
    assert httpx.post(f"{api}/line/callback", content=b"{}").status_code == 404  # bot off


def test_fifty_concurrent_requests_while_health_stays_answered(
    api, predictor, astronaut_path, hopper_path
):
    paths = [astronaut_path, hopper_path]
    wanted = {p.name: expected(predictor, p, p.name) for p in paths}
    done = threading.Event()
    health: list[float] = []

    def poll_health() -> None:
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                start = time.monotonic()
                assert client.get(f"{api}/healthz").status_code == 200
                health.append(time.monotonic() - start)
                time.sleep(0.05)

    def upload(index: int) -> tuple[str, httpx.Response]:
        path = paths[index % 2]
        response = httpx.post(
            f"{api}/v1/predict", timeout=300, files={"file": (path.name, path.read_bytes())}
        )
        return path.name, response

    poller = threading.Thread(target=poll_health)
    poller.start()
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(upload, range(50)))
    done.set()
    poller.join()
    assert all(response.status_code == 200 for _, response in answers)
    for name, response in answers:
        assert_same_result(response.json(), wanted[name])
    # /healthz kept answering while the 50 predictions were queued behind the model.
    assert len(health) >= 5


# --- the LINE bot ------------------------------------------------------------------------


def post_webhook(url: str, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Line-Signature"] = signature
    return httpx.post(f"{url}/line/callback", content=body, headers=headers)


def test_photo_gets_the_expression_as_reply(bot, predictor, astronaut_path):
    url, line = bot
    line.contents["m1"] = astronaut_path.read_bytes()
    body = webhook_body(message_event("ev-1", "reply-1", image_message("m1")))
    response = post_webhook(url, body, FakeLine.sign(body))
    assert response.status_code == 200
    (reply,) = line.wait_for_replies(1)
    result = predictor.predict(astronaut_path)
    assert reply["body"] == {
        "replyToken": "reply-1",
        "notificationDisabled": False,
        "messages": [{"type": "text", "text": reply_text(result)}],
    }
    assert reply_text(result).startswith(result.faces[0].label.capitalize())
    assert set(line.authorizations) == {f"Bearer {FakeLine.TOKEN}"}


def test_several_faces_no_face_text_and_external_content(bot, predictor, two_faces, tmp_path):
    url, line = bot
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(two_faces).save(buffer, "JPEG", quality=95)
    line.contents["group"] = buffer.getvalue()
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank, "PNG")
    line.contents["blank.png"] = blank.getvalue()
    line.contents["broken"] = b"\xff\xd8 not a jpeg at all"
    body = webhook_body(
        message_event("ev-1b", "reply-1b", image_message("broken")),
        message_event("ev-2", "reply-2", image_message("group")),
        message_event("ev-3", "reply-3", image_message("x", f"{line.url}/external/blank.png")),
        message_event("ev-4", "reply-4", text_message("t1", "hello?")),
    )
    assert post_webhook(url, body, FakeLine.sign(body)).status_code == 200
    replies = {
        r["body"]["replyToken"]: r["body"]["messages"][0]["text"] for r in line.wait_for_replies(4)
    }
    assert replies["reply-1b"] == UNREADABLE_REPLY
    group = replies["reply-2"].splitlines()
    assert group[0] == "2 faces, largest first:" and group[1].startswith("1. ")
    assert replies["reply-2"] == reply_text(predictor.predict(buffer.getvalue()))
    assert replies["reply-3"] == NO_FACE_REPLY
    assert replies["reply-4"] == usage_text(LABELS)


@pytest.mark.parametrize("signature", [None, "bad-signature", "altered"])
def test_bad_signatures_are_refused(bot, astronaut_path, signature):
    url, line = bot
    line.contents["m1"] = astronaut_path.read_bytes()
    body = webhook_body(message_event("ev-9", "reply-9", image_message("m1")))
    if signature == "altered":  # signed, then changed on the way
        signature = FakeLine.sign(body)
        body = body.replace(b"reply-9", b"reply-X")
    response = post_webhook(url, body, signature)
    assert response.status_code == 400
    time.sleep(0.5)
    assert line.replies == []


def test_redelivered_events_are_answered_once(bot, astronaut_path):
    url, line = bot
    line.contents["m1"] = astronaut_path.read_bytes()
    first = webhook_body(message_event("ev-5", "reply-5", image_message("m1")))
    again = webhook_body(message_event("ev-5", "reply-5", image_message("m1"), redelivery=True))
    assert post_webhook(url, first, FakeLine.sign(first)).status_code == 200
    assert post_webhook(url, again, FakeLine.sign(again)).status_code == 200
    line.wait_for_replies(1)
    time.sleep(1.0)  # time for a wrong second reply to arrive
    assert len(line.replies) == 1


def test_webhook_answers_before_the_reply_is_made(bot, astronaut_path):
    url, line = bot
    line.contents["m1"] = astronaut_path.read_bytes()
    line.gate.clear()  # the image download hangs until released
    body = webhook_body(message_event("ev-6", "reply-6", image_message("m1")))
    sent = time.monotonic()
    assert post_webhook(url, body, FakeLine.sign(body)).status_code == 200
    assert line.replies == []  # answered while the bot's work is still pending
    line.gate.set()
    (reply,) = line.wait_for_replies(1)
    assert reply["body"]["replyToken"] == "reply-6"
    # Webhook to reply, for the record (LINE's reply token lasts about a minute).
    print(f"webhook -> reply: {1000 * (reply['time'] - sent):.0f} ms")


# --- reply wording -----------------------------------------------------------------------


def face(x: int, probabilities: dict[str, float]) -> Face:
    label = max(probabilities, key=probabilities.get)
    return Face(Box(x, 0, 10, 10), label, probabilities[label], probabilities)


def test_reply_text_wording():
    one = ImageResult("p", (face(0, {"happy": 0.92, "surprised": 0.05, "sad": 0.03}),))
    assert reply_text(one) == "Happy 92.0% (Surprised 5.0%)"
    two = ImageResult(
        "p", (face(50, {"sad": 0.7, "neutral": 0.3}), face(5, {"angry": 0.6, "disgusted": 0.4}))
    )
    # In the results' order, largest first, as fer8 predict and the web page number them.
    assert reply_text(two) == (
        "2 faces, largest first:\n1. Sad 70.0% (Neutral 30.0%)\n2. Angry 60.0% (Disgusted 40.0%)"
    )
    assert reply_text(ImageResult("p")) == NO_FACE_REPLY
    assert "couldn't read" in reply_text(ImageResult("p", (), "corrupt"))


def test_one_rounding_in_the_table_the_drawn_label_and_the_bot(monkeypatch):
    """99.5% was "99.5%" in the table, "100%" on the picture and in the bot."""
    import io

    import cv2
    import numpy as np

    from fer8.output import make_writer
    from fer8.pipeline.annotate import annotate

    result = ImageResult("p", (face(20, {"happy": 0.995, "sad": 0.005}),))
    table = io.StringIO()
    writer = make_writer("table", table, ("happy", "sad"))
    writer.write(result)
    writer.close()
    drawn = []
    put_text = cv2.putText
    monkeypatch.setattr(
        cv2, "putText", lambda image, text, *a: drawn.append(text) or put_text(image, text, *a)
    )
    annotate(np.zeros((100, 100, 3), np.uint8), result)
    assert "99.5%" in table.getvalue().splitlines()[1]
    assert drawn == ["Happy 99.5%"]
    assert reply_text(result) == "Happy 99.5% (Sad 0.5%)"


def test_line_settings_come_from_the_environment():
    assert LineSettings.from_env({}) is None
    assert LineSettings.from_env({"LINE_CHANNEL_SECRET": "s"}) is None
    settings = LineSettings.from_env(
        {
            "LINE_CHANNEL_SECRET": "s",
            "LINE_CHANNEL_ACCESS_TOKEN": "t",
            "FER8_LINE_DATA_URL": "http://127.0.0.1:9",
        }
    )
    assert settings == LineSettings("s", "t", "https://api.line.me", "http://127.0.0.1:9")


# --- the command -------------------------------------------------------------------------


def test_fer8_serve_command(tiny_model_path, astronaut_path, tmp_path):
    """`fer8 serve` as a user runs it: starts, answers, logs whether the bot is on."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "LINE_CHANNEL_SECRET": "s",
        "LINE_CHANNEL_ACCESS_TOKEN": "t",
        "FER8_LINE_API_URL": "http://127.0.0.1:9",
        "FER8_LINE_DATA_URL": "http://127.0.0.1:9",
    }
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fer8",
                "serve",
                "--model",
                str(tiny_model_path),
                "--port",
                str(port),
                "--max-upload-mb",
                "1",
            ],
            stdout=out,
            stderr=out,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.25)
        response = httpx.post(
            f"{url}/v1/predict", files={"file": ("a.png", astronaut_path.read_bytes())}
        )
        assert response.status_code == 200 and len(response.json()["faces"]) == 1
        too_big = httpx.post(
            f"{url}/v1/predict", content=bytes(1_100_000), headers={"Content-Type": "image/png"}
        )
        assert too_big.status_code == 413
        unsigned = httpx.post(f"{url}/line/callback", content=b"{}")
        assert unsigned.status_code == 400  # the webhook is on, and wants a signature
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "LINE bot on: webhook at /line/callback" in log.read_text()
