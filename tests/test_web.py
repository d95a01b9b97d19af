"""The web page in real headless Chromium: upload a photo, see each face labelled.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Skipped
without them on a developer's machine, but a failure in CI (``CI`` set), where the page
must be tested. The screenshot is saved to ``test-artifacts/web-page.png`` (or
``$FER8_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'fer8[serve]'")
webdriver = pytest.importorskip("selenium.webdriver")

from fer8.labels import display_name  # noqa: E402
from fer8.server import create_app  # noqa: E402

from conftest import ROOT  # noqa: E402
from servers import UvicornThread  # noqa: E402

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
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def default_predictor():
    import fer8

    return fer8.Predictor()  # the bundled model, as `fer8 serve` uses it


def test_upload_a_photo_and_see_its_expression(browser, default_predictor, astronaut_path):
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

        artifacts = Path(os.environ.get("FER8_TEST_ARTIFACTS", ROOT / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(artifacts / "web-page.png"))


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
