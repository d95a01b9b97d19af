"""``fer8 serve`` with videos: the HTTP API's per-frame rows and its own upload limit, and
the LINE bot's answer to a video message."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'fer8[serve]'")
httpx = pytest.importorskip("httpx")

from conftest import LABELS  # noqa: E402
from servers import FakeLine, UvicornThread, message_event, webhook_body  # noqa: E402
from test_serve import post_webhook  # noqa: E402
from videos import blank, face_of, moving, truncate, write_video  # noqa: E402

from fer8.results import Box, FrameResult, TrackedFace  # noqa: E402
from fer8.serving.line import (  # noqa: E402
    NO_FACE_IN_VIDEO_REPLY,
    UNREADABLE_VIDEO_REPLY,
    VIDEO_SAMPLING,
    LineSettings,
    video_reply_text,
)
from fer8.serving.runner import ModelRunner  # noqa: E402
from fer8.serving.server import create_app  # noqa: E402

IMAGE_LIMIT, VIDEO_LIMIT = 1_000_000, 4_000_000


@pytest.fixture(scope="module")
def videos(tmp_path_factory, astronaut):
    folder = tmp_path_factory.mktemp("uploads")
    face = face_of(astronaut, "astronaut")
    # Motion JPEG of a grainy picture: 32 frames make a file over the image limit and
    # under the video limit.
    grain = np.random.default_rng(0).integers(0, 40, (360, 640, 3), dtype=np.uint8)
    large = write_video(folder / "large.avi", [frame + grain for frame in moving(face, 32)])
    assert IMAGE_LIMIT < large.stat().st_size < VIDEO_LIMIT
    return {
        "moving": write_video(folder / "moving.mp4", moving(face, frames=10)),
        "large": large,
        "truncated": truncate(write_video(folder / "truncated.avi", moving(face, frames=20))),
        "empty": write_video(folder / "empty.mp4", [blank() for _ in range(5)]),
    }


@pytest.fixture(scope="module")
def api(predictor):
    app = create_app(predictor, max_upload_bytes=IMAGE_LIMIT, max_video_bytes=VIDEO_LIMIT)
    with UvicornThread(app) as url:
        yield url


def frames_of(predictor, path, source, **sampling):
    return [
        {**frame.to_dict(), "source": source} for frame in predictor.predict_video(path, **sampling)
    ]


def assert_same_frames(got: list[dict], want: list[dict]) -> None:
    assert [(f["source"], f["frame"], f["time"], f["error"]) for f in got] == [
        (f["source"], f["frame"], f["time"], f["error"]) for f in want
    ]
    for a, b in zip(got, want):
        assert [(x["track"], x["box"], x["label"]) for x in a["faces"]] == [
            (x["track"], x["box"], x["label"]) for x in b["faces"]
        ]
        for x, y in zip(a["faces"], b["faces"]):
            assert x["probabilities"] == pytest.approx(y["probabilities"], abs=1e-5)


def test_a_video_upload_returns_the_per_frame_rows(api, predictor, videos):
    path = videos["moving"]
    response = httpx.post(
        f"{api}/v1/predict",
        timeout=120,
        files={"file": ("clip.mp4", path.read_bytes(), "video/mp4")},
    )
    assert response.status_code == 200
    assert_same_frames(response.json(), frames_of(predictor, path, "clip.mp4", fps=5))
    assert [f["frame"] for f in response.json()] == [0, 2, 4, 6, 8]
    raw = httpx.post(
        f"{api}/v1/predict?every_frame=true",
        content=path.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
        timeout=120,
    )
    assert raw.status_code == 200  # recognised by its first bytes
    assert_same_frames(raw.json(), frames_of(predictor, path, "upload", every_frame=True))
    smooth = httpx.post(
        f"{api}/v1/predict?fps=2&smooth=1",
        content=path.read_bytes(),
        headers={"Content-Type": "video/mp4"},
        timeout=120,
    )
    assert_same_frames(smooth.json(), frames_of(predictor, path, "upload", fps=2, smooth=1))


def test_videos_have_an_upload_limit_of_their_own(api, videos, astronaut_path):
    large = videos["large"].read_bytes()
    declared = httpx.post(
        f"{api}/v1/predict", content=large, timeout=120, headers={"Content-Type": "video/x-msvideo"}
    )
    assert declared.status_code == 200 and len(declared.json()) == 16
    by_name = httpx.post(
        f"{api}/v1/predict",
        timeout=120,
        files={"file": ("large.avi", large, "application/octet-stream")},
    )
    assert by_name.status_code == 200 and len(by_name.json()) == 16

    def chunks():  # no Content-Length: counted as it streams
        for start in range(0, len(large), 64_000):
            yield large[start : start + 64_000]

    streamed = httpx.post(
        f"{api}/v1/predict",
        content=chunks(),
        timeout=120,
        headers={"Content-Type": "video/x-msvideo"},
    )
    assert streamed.status_code == 200
    too_big = httpx.post(
        f"{api}/v1/predict", content=bytes(VIDEO_LIMIT + 1), headers={"Content-Type": "video/mp4"}
    )
    assert too_big.status_code == 413
    assert too_big.json()["detail"] == (
        f"video upload larger than {VIDEO_LIMIT:,} bytes "
        "(3.8147 MB); fer8 serve --max-video-mb sets the limit"
    )
    # Images keep theirs, however the upload is sent.
    for headers, body in [
        ({"Content-Type": "image/png"}, {"content": large}),
        ({}, {"files": {"file": ("big.png", large, "image/png")}}),
        ({"Content-Type": "application/octet-stream"}, {"content": large}),
    ]:
        response = httpx.post(f"{api}/v1/predict", headers=headers, **body)
        assert response.status_code == 413, headers
    ok = httpx.post(f"{api}/v1/predict", files={"file": ("a.png", astronaut_path.read_bytes())})
    assert ok.status_code == 200 and len(ok.json()["faces"]) == 1
    # Only the prediction endpoint takes videos: elsewhere (the LINE webhook, say) a
    # body declared a video gets the ordinary limit.
    elsewhere = httpx.post(
        f"{api}/line/callback", content=large, headers={"Content-Type": "video/mp4"}
    )
    assert elsewhere.status_code == 413


def test_bad_videos(api, videos):
    truncated = httpx.post(
        f"{api}/v1/predict",
        timeout=120,
        files={"file": ("t.avi", videos["truncated"].read_bytes())},
    )
    assert truncated.status_code == 200
    *good, last = truncated.json()
    assert good and all(f["error"] is None for f in good)
    assert f"frame {last['frame']}" in last["error"] and "truncated" in last["error"]
    broken = httpx.post(
        f"{api}/v1/predict",
        content=b"\x00\x00\x00\x18ftypmp42 no video",
        headers={"Content-Type": "video/mp4"},
    )
    assert broken.status_code == 400 and broken.json()["detail"].startswith("upload: not a video")
    drawn = httpx.post(
        f"{api}/v1/predict?annotate=true",
        timeout=120,
        files={"file": ("clip.mp4", videos["moving"].read_bytes())},
    )
    assert drawn.status_code == 400 and "annotate=true takes photos" in drawn.json()["detail"]
    empty = httpx.post(
        f"{api}/v1/predict",
        timeout=120,
        files={"file": ("empty.mp4", videos["empty"].read_bytes())},
    )
    assert empty.status_code == 200 and [f["faces"] for f in empty.json()] == [[], [], []]


# --- sharing the model: photos and explanations between a video's turns ----------------


class Recording:
    """The predictor, recording in order each video frame it gives, each photo batch and
    each explanation it runs (with the thread that ran it). A video waits after its first
    frame until ``photo_queued`` is set, so that the photo is sure to arrive mid-video."""

    def __init__(self, predictor) -> None:
        self._predictor = predictor
        self.events: list[tuple[str, str]] = []
        self.video_started = threading.Event()
        self.photo_queued = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self._predictor, name)

    def _record(self, what: str) -> None:
        self.events.append((what, threading.current_thread().name))

    def predict_video(self, *args, **kwargs):
        for index, result in enumerate(self._predictor.predict_video(*args, **kwargs)):
            if index == 1:
                self.video_started.set()
                assert self.photo_queued.wait(60)
            self._record("video frame")
            yield result

    def predict_many(self, uploads):
        results = list(self._predictor.predict_many(uploads))
        self._record("photo")
        return results

    def explain(self, image):
        self._record("explain")
        return self._predictor.explain(image)


def test_a_photo_is_answered_between_the_turns_of_a_video(predictor, videos, astronaut_path):
    recording = Recording(predictor)
    app = create_app(recording, max_upload_bytes=IMAGE_LIMIT, max_video_bytes=VIDEO_LIMIT)
    runner = app.state.runner
    submit = runner.submit

    def submit_and_tell(data, source):
        future = submit(data, source)
        recording.photo_queued.set()
        return future

    runner.submit = submit_and_tell
    path = videos["large"]  # 32 frames, every one sampled
    with UvicornThread(app) as url, ThreadPoolExecutor(1) as pool:
        video = pool.submit(
            httpx.post,
            f"{url}/v1/predict?every_frame=true",
            timeout=120,
            files={"file": ("large.avi", path.read_bytes(), "video/x-msvideo")},
        )
        assert recording.video_started.wait(60)
        photo = httpx.post(
            f"{url}/v1/predict", timeout=120, files={"file": ("a.png", astronaut_path.read_bytes())}
        )
        assert photo.status_code == 200 and not video.done()
        frames = video.result().json()
    events = [what for what, _ in recording.events]
    assert events.count("video frame") == len(frames) == 32
    # The photo waited for the end of the video's first turn, not for the video.
    assert events.index("photo") == runner.video_frames < 32
    # Taken in turns, the video's frames and tracks are those it has alone.
    assert_same_frames(frames, frames_of(predictor, path, "large.avi", every_frame=True))


def test_a_video_whose_caller_has_gone_stops_at_the_end_of_its_turn(
    predictor, videos, astronaut_path
):
    """A handler whose client went away cancels its future; the rest of the video is not
    read, and the model goes on with other work."""
    recording = Recording(predictor)
    runner = ModelRunner(recording, video_frames=2)
    try:
        video = runner.submit_video(
            videos["large"].read_bytes(), "large.avi", {"every_frame": True}
        )
        assert recording.video_started.wait(60)
        assert video.cancel()
        recording.photo_queued.set()  # lets the video's first turn end
        photo = runner.submit(astronaut_path.read_bytes(), "a.png").result(timeout=60)
        assert len(photo.faces) == 1
    finally:
        runner.close()
    assert [what for what, _ in recording.events] == ["video frame"] * 2 + ["photo"]


def test_closing_the_runner_finishes_the_videos_queued_before(predictor, videos):
    runner = ModelRunner(predictor, video_frames=2)
    video = runner.submit_video(videos["moving"].read_bytes(), "clip.mp4", {"fps": 5})
    runner.close()
    assert len(video.result(timeout=0)) == 5


def test_explanations_wait_in_the_model_queue(predictor, astronaut_path):
    recording = Recording(predictor)
    with UvicornThread(create_app(recording)) as url:
        explained = httpx.post(
            f"{url}/v1/predict?explain=true",
            timeout=120,
            files={"file": ("a.png", astronaut_path.read_bytes())},
        )
        assert explained.status_code == 200 and explained.json()["faces"][0]["explanation"]
        broken = httpx.post(
            f"{url}/v1/predict?explain=true", files={"file": ("b.png", b"not a picture")}
        )
        assert broken.status_code == 400 and broken.json()["detail"].startswith("b.png: ")
    assert recording.events == [("explain", "fer8-model")]


# --- the LINE bot ------------------------------------------------------------------------


def video_message(message_id: str) -> dict:
    return {
        "type": "video",
        "id": message_id,
        "quoteToken": "quote",
        "duration": 2000,
        "contentProvider": {"type": "line"},
    }


def test_a_video_message_gets_each_face_over_time(predictor, videos):
    with FakeLine() as line:
        settings = LineSettings(
            FakeLine.SECRET, FakeLine.TOKEN, api_url=line.url, data_url=line.url
        )
        with UvicornThread(create_app(predictor, line=settings)) as url:
            for name in ("moving", "empty", "truncated"):
                line.contents[name] = videos[name].read_bytes()
            line.contents["junk"] = b"\x00\x00\x00\x18ftypmp42 no video"
            body = webhook_body(
                *(
                    message_event(f"ev-{n}", f"reply-{n}", video_message(n))
                    for n in ("moving", "empty", "junk", "truncated")
                )
            )
            assert post_webhook(url, body, FakeLine.sign(body)).status_code == 200
            replies = {
                r["body"]["replyToken"]: r["body"]["messages"][0]["text"]
                for r in line.wait_for_replies(4)
            }
    moving_frames = list(predictor.predict_video(videos["moving"], **VIDEO_SAMPLING))
    assert replies["reply-moving"] == video_reply_text(moving_frames, LABELS)
    assert replies["reply-moving"].startswith("Face 1: ") and "\n" not in replies["reply-moving"]
    assert replies["reply-empty"] == NO_FACE_IN_VIDEO_REPLY
    assert replies["reply-junk"] == UNREADABLE_VIDEO_REPLY
    damaged = replies["reply-truncated"].splitlines()
    assert damaged[0].startswith("Face 1: ") and damaged[-1].startswith("(The video is damaged")


def frame(time: float, *faces: tuple[int, dict[str, float]]) -> FrameResult:
    return FrameResult(
        "v",
        tuple(
            TrackedFace(Box(0, 0, 10, 10), max(p, key=p.get), max(p.values()), p, track=track)
            for track, p in faces
        ),
        frame=int(time * 10),
        time=time,
    )


def test_video_reply_wording():
    neutral = {"happy": 0.2, "neutral": 0.8}
    happy = {"happy": 0.9, "neutral": 0.1}
    labels = ("happy", "neutral")
    # Face 1: neutral for 2.4 s, a one-sample flicker of happy ignored, then happy.
    one = [frame(t / 5, (1, happy if (t >= 12 or t == 4) else neutral)) for t in range(40)]
    assert video_reply_text(one, labels) == "Face 1: Neutral, then Happy from 2.4 s (mostly Happy)"
    two = [frame(t / 5, (1, happy), (2, neutral)) for t in range(10)]
    assert video_reply_text(two, labels) == ("Face 1: Happy throughout\nFace 2: Neutral throughout")
    assert video_reply_text([frame(0.0), frame(0.2)], labels) == NO_FACE_IN_VIDEO_REPLY
    assert video_reply_text([FrameResult("v", (), "not a video")], labels) == UNREADABLE_VIDEO_REPLY
