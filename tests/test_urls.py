"""http(s) URLs of photos: `fer8 predict https://host/x.jpg` downloads the photo (it
became the path `https:/host/x.jpg: no such file`). Served from 127.0.0.1 only."""

from __future__ import annotations

import json
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from conftest import save

import fer8
from fer8.cli import cli
from fer8.pipeline import images


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/slow.png":
            time.sleep(3)
        super().do_GET()

    def log_message(self, *args):  # quiet
        pass


class _Server(ThreadingHTTPServer):
    # A client that gave up on /slow.png leaves its request thread to write into a
    # closed socket 3 s later: closing the server waits for that thread, and its broken
    # pipe is expected, not printed (a later test's captured stderr would get it).
    daemon_threads = False
    block_on_close = True

    def handle_error(self, request, client_address):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory, astronaut):
    """A web server on a loopback port, serving a folder with the astronaut."""
    folder = tmp_path_factory.mktemp("site")
    save(astronaut, folder / "photos" / "astronaut.png")
    save(astronaut, folder / "slow.png")
    server = _Server(("127.0.0.1", 0), lambda *args: _Handler(*args, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")


def test_predict_downloads_a_photo_and_names_what_failed(site, tiny_model_path, tmp_path):
    url = f"{site}/photos/astronaut.png"
    missing = f"{site}/photos/nobody.jpg"
    result = CliRunner().invoke(
        cli,
        ["predict", url, missing, "--model", str(tiny_model_path), "--format", "jsonl"]
        + ["--annotate", str(tmp_path / "out")],
    )
    assert result.exit_code == 1  # the missing one
    found, failed = (json.loads(line) for line in result.stdout.splitlines())
    assert found["source"] == url and found["error"] is None
    assert [face["box"] for face in found["faces"]] == [[179, 63, 89, 113]]
    assert failed == {
        "source": missing,
        "faces": [],
        "error": "cannot download (HTTP 404 File not found)",
    }
    assert f"fer8: {missing}: cannot download (HTTP 404" in result.stderr
    assert (tmp_path / "out" / "astronaut.png").is_file()  # named after the URL's path


def test_a_download_is_limited_in_size_and_time(site, monkeypatch):
    url = f"{site}/photos/astronaut.png"
    assert fer8.load_image(url).shape == (512, 512, 3)
    monkeypatch.setattr(images, "MAX_DOWNLOAD_BYTES", 10_000)
    with pytest.raises(fer8.InvalidImageError, match="larger than 10,000 bytes"):
        fer8.load_image(url)
    monkeypatch.setattr(images, "DOWNLOAD_TIMEOUT", 0.5)
    with pytest.raises(
        fer8.InvalidImageError, match=r"slow.png: cannot download \(no answer within 0.5 s\)"
    ):
        fer8.load_image(f"{site}/slow.png")
    with pytest.raises(fer8.InvalidImageError, match="cannot download"):
        fer8.load_image("http://127.0.0.1:1/nothing-listens-here.jpg")
