"""The web page in real headless Chromium: upload a photo, see each face labelled.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Skipped
without them on a developer's machine, but a failure in CI (``CI`` set), where the page
must be tested. The screenshot is saved to ``test-artifacts/web-*.png`` (or
``$FER8_TEST_ARTIFACTS``): the page before an upload, with a result, with a label at
the picture's right edge, and with an error.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'fer8[serve]'")
webdriver = pytest.importorskip("selenium.webdriver")

from conftest import ROOT, save  # noqa: E402
from servers import UvicornThread  # noqa: E402

import fer8  # noqa: E402
from fer8.labels import display_name, percent  # noqa: E402
from fer8.results import Box, Face, ImageResult  # noqa: E402
from fer8.serving.server import create_app  # noqa: E402

pytestmark = pytest.mark.slow  # Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def chromium(*flags: str):
    """A headless Chromium under chromedriver, with ``flags`` added."""
    if not (CHROMIUM and CHROMEDRIVER):
        message = (
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,900",
        *flags,
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def screenshot(browser, name: str) -> Path:
    artifacts = Path(os.environ.get("FER8_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(artifacts / name))
    return artifacts / name


def console_errors(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_before_an_upload_the_page_shows_one_picker_and_no_canvas(browser, predictor):
    from selenium.webdriver.common.by import By

    with UvicornThread(create_app(predictor)) as url:
        browser.get(url)
        browser.get_log("browser")  # (only this page's messages below)
        browser.refresh()
        drop = browser.find_element(By.ID, "drop")
        assert drop.is_displayed() and "choose one" in drop.text
        pickers = [
            e
            for e in browser.find_elements(By.CSS_SELECTOR, "input[type=file]")
            if e.is_displayed()
        ]
        assert pickers == []  # the drop zone is the one picker; the input is not drawn
        assert not browser.find_element(By.ID, "result").is_displayed()
        assert not browser.find_element(By.ID, "canvas").is_displayed()
        icon = browser.execute_async_script(
            "const done = arguments[0]; fetch('/favicon.ico').then((r) => "
            "done([r.status, r.headers.get('content-type')]));"
        )
        assert icon == [200, "image/x-icon"]
        assert (
            browser.execute_script(
                "return document.querySelector('link[rel=icon]').getAttribute('href')"
            )
            == "/favicon.ico"
        )
        assert console_errors(browser) == []  # no 404 for the icon, no script error
        screenshot(browser, "web-empty.png")


def test_upload_a_photo_and_see_its_expression(browser, default_predictor, astronaut_path):
    """The bundled model, as `fer8 serve` uses it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    predictor = default_predictor
    with UvicornThread(create_app(predictor)) as url:
        api = httpx.post(
            f"{url}/v1/predict", files={"file": ("astronaut.png", astronaut_path.read_bytes())}
        ).json()
        browser.get(url)
        browser.find_element(By.ID, "file").send_keys(str(astronaut_path))
        WebDriverWait(browser, 60).until(
            lambda driver: driver.execute_script("return document.body.dataset.state") == "done"
        )
        faces = browser.find_elements(By.CSS_SELECTOR, "#faces .face")
        assert len(faces) == len(api["faces"]) == 1
        label = faces[0].find_element(By.CSS_SELECTOR, ".label").text
        confidence = faces[0].find_element(By.CSS_SELECTOR, ".confidence").text
        assert label == display_name(api["faces"][0]["label"]) == "Happy"  # she smiles
        assert confidence == percent(api["faces"][0]["confidence"])  # as the table says
        bars = faces[0].find_elements(By.CSS_SELECTOR, ".bar")
        assert {bar.get_attribute("data-label") for bar in bars} == set(predictor.labels)
        assert "1 face in astronaut.png" in browser.find_element(By.ID, "status").text
        assert f"Model {predictor.model.spec.name}" in browser.find_element(By.ID, "model").text
        # The canvas shows the photo at its own size, with the box drawn on it.
        size = browser.execute_script(
            "const c = document.getElementById('canvas'); return [c.width, c.height];"
        )
        assert size == [512, 512]
        x, y, w, h = api["faces"][0]["box"]
        edge = browser.execute_script(
            f"return Array.from(document.getElementById('canvas').getContext('2d')"
            f".getImageData({x}, {y + h // 2}, 1, 1).data);"
        )
        assert edge[:3] != [0, 0, 0]

        screenshot(browser, "web-page.png")


