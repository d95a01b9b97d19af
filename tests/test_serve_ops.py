"""``fer8 serve`` in production: API keys, /metrics, the access log, workers, a clean stop
on SIGTERM, and slow senders. Real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import hmac
import logging
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'fer8[serve]'")
httpx = pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")

from click.testing import CliRunner  # noqa: E402
from servers import (  # noqa: E402
    FakeLine,
    ServeProcess,
    UvicornThread,
    image_message,
    message_event,
    webhook_body,
)

from fer8.cli import cli  # noqa: E402
from fer8.serving import auth  # noqa: E402
from fer8.serving.auth import ApiKeyAuth, exposure_warning, load_api_keys  # noqa: E402
from fer8.serving.line import LineSettings  # noqa: E402
from fer8.serving.server import create_app  # noqa: E402

KEYS = ("first-key-0123456789", "second-key-abcdefghij")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def samples(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` on ``/metrics``, by their labels."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name
    }


# --- API keys ----------------------------------------------------------------------------


def test_v1_needs_a_key_and_the_rest_stays_open(predictor, astronaut_path):
    with FakeLine() as line:
        settings = LineSettings(
            FakeLine.SECRET, FakeLine.TOKEN, api_url=line.url, data_url=line.url
        )
        with UvicornThread(create_app(predictor, api_keys=KEYS, line=settings)) as url:
            photo = {"file": ("a.png", astronaut_path.read_bytes(), "image/png")}
            with httpx.Client() as client:  # one connection: a 401 leaves it usable
                missing = client.post(f"{url}/v1/predict", files=photo)
                assert missing.status_code == 401
                assert missing.headers["www-authenticate"].startswith("Bearer")
                assert "Authorization: Bearer" in missing.json()["detail"]
                answer = client.post(f"{url}/v1/predict", files=photo, headers=bearer(KEYS[0]))
                assert answer.status_code == 200 and len(answer.json()["faces"]) == 1
            assert httpx.get(f"{url}/v1/models", headers=bearer("wrong")).status_code == 403
            assert httpx.get(f"{url}/v1/models", headers=bearer(KEYS[0][:-1])).status_code == 403
            assert (
                httpx.get(
                    f"{url}/v1/models", headers={"Authorization": f"Basic {KEYS[0]}"}
                ).status_code
                == 401
            )
            assert httpx.get(f"{url}/v1/models", headers=bearer(KEYS[1])).status_code == 200
            for open_path in ("/healthz", "/", "/static/app.js", "/metrics", "/docs"):
                assert httpx.get(f"{url}{open_path}").status_code == 200, open_path
            # The schema says so, for /docs' "Authorize" button.
            schema = httpx.get(f"{url}/openapi.json").json()
            assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
            assert schema["paths"]["/v1/predict"]["post"]["security"] == [{"apiKey": []}]
            assert "403" in schema["paths"]["/v1/models"]["get"]["responses"]
            assert "security" not in schema["paths"]["/healthz"]["get"]
            # The LINE webhook checks LINE's signature, not a key.
            line.contents["m1"] = astronaut_path.read_bytes()
            body = webhook_body(message_event("e1", "r1", image_message("m1")))
            webhook = httpx.post(
                f"{url}/line/callback",
                content=body,
                headers={"X-Line-Signature": FakeLine.sign(body)},
            )
            assert webhook.status_code == 200
            assert len(line.wait_for_replies(1)) == 1


def test_without_keys_v1_is_open(api_without_keys):
    assert httpx.get(f"{api_without_keys}/v1/models").status_code == 200


@pytest.fixture(scope="module")
def api_without_keys(predictor):
    with UvicornThread(create_app(predictor, max_upload_bytes=100_000)) as url:
        yield url


def test_keys_come_from_the_file_or_the_environment(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# the lab's keys\n  alpha-key  \n\nbeta-key\nalpha-key\n")
    environ = {"FER8_API_KEYS": "gamma, delta,,"}
    assert load_api_keys(keys, environ) == ("alpha-key", "beta-key")  # the file wins
    assert load_api_keys(None, environ) == ("gamma", "delta")
    assert load_api_keys(None, {}) == ()
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match="no API key"):
        load_api_keys(tmp_path / "empty.txt", {})
    (tmp_path / "spaced.txt").write_text("two words\n")
    with pytest.raises(ValueError, match="spaces"):
        load_api_keys(tmp_path / "spaced.txt", {})


def test_a_key_is_checked_against_every_key_as_fixed_length_digests(monkeypatch):
    """No early exit at a match and no comparison of the raw strings: how long a check
    takes says nothing of which key matched or how much of a guess was right."""
    compared: list[tuple[int, int]] = []
    compare = hmac.compare_digest

    def recording(a, b):
        compared.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording)
    check = ApiKeyAuth(None, ("k" * 5, "m" * 40, "n" * 12))
    assert check.accepts(b"kkkkk")
    assert compared == [(32, 32)] * 3
    compared.clear()
    assert not check.accepts(b"k")
    assert compared == [(32, 32)] * 3


def test_a_warning_when_other_machines_can_reach_a_server_without_keys():
    assert "without API keys" in exposure_warning("0.0.0.0", has_keys=False)
    assert "without API keys" in exposure_warning("fer8.example.org", has_keys=False)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert exposure_warning(host, has_keys=False) is None
    assert exposure_warning("0.0.0.0", has_keys=True) is None


def test_the_serve_command_passes_its_options_and_warns_once(monkeypatch, tmp_path):
    import fer8.serving.launch as launch

    started = []
    monkeypatch.setattr(launch, "serve", started.append)
    monkeypatch.delenv("FER8_API_KEYS", raising=False)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["serve", "--host", "0.0.0.0", "--workers", "3", "--shutdown-timeout", "2.5"]
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "without API keys" in line]
    assert len(warnings) == 1
    (options,) = started
    assert (options.host, options.workers, options.shutdown_timeout) == ("0.0.0.0", 3, 2.5)
    keys = tmp_path / "keys.txt"
    keys.write_text("k1\n")
    result = runner.invoke(cli, ["serve", "--host", "0.0.0.0", "--api-key-file", str(keys)])
    assert result.exit_code == 0 and "without API keys" not in result.stderr
    assert started[1].api_key_file == str(keys)
    keys.write_text("\n")
    result = runner.invoke(cli, ["serve", "--api-key-file", str(keys)])
    assert result.exit_code == 2 and "no API key" in result.stderr
    assert len(started) == 2


def test_the_image_limit_the_400_names_is_an_option_of_fer8_serve(
    monkeypatch, tiny_model_path, astronaut_path
):
    import fer8.pipeline.images as images
    import fer8.serving.launch as launch

    started = []
    monkeypatch.setattr(launch, "serve", started.append)
    result = CliRunner().invoke(
        cli, ["serve", "--model", str(tiny_model_path), "--max-pixels", "200000"]
    )
    assert result.exit_code == 0, result.output
    (options,) = started
    photo = {"file": ("a.png", astronaut_path.read_bytes())}  # 512x512: 262,144 pixels
    with UvicornThread(launch.build_app(options)) as url:
        for query in ("", "?annotate=true", "?explain=true"):
            refused = httpx.post(f"{url}/v1/predict{query}", files=photo, timeout=60)
            assert refused.status_code == 400
            assert "(512x512 pixels, limit 200,000 pixels" in refused.json()["detail"]
            assert "--max-pixels" in refused.json()["detail"]
    # A raised limit holds for the annotated picture too (decoded again to draw on).
    limits = []
    load_image = images.load_image
    monkeypatch.setattr(
        images,
        "load_image",
        lambda *a, **kw: limits.append(kw["max_pixels"]) or load_image(*a, **kw),
    )
    raised = launch.replace(options, max_pixels=300_000)
    with UvicornThread(launch.build_app(raised)) as url:
        drawn = httpx.post(f"{url}/v1/predict?annotate=true", files=photo, timeout=60)
        assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/jpeg"
    assert limits == [300_000]


def test_without_prometheus_client_serve_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2
    assert "prometheus_client is missing" in result.stderr and "[serve]" in result.stderr


def test_with_workers_a_bad_model_fails_once_before_any_worker_starts(tmp_path):
    """A worker that cannot load its model would be restarted by uvicorn for ever."""
    runner = CliRunner()
    missing = runner.invoke(
        cli, ["serve", "--workers", "2", "--model", str(tmp_path / "missing.fer8")]
    )
    assert missing.exit_code == 2 and "no such model file" in missing.stderr
    broken = tmp_path / "broken.fer8"
    broken.write_bytes(b"not a model")
    result = runner.invoke(cli, ["serve", "--workers", "2", "--model", str(broken)])
    assert result.exit_code == 2 and "not a fer8 model file" in result.stderr


# --- metrics and the access log ----------------------------------------------------------


def test_metrics_count_requests_faces_and_refused_bytes(predictor, astronaut_path):
    with UvicornThread(
        create_app(predictor, max_upload_bytes=100_000, api_keys=KEYS[:1], model_load_seconds=1.25)
    ) as url:
        photo = astronaut_path.read_bytes()  # 790 kB: over this server's limit
        small = _small_jpeg(astronaut_path)
        ok = httpx.post(
            f"{url}/v1/predict", files={"file": ("a.jpg", small)}, headers=bearer(KEYS[0])
        )
        assert ok.status_code == 200
        faces = len(ok.json()["faces"])
        assert faces == 1
        assert (
            httpx.post(
                f"{url}/v1/predict",
                content=b"junk",
                headers={**bearer(KEYS[0]), "Content-Type": "image/png"},
            ).status_code
            == 400
        )
        assert (
            httpx.post(
                f"{url}/v1/predict",
                content=photo,
                headers={**bearer(KEYS[0]), "Content-Type": "image/png"},
            ).status_code
            == 413
        )
        assert httpx.post(f"{url}/v1/predict", content=b"x").status_code == 401
        assert httpx.get(f"{url}/wp-admin/setup.php").status_code == 404

        requests = samples(url, "fer8_requests_total")
        route = (("method", "POST"), ("route", "/v1/predict"))
        assert requests[(*route, ("status", "200"))] == 1
        assert requests[(*route, ("status", "400"))] == 1
        assert requests[(*route, ("status", "413"))] == 1  # refused before routing
        assert requests[(*route, ("status", "401"))] == 1
        assert requests[(("method", "GET"), ("route", "other"), ("status", "404"))] == 1
        assert not any("wp-admin" in value for labels in requests for _, value in labels)
        assert samples(url, "fer8_faces_total") == {(): faces}
        assert samples(url, "fer8_upload_refused_bytes_total") == {(): len(photo)}
        assert samples(url, "fer8_request_duration_seconds_count")[(("route", "/v1/predict"),)] == 4
        assert samples(url, "fer8_model_load_seconds") == {(): 1.25}
        assert samples(url, "fer8_requests_in_progress") == {(): 1}  # this request


def _small_jpeg(path: Path) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(path).convert("RGB").resize((256, 256)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_one_access_log_line_per_request_without_query_or_bytes(
    api_without_keys, caplog, astronaut_path
):
    small = _small_jpeg(astronaut_path)
    caplog.set_level(logging.INFO, logger="fer8.access")
    with caplog.at_level(logging.INFO, logger="fer8.access"):
        httpx.post(
            f"{api_without_keys}/v1/predict?annotate=false&token=secret-in-query",
            files={"file": ("me.jpg", small)},
        )
        httpx.get(f"{api_without_keys}/healthz")
        httpx.get(f"{api_without_keys}/no/such%0Apath")
        deadline = time.monotonic() + 10
        while len(caplog.records) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [record.getMessage() for record in caplog.records if record.name == "fer8.access"]
    assert len(lines) == 3
    predict, health, unknown = lines
    method, route, status, ms, unit, faces = predict.split(" ")
    assert (method, route, status, unit, faces) == ("POST", "/v1/predict", "200", "ms", "faces=1")
    assert float(ms) >= 0
    assert health.startswith("GET /healthz 200 ") and health.endswith("faces=-")
    assert unknown.startswith("GET /no/such\\npath 404 ")  # one line, whatever the path
    assert all("secret" not in line and "me.jpg" not in line for line in lines)


# --- slow senders ------------------------------------------------------------------------


def test_slow_senders_do_not_hold_the_server(api_without_keys, astronaut_path):
    """Four clients upload at one byte a second; other requests are answered meanwhile."""
    port = int(api_without_keys.rsplit(":", 1)[1])
    stop = threading.Event()
    slow: list[socket.socket] = []
    for _ in range(4):
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n"
        )
        slow.append(connection)

    def trickle() -> None:
        while not stop.wait(1.0):
            for connection in slow:
                connection.sendall(b"\xff")

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    small = _small_jpeg(astronaut_path)
    try:
        time.sleep(1.5)  # the slow uploads have started
        took = []
        for _ in range(6):
            started = time.monotonic()
            response = httpx.post(
                f"{api_without_keys}/v1/predict", files={"file": ("a.jpg", small)}, timeout=30
            )
            took.append(time.monotonic() - started)
            assert response.status_code == 200
            assert httpx.get(f"{api_without_keys}/healthz", timeout=30).status_code == 200
        assert max(took) < 5, took
        for connection in slow:  # still uploading: not answered, not dropped
            connection.setblocking(False)
            with pytest.raises(BlockingIOError):
                connection.recv(1)
    finally:
        stop.set()
        sender.join()
        for connection in slow:
            connection.close()


# --- a clean stop, and workers -----------------------------------------------------------


def _request_head(length: int) -> bytes:
    return (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


def _read_response(connection: socket.socket, timeout: float) -> bytes:
    connection.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = connection.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return data
        if not chunk:
            return data
        data += chunk


@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight_then_exits_0(
    tiny_model_path, astronaut_path, tmp_path
):
    photo = _small_jpeg(astronaut_path)
    with FakeLine() as line:
        env = {
            "LINE_CHANNEL_SECRET": FakeLine.SECRET,
            "LINE_CHANNEL_ACCESS_TOKEN": FakeLine.TOKEN,
            "FER8_LINE_API_URL": line.url,
            "FER8_LINE_DATA_URL": line.url,
        }
        server = ServeProcess(
            "--model",
            str(tiny_model_path),
            "--shutdown-timeout",
            "4",
            log=tmp_path / "serve.log",
            env=env,
        )
        with server:
            # A LINE event taken in, its reply not made yet (the content download waits).
            line.contents["m1"] = astronaut_path.read_bytes()
            line.gate.clear()
            body = webhook_body(message_event("e1", "r1", image_message("m1")))
            assert (
                httpx.post(
                    f"{server.url}/line/callback",
                    content=body,
                    headers={"X-Line-Signature": FakeLine.sign(body)},
                ).status_code
                == 200
            )
            # Two uploads in flight: one will finish, one never will.
            finishing = socket.create_connection(("127.0.0.1", server.port))
            finishing.sendall(_request_head(len(photo)) + photo[:1000])
            stuck = socket.create_connection(("127.0.0.1", server.port))
            stuck.sendall(_request_head(len(photo)) + photo[:1000])
            time.sleep(1.0)
            server.process.send_signal(signal.SIGTERM)
            stopped_accepting = time.monotonic() + 10
            while True:  # new connections are refused from now on
                try:
                    socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                except OSError:
                    break
                assert time.monotonic() < stopped_accepting, "still accepting after SIGTERM"
                time.sleep(0.1)
            finishing.sendall(photo[1000:])
            response = _read_response(finishing, timeout=20)
            line.gate.set()
            status_line, _, rest = response.partition(b"\r\n")
            assert status_line == b"HTTP/1.1 200 OK", response[:300]
            assert b'"faces":[{' in rest
            assert len(line.wait_for_replies(1, timeout=30)) == 1  # the bot still replied
            assert server.process.wait(timeout=30) == 0
            # The one that never finished was cut off at the deadline, and told so.
            assert _read_response(stuck, timeout=1).startswith(b"HTTP/1.1 503 ")
            finishing.close()
            stuck.close()
    log = server.log_text()
    assert "POST /v1/predict 200" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_two_workers_each_load_the_model_and_share_metrics(
    tiny_model_path, astronaut_path, tmp_path
):
    import concurrent.futures
    import os

    small = _small_jpeg(astronaut_path)
    with ServeProcess(
        "--model", str(tiny_model_path), "--workers", "2", log=tmp_path / "serve.log"
    ) as server:
        deadline = time.monotonic() + 120
        while len(samples(server.url, "fer8_model_load_seconds")) < 2:  # both are up
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.5)

        def post(_: int) -> int:
            return httpx.post(
                f"{server.url}/v1/predict", files={"file": ("a.jpg", small)}, timeout=60
            ).status_code

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert list(pool.map(post, range(12))) == [200] * 12
        loads = samples(server.url, "fer8_model_load_seconds")
        pids = {dict(labels)["pid"] for labels in loads}
        assert len(pids) == 2 and str(server.process.pid) not in pids
        assert all(int(pid) != os.getpid() for pid in pids)
        # Whichever worker answers /metrics, it counts every worker's requests.
        for _ in range(4):
            requests = samples(server.url, "fer8_requests_total")
            assert requests[(("method", "POST"), ("route", "/v1/predict"), ("status", "200"))] == 12
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    assert "Traceback" not in server.log_text()


def test_with_a_certificate_the_server_speaks_https(tiny_model_path, astronaut_path, tmp_path):
    """--ssl-certfile/--ssl-keyfile reach uvicorn: the page (and its webcam, which
    browsers allow only on localhost or over HTTPS) and the API answer over TLS."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    result = CliRunner().invoke(cli, ["serve", "--ssl-keyfile", str(key)])
    assert result.exit_code == 2 and "--ssl-keyfile needs --ssl-certfile" in result.stderr
    with ServeProcess(
        "--model",
        str(tiny_model_path),
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
        log=tmp_path / "serve.log",
        cafile=cert,
    ) as server:
        assert server.url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        page = httpx.get(f"{server.url}/", verify=trusted)
        assert page.status_code == 200 and "fer8" in page.text
        answer = httpx.post(
            f"{server.url}/v1/predict",
            verify=trusted,
            files={"file": ("a.png", astronaut_path.read_bytes())},
        )
        assert answer.status_code == 200 and len(answer.json()["faces"]) == 1
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP is not answered
            httpx.get(f"http://127.0.0.1:{server.port}/healthz")
