"""The soak test of ``scripts/soak_serve.py``, 30 seconds of it: 8 clients sending photos,
videos, corrupt files, oversized bodies and slow uploads to ``fer8 serve``."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'fer8[serve]'")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")

from conftest import ROOT  # noqa: E402
from servers import ServeProcess  # noqa: E402

pytestmark = pytest.mark.slow  # 30 s of traffic

sys.path.insert(0, str(ROOT / "scripts"))
import soak_serve  # noqa: E402


def test_thirty_seconds_of_mixed_traffic(tiny_model_path, tmp_path):
    payloads = soak_serve.Payloads.make(tmp_path, int(soak_serve.MAX_UPLOAD_MB * 2**20))
    with ServeProcess(
        "--model",
        str(tiny_model_path),
        "--max-upload-mb",
        str(soak_serve.MAX_UPLOAD_MB),
        "--max-video-mb",
        str(soak_serve.MAX_VIDEO_MB),
        log=tmp_path / "serve.log",
    ) as server:
        report = soak_serve.soak(
            server.url, server.process.pid, payloads, seconds=30, clients=8, warmup=5
        )
    soak_serve.print_report(report)  # shown with -s, and when the test fails
    outcomes = report["outcomes"]
    assert set(outcomes) == set(soak_serve.MIX)  # every kind was sent
    assert report["unexpected"] == 0, outcomes  # no 5xx, no surprise status
    assert report["lost"] == 0 and report["unreceived"] == 0, outcomes  # no lost response
    assert report["responses"] == report["server_answered"] > 50
    assert outcomes["corrupt"].get("expected_4xx", 0) > 0
    assert outcomes["oversized"].get("expected_4xx", 0) > 0
    rss = report["rss_mb"]
    assert rss["end"] < 1.10 * rss["after_warmup"], rss
    assert server.process.returncode == 0
    assert "Traceback" not in server.log_text()