class EdgePredictor:
    """Finds one face at the right edge of every photo, as a photo can have: a stand-in
    for the predictor that puts the label where the page must keep it inside."""

    batch_size = 16  # the model runner takes a video's frames in turns of this many

    def __init__(self, model) -> None:
        self.model = model

    def predict_many(self, uploads):
        for upload in uploads:
            height, width = fer8.load_image(upload).shape[:2]
            probabilities = {label: 0.0 for label in self.model.labels}
            probabilities["disgusted"] = 1.0
            face = Face(Box(width - 50, 40, 46, 46), "disgusted", 1.0, probabilities)
            yield ImageResult(upload.name, (face,), None)


def test_a_label_at_the_right_edge_stays_inside_the_picture(
    browser, tiny_model, astronaut, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = save(astronaut[:200, :300], tmp_path / "edge.png")
    with UvicornThread(create_app(EdgePredictor(tiny_model))) as url:
        browser.get(url)
        browser.execute_script("""
            window.labelBoxes = [];
            const fillRect = CanvasRenderingContext2D.prototype.fillRect;
            CanvasRenderingContext2D.prototype.fillRect = function (x, y, w, h) {
              window.labelBoxes.push([x, y, w, h, this.canvas.width, this.canvas.height]);
              return fillRect.call(this, x, y, w, h);
            };""")
        browser.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(browser, 60).until(
            lambda driver: driver.execute_script("return document.body.dataset.state") == "done"
        )
        (label,) = browser.execute_script("return window.labelBoxes;")
        x, y, w, h, canvas_width, canvas_height = label
        assert canvas_width == 480 and canvas_height == 320  # enlarged to a 320-pixel side
        assert 0 <= x and x + w <= canvas_width and 0 <= y and y + h <= canvas_height
        assert w > 50 * 320 / 200  # a label wider than the room right of the box's edge
        screenshot(browser, "web-edge-label.png")


def test_a_file_that_is_not_an_image_shows_the_error(browser, predictor, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    notes = tmp_path / "notes.png"
    notes.write_text("not really a picture")
    with UvicornThread(create_app(predictor)) as url:
        browser.get(url)
        browser.find_element(By.ID, "file").send_keys(str(notes))
        status = browser.find_element(By.ID, "status")
        WebDriverWait(browser, 60).until(lambda _: "not an image" in status.text)
        assert "error" in status.get_attribute("class")
        assert "Pillow" not in status.text  # says what is wrong, not which library found it
        assert not browser.find_element(By.ID, "canvas").is_displayed()
        screenshot(browser, "web-error.png")


def test_the_api_docs_page_shows_the_predict_endpoint_and_its_parameters(browser, predictor):
    """/docs is Swagger UI, served by fer8: it must read the OpenAPI version FastAPI
    writes (3.1; Swagger UI 4 showed only "Unable to render this definition")."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with UvicornThread(create_app(predictor)) as url:
        assert httpx.get(f"{url}/openapi.json").json()["openapi"].startswith("3.1")
        browser.get_log("browser")  # (only this page's messages below)
        browser.get(f"{url}/docs")
        WebDriverWait(browser, 60).until(
            lambda driver: driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        )
        assert "Unable to render" not in browser.find_element(By.TAG_NAME, "body").text
        paths = {
            e.get_attribute("data-path"): e
            for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        }
        assert {"/v1/predict", "/v1/models", "/healthz"} <= set(paths)
        paths["/v1/predict"].click()  # unfold it: its parameters and request body
        WebDriverWait(browser, 30).until(
            lambda driver: driver.find_elements(By.CSS_SELECTOR, ".parameters .parameter__name")
        )
        names = {
            e.text.split()[0]
            for e in browser.find_elements(By.CSS_SELECTOR, ".parameters .parameter__name")
        }
        # The query's five, and the request body's multipart field.
        assert names == {"annotate", "explain", "fps", "every_frame", "smooth", "file"}
        assert "multipart/form-data" in browser.find_element(By.CSS_SELECTOR, ".opblock-body").text
        assert console_errors(browser) == []
        screenshot(browser, "web-docs.png")


def test_with_api_keys_the_page_asks_for_the_key_once(browser, predictor, astronaut_path):
    """A wrong key is asked again; the right one is kept for the tab's session, so a
    reload uses it without asking, and it goes with every /v1 request."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    key = "lab-key-0123456789"
    with UvicornThread(create_app(predictor, api_keys=[key])) as url:
        browser.get(url)
        browser.execute_script("sessionStorage.clear();")
        browser.refresh()
        form = browser.find_element(By.ID, "key-form")
        WebDriverWait(browser, 30).until(lambda _: form.is_displayed())
        assert not browser.find_element(By.ID, "key-error").is_displayed()
        assert browser.find_element(By.ID, "key").get_attribute("type") == "password"
        browser.find_element(By.ID, "key").send_keys("not-the-key")
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        error = browser.find_element(By.ID, "key-error")
        WebDriverWait(browser, 30).until(lambda _: error.is_displayed() and form.is_displayed())
        screenshot(browser, "web-key.png")
        browser.find_element(By.ID, "key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        model = browser.find_element(By.ID, "model")
        WebDriverWait(browser, 30).until(
            lambda _: f"Model {predictor.model.spec.name}" in model.text
        )
        assert not form.is_displayed()
        assert browser.execute_script("return sessionStorage.getItem('fer8-api-key')") == key

        browser.get_log("browser")  # (the 401 and 403 above were logged: drop them)
        browser.refresh()  # the same tab: not asked again
        model = browser.find_element(By.ID, "model")
        WebDriverWait(browser, 30).until(
            lambda _: f"Model {predictor.model.spec.name}" in model.text
        )
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        browser.find_element(By.ID, "file").send_keys(str(astronaut_path))
        WebDriverWait(browser, 60).until(
            lambda driver: driver.execute_script("return document.body.dataset.state") == "done"
        )
        assert "1 face in astronaut.png" in browser.find_element(By.ID, "status").text
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        assert console_errors(browser) == []  # no request was refused this time


# --- The page as an app: the webcam, videos, explanations, a phone's window -----------


def has_content(path: Path, box: tuple[int, int, int, int] | None = None) -> bool:
    """Whether a screenshot (or a box of it, in CSS pixels) is more than a blank page: many
    colours, and a spread of brightness a page of text on a plain background lacks."""
    import numpy as np
    from PIL import Image

    picture = np.asarray(Image.open(path).convert("RGB"))
    if box is not None:
        x, y, w, h = box
        picture = picture[y : y + h, x : x + w]
    colours = len(np.unique(picture.reshape(-1, 3), axis=0))
    return picture.size > 0 and colours > 500 and float(picture.std()) > 25


def element_box(browser, element_id: str) -> tuple[int, int, int, int]:
    rect = browser.execute_script(
        f"const r = document.getElementById('{element_id}').getBoundingClientRect();"
        "return [r.left, r.top, r.width, r.height].map(Math.round);"
    )
    return tuple(rect)


def wait_for(browser, script: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(
        lambda driver: driver.execute_script(script)
    )


@pytest.fixture(scope="module")
def clip_frames(astronaut, hopper_path):
    """The astronaut's head drifting slowly on a plain background, 640x360."""
    from videos import blank, face_of, place

    face = face_of(astronaut, "astronaut")
    return [place(blank(), face, 200 + 2 * (i % 10)) for i in range(20)]


# Chromium's fake camera reads raw Y4M; the page is on 127.0.0.1, where browsers allow it.
CAMERA_FLAGS = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")


def test_the_webcam_shows_live_labels_one_frame_in_flight(default_predictor, clip_frames, tmp_path):
    """The fake camera shows the astronaut; the page sends its frames as fast as the
    server answers, one at a time, and labels her live, with a timeline. The frames a
    second it reaches are written to test-artifacts/web-camera-fps.txt."""
    import time

    from selenium.webdriver.common.by import By
    from videos import write_y4m

    clip = write_y4m(tmp_path / "clip.y4m", clip_frames)
    expected = default_predictor.predict(clip_frames[0]).faces
    assert len(expected) == 1
    browser = chromium(*CAMERA_FLAGS, f"--use-file-for-fake-video-capture={clip}")
    try:
        with UvicornThread(create_app(default_predictor)) as url:
            browser.get(url)
            assert "nothing is stored" in browser.find_element(By.TAG_NAME, "header").text.lower()
            browser.execute_script("""
                window.inFlight = 0; window.mostInFlight = 0; window.sent = 0;
                const original = window.fetch;
                window.fetch = async (...args) => {
                  const counted = String(args[0]).startsWith('/v1/predict');
                  if (counted) { window.sent += 1; window.inFlight += 1;
                                 window.mostInFlight = Math.max(window.mostInFlight, window.inFlight); }
                  try { return await original(...args); }
                  finally { if (counted) window.inFlight -= 1; }
                };""")
            browser.find_element(By.ID, "mode-camera").click()
            panel = browser.find_element(By.ID, "camera-panel")
            assert (
                panel.is_displayed()
                and "--ssl-certfile" in panel.text
                and "localhost" in panel.text
            )
            browser.find_element(By.ID, "camera-toggle").click()
            wait_for(
                browser,
                "return document.querySelectorAll('#faces .face').length === 1"
                " && Number(document.body.dataset.frames) >= 3",
                120,
            )
            label = browser.find_element(By.CSS_SELECTOR, "#faces .face .label").text
            assert label == display_name(expected[0].label) == "Happy"
            started = time.monotonic()
            frames_before = int(browser.execute_script("return document.body.dataset.frames"))
            time.sleep(15)
            frames = int(browser.execute_script("return document.body.dataset.frames"))
            measured = (frames - frames_before) / (time.monotonic() - started)
            shown = float(browser.execute_script("return document.body.dataset.fps"))
            assert browser.execute_script("return window.mostInFlight") == 1
            assert measured > 0.2 and abs(shown - measured) < max(0.5, measured / 2)
            assert "frames a second" in browser.find_element(By.ID, "fps").text
            rows = browser.find_elements(By.CSS_SELECTOR, "#timelines .timeline")
            assert len(rows) == 1 and int(rows[0].get_attribute("data-samples")) >= 3
            assert "Happy" in rows[0].find_element(By.TAG_NAME, "canvas").get_attribute(
                "aria-label"
            )
            browser.execute_script("document.getElementById('camera-panel').scrollIntoView();")
            shot = screenshot(browser, "web-camera.png")
            assert has_content(shot, element_box(browser, "canvas"))
            artifacts = shot.parent
            (artifacts / "web-camera-fps.txt").write_text(
                f"{measured:.2f} frames/s over 15 s (page shows {shown:.2f}); "
                f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
                f"model {default_predictor.model.spec.name}\n"
            )
            # A click on the face stops the picture at the frame explained, with its heatmap.
            canvas = browser.find_element(By.ID, "canvas")
            box = browser.execute_script("return view.faces[0].box.map((v) => v * view.zoom);")
            click_canvas(browser, canvas, box[0] + box[2] / 2, box[1] + box[3] / 2)
            wait_for(browser, "return document.body.dataset.heat === 'shown'", 120)
            assert "live picture" in browser.find_element(By.ID, "status").text
            screenshot(browser, "web-camera-heatmap.png")
            paused = int(browser.execute_script("return window.sent"))
            time.sleep(2)
            sent = int(browser.execute_script("return window.sent"))
            assert sent <= paused + 1  # stopped (an explanation, or a frame, at most)
            browser.find_element(By.TAG_NAME, "body").send_keys("\ue00c")  # Escape
            wait_for(browser, f"return window.sent > {sent}", 60)  # live again
            browser.find_element(By.ID, "camera-toggle").click()
            assert browser.execute_script("return camera.stream") is None
    finally:
        browser.quit()


def click_canvas(browser, canvas, x: float, y: float) -> None:
    """Click the canvas at (x, y) of its own pixels, whatever size it is drawn at."""
    from selenium.webdriver.common.action_chains import ActionChains

    rect = browser.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.width, r.height, arguments[0].width, arguments[0].height];",
        canvas,
    )
    scale_x, scale_y = rect[0] / rect[2], rect[1] / rect[3]
    ActionChains(browser).move_to_element_with_offset(
        canvas, round(x * scale_x - rect[0] / 2), round(y * scale_y - rect[1] / 2)
    ).click().perform()


def test_a_video_shows_each_face_timeline_and_scrubs(
    browser, default_predictor, clip_frames, tmp_path
):
    """The same frames as the API (and fer8 predict video.webm) answers; the slider moves
    through them with the keyboard and draws each frame with its boxes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from videos import blank, write_video

    frames = clip_frames[:10] + [blank() for _ in range(5)] + clip_frames[10:15]
    clip = write_video(tmp_path / "clip.webm", frames)
    with UvicornThread(create_app(default_predictor)) as url:
        api = httpx.post(
            f"{url}/v1/predict", timeout=120, files={"file": ("clip.webm", clip.read_bytes())}
        ).json()
        tracks: dict[int, int] = {}
        for frame in api:
            for face in frame["faces"]:
                tracks[face["track"]] = tracks.get(face["track"], 0) + 1
        assert len(api) == 10 and tracks  # 2 s at 5 frames a second, with the face
        browser.get(url)
        browser.find_element(By.ID, "file").send_keys(str(clip))
        wait_for(browser, "return document.body.dataset.state === 'done'", 120)
        assert "The browser cannot display" not in browser.find_element(By.ID, "status").text
        rows = browser.find_elements(By.CSS_SELECTOR, "#timelines .timeline")
        assert {
            row.get_attribute("id"): int(row.get_attribute("data-samples")) for row in rows
        } == {f"timeline-{track}": count for track, count in tracks.items()}
        # Each strip's title: how long each expression lasted, not a confidence.
        labels: dict[int, list[str]] = {}
        for frame in api:
            for face in frame["faces"]:
                labels.setdefault(face["track"], []).append(face["label"])
        assert {
            row.get_attribute("id"): row.find_element(By.TAG_NAME, "figcaption").text
            for row in rows
        } == {
            f"timeline-{track}": f"Face {track} · "
            + ", ".join(
                f"{display_name(label)} {math.floor(100 * n / len(seen) + 0.5)}%"
                for label, n in Counter(seen).most_common()
            )
            + " of the time"
            for track, seen in labels.items()
        }
        assert browser.find_element(By.ID, "canvas").is_displayed()
        scrub = browser.find_element(By.ID, "scrub")
        assert scrub.get_attribute("max") == str(len(api) - 1)
        assert browser.execute_script("return document.body.dataset.frame") == "0"
        browser.execute_script("document.getElementById('result').scrollIntoView();")
        shot = screenshot(browser, "web-video.png")
        assert has_content(shot, element_box(browser, "canvas"))
        empty = next(i for i, frame in enumerate(api) if not frame["faces"])
        scrub.click()
        scrub.send_keys(Keys.HOME)
        for _ in range(empty):
            scrub.send_keys(Keys.ARROW_RIGHT)
        wait_for(browser, f"return document.body.dataset.frame === '{empty}'")
        assert browser.find_elements(By.CSS_SELECTOR, "#faces .face") == []
        assert f"{api[empty]['time']:.1f} s" in browser.find_element(By.ID, "scrub-time").text
        scrub.send_keys(Keys.END)
        wait_for(browser, f"return document.body.dataset.frame === '{len(api) - 1}'")
        label = browser.find_element(By.CSS_SELECTOR, "#faces .face .label").text
        assert label == display_name(api[-1]["faces"][0]["label"])
        # The frame drawn is the video's at that time: the face where the API found it.
        x, y, w, h = api[-1]["faces"][0]["box"]
        centre = browser.execute_script(
            f"return Array.from(document.getElementById('canvas').getContext('2d')"
            f".getImageData({x + w // 2}, {y + h // 2}, 1, 1).data);"
        )
        assert max(abs(c - 60) for c in centre[:3]) > 20  # not the plain background
        screenshot(browser, "web-video-end.png")
        # A click on the face explains the frame shown (sent as a picture of its own).
        click_canvas(browser, browser.find_element(By.ID, "canvas"), x + w / 2, y + h / 2)
        wait_for(browser, "return document.body.dataset.heat === 'shown'", 120)
        assert (
            browser.execute_script(
                f"return Array.from(document.getElementById('canvas').getContext('2d')"
                f".getImageData({x + w // 2}, {y + h // 2}, 1, 1).data);"
            )
            != centre
        )
        screenshot(browser, "web-video-heatmap.png")


def test_a_dropped_video_shows_its_timeline(browser, predictor, clip_frames, tmp_path):
    """Dropping a video (the page once said "The browser cannot display this image
    format"): a real drop event, with the file in its DataTransfer."""
    import base64

    from selenium.webdriver.common.by import By
    from videos import write_video

    clip = write_video(tmp_path / "dropped.webm", clip_frames[:10])
    with UvicornThread(create_app(predictor)) as url:
        browser.get(url)
        browser.execute_script(
            """
            const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], 'dropped.webm', { type: 'video/webm' }));
            document.getElementById('drop').dispatchEvent(
              new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
            """,
            base64.b64encode(clip.read_bytes()).decode(),
        )
        wait_for(browser, "return document.body.dataset.state === 'done'", 120)
        status = browser.find_element(By.ID, "status").text
        assert "dropped.webm" in status and "cannot display" not in status
        assert browser.find_elements(By.CSS_SELECTOR, "#timelines .timeline")
        assert browser.find_element(By.ID, "scrub").is_displayed()


def test_without_a_camera_api_the_page_says_localhost_or_https(browser, predictor):
    """What a browser offers a page served over plain HTTP to another machine: no
    navigator.mediaDevices (made so here; Chromium counts 127.0.0.1 as secure)."""
    from selenium.webdriver.common.by import By

    with UvicornThread(create_app(predictor)) as url:
        browser.get(url)
        browser.execute_script(
            "Object.defineProperty(navigator, 'mediaDevices', { value: undefined });"
        )
        browser.find_element(By.ID, "mode-camera").click()
        browser.find_element(By.ID, "camera-toggle").click()
        status = browser.find_element(By.ID, "status")
        wait_for(browser, "return document.getElementById('status').textContent.length > 0")
        assert "localhost or over HTTPS" in status.text and "--ssl-certfile" in status.text
        assert "error" in status.get_attribute("class")


def test_a_video_the_browser_cannot_play_still_shows_its_timeline(
    browser, predictor, clip_frames, tmp_path
):
    """MPEG-4 Part 2 (OpenCV's mp4v), which Chromium does not play."""
    from selenium.webdriver.common.by import By
    from videos import write_video

    clip = write_video(tmp_path / "clip.mp4", clip_frames[:10])
    with UvicornThread(create_app(predictor)) as url:
        browser.get(url)
        browser.find_element(By.ID, "file").send_keys(str(clip))
        wait_for(browser, "return document.body.dataset.state === 'done'", 120)
        status = browser.find_element(By.ID, "status").text
        assert "cannot play this video's format" in status and "clip.mp4" in status
        assert browser.find_elements(By.CSS_SELECTOR, "#timelines .timeline")
        assert not browser.find_element(By.ID, "canvas").is_displayed()


def test_a_click_on_a_face_shows_its_heatmap(browser, default_predictor, astronaut_path):
    """The click asks /v1/predict?explain=true and draws the face's heatmap over the
    photo; Esc hides it; the face's button does the same from the keyboard."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with UvicornThread(create_app(default_predictor)) as url:
        (face,) = httpx.post(
            f"{url}/v1/predict", files={"file": ("astronaut.png", astronaut_path.read_bytes())}
        ).json()["faces"]
        browser.get(url)
        browser.find_element(By.ID, "file").send_keys(str(astronaut_path))
        wait_for(browser, "return document.body.dataset.state === 'done'")
        x, y, w, h = face["box"]
        pixels = (
            f"return Array.from(document.getElementById('canvas').getContext('2d')"
            f".getImageData({x}, {y}, {w}, {h}).data);"
        )
        before = browser.execute_script(pixels)
        canvas = browser.find_element(By.ID, "canvas")
        click_canvas(browser, canvas, x + w / 2, y + h / 2)
        wait_for(browser, "return document.body.dataset.heat === 'shown'", 120)
        after = browser.execute_script(pixels)
        changed = sum(a != b for a, b in zip(before, after)) / len(before)
        assert changed > 0.2  # the heatmap lies over the face
        assert "Happy" in browser.find_element(By.ID, "status").text
        why = browser.find_element(By.CSS_SELECTOR, "#faces .why")
        assert why.get_attribute("aria-pressed") == "true"
        shot = screenshot(browser, "web-heatmap.png")
        assert has_content(shot, element_box(browser, "canvas"))
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        wait_for(browser, "return document.body.dataset.heat === 'hidden'")
        assert browser.execute_script(pixels) == before
        why = browser.find_element(By.CSS_SELECTOR, "#faces .why")
        why.send_keys(Keys.ENTER)  # the keyboard: the focused button
        wait_for(browser, "return document.body.dataset.heat === 'shown'", 120)
        assert browser.execute_script(pixels) == after


def test_on_a_phone_sized_window_nothing_overflows(browser, predictor, astronaut_path):
    from selenium.webdriver.common.by import By

    with UvicornThread(create_app(predictor)) as url:
        browser.set_window_size(390, 844)
        try:
            browser.get(url)
            browser.find_element(By.ID, "file").send_keys(str(astronaut_path))
            wait_for(browser, "return document.body.dataset.state === 'done'")
            assert browser.execute_script(
                "return document.documentElement.scrollWidth <= window.innerWidth"
            )
            canvas, faces = element_box(browser, "canvas"), element_box(browser, "faces")
            width = browser.execute_script("return window.innerWidth")
            assert canvas[0] >= 0 and canvas[0] + canvas[2] <= width
            assert faces[1] >= canvas[1] + canvas[3]  # one column: the list under the picture
            shot = screenshot(browser, "web-phone.png")
            assert has_content(shot, canvas)
            browser.find_element(By.ID, "mode-camera").click()
            assert browser.execute_script(
                "return document.documentElement.scrollWidth <= window.innerWidth"
            )
            screenshot(browser, "web-phone-camera.png")
        finally:
            browser.set_window_size(1200, 900)
