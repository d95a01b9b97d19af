"""The web page in real headless Chromium: upload a photo, see each face labelled.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Skipped
without them on a developer's machine, but a failure in CI (``CI`` set), where the page
must be tested. The screenshot is saved to ``test-artifacts/web-*.png`` (or
``$FER8_TEST_ARTIFACTS``): the page before an upload, with a result, with a label at
the picture's right edge, and with an error.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'fer8[serve]'")
webdriver = pytest.importorskip("selenium.webdriver")

from conftest import ROOT, save  # noqa: E402
from servers import UvicornThread  # noqa: E402

import fer8  # noqa: E402
from fer8.labels import display_name  # noqa: E402
from fer8.results import Box, Face, ImageResult  # noqa: E402
from fer8.serving.server import create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def screenshot(browser, name: str) -> Path:
    artifacts = Path(os.environ.get("FER8_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(artifacts / name))
    return artifacts / name


def console_errors(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE"]


def test_before_an_upload_the_page_shows_one_picker_and_no_canvas(browser, predictor):
    from selenium.webdriver.common.by import By

    with UvicornThread(create_app(predictor)) as url:
        browser.get(url)
        browser.get_log("browser")  # (only this page's messages below)
        browser.refresh()
        drop = browser.find_element(By.ID, "drop")
        assert drop.is_displayed() and "choose one" in drop.text
        pickers = [e for e in browser.find_elements(By.CSS_SELECTOR, "input[type=file]")
                   if e.is_displayed()]
        assert pickers == []  # the drop zone is the one picker; the input is not drawn
        assert not browser.find_element(By.ID, "result").is_displayed()
        assert not browser.find_element(By.ID, "canvas").is_displayed()
        icon = browser.execute_async_script(
            "const done = arguments[0]; fetch('/favicon.ico').then((r) => "
            "done([r.status, r.headers.get('content-type')]));")
        assert icon == [200, "image/x-icon"]
        assert browser.execute_script(
            "return document.querySelector('link[rel=icon]').getAttribute('href')") == \
            "/favicon.ico"
        assert console_errors(browser) == []  # no 404 for the icon, no script error
        screenshot(browser, "web-empty.png")


def test_upload_a_photo_and_see_its_expression(browser, default_predictor, astronaut_path):
    """The bundled model, as `fer8 serve` uses it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    predictor = default_predictor
    with UvicornThread(create_app(predictor)) as url:
        api = httpx.post(f"{url}/v1/predict",
                         files={"file": ("astronaut.png", astronaut_path.read_bytes())}).json()
        browser.get(url)
        browser.find_element(By.ID, "file").send_keys(str(astronaut_path))
        WebDriverWait(browser, 60).until(
            lambda driver: driver.execute_script("return document.body.dataset.state") == "done")
        faces = browser.find_elements(By.CSS_SELECTOR, "#faces .face")
        assert len(faces) == len(api["faces"]) == 1
        label = faces[0].find_element(By.CSS_SELECTOR, ".label").text
        confidence = faces[0].find_element(By.CSS_SELECTOR, ".confidence").text
        assert label == display_name(api["faces"][0]["label"]) == "Happy"  # she smiles
        assert confidence == f"{round(api['faces'][0]['confidence'] * 100)}%"
        bars = faces[0].find_elements(By.CSS_SELECTOR, ".bar")
        assert {bar.get_attribute("data-label") for bar in bars} == set(predictor.labels)
        assert "1 face in astronaut.png" in browser.find_element(By.ID, "status").text
        assert f"Model {predictor.model.spec.name}" in browser.find_element(By.ID, "model").text
        # The canvas shows the photo at its own size, with the box drawn on it.
        size = browser.execute_script(
            "const c = document.getElementById('canvas'); return [c.width, c.height];")
        assert size == [512, 512]
        x, y, w, h = api["faces"][0]["box"]
        edge = browser.execute_script(
            f"return Array.from(document.getElementById('canvas').getContext('2d')"
            f".getImageData({x}, {y + h // 2}, 1, 1).data);")
        assert edge[:3] != [0, 0, 0]

        screenshot(browser, "web-page.png")


class EdgePredictor:
    """Finds one face at the right edge of every photo, as a photo can have: a stand-in
    for the predictor that puts the label where the page must keep it inside."""

    def __init__(self, model) -> None:
        self.model = model

    def predict_many(self, uploads):
        for upload in uploads:
            height, width = fer8.load_image(upload).shape[:2]
            probabilities = {label: 0.0 for label in self.model.labels}
            probabilities["disgusted"] = 1.0
            face = Face(Box(width - 50, 40, 46, 46), "disgusted", 1.0, probabilities)
            yield ImageResult(upload.name, (face,), None)


def test_a_label_at_the_right_edge_stays_inside_the_picture(browser, tiny_model, astronaut,
                                                            tmp_path):
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
            lambda driver: driver.execute_script("return document.body.dataset.state") == "done")
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
        WebDriverWait(browser, 30).until(lambda _: f"Model {predictor.model.spec.name}" in model.text)
        assert not form.is_displayed()
        assert browser.execute_script("return sessionStorage.getItem('fer8-api-key')") == key

        browser.get_log("browser")  # (the 401 and 403 above were logged: drop them)
        browser.refresh()  # the same tab: not asked again
        model = browser.find_element(By.ID, "model")
        WebDriverWait(browser, 30).until(lambda _: f"Model {predictor.model.spec.name}" in model.text)
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        browser.find_element(By.ID, "file").send_keys(str(astronaut_path))
        WebDriverWait(browser, 60).until(
            lambda driver: driver.execute_script("return document.body.dataset.state") == "done")
        assert "1 face in astronaut.png" in browser.find_element(By.ID, "status").text
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        assert console_errors(browser) == []  # no request was refused this time
