#!/usr/bin/env python3
"""Benchmark ``fer8 serve`` on loopback against the bare ``Predictor.predict``.

1. The bare predictor: ``Predictor.predict`` on the astronaut photo's bytes, in process.
2. ``POST /v1/predict`` (multipart, the same photo) to a ``fer8 serve`` process, from 1 and
   from 8 concurrent clients: requests/s, p50 and p99 latency.
3. The LINE webhook: time from posting a signed image event to the reply reaching a fake
   LINE API on loopback (the fake from ``tests/servers.py``).

The model is a random-weight ResNet50 at 224x224 unless ``--model`` names a trained one.

Usage:
    python scripts/bench_serve.py [--model PATH] [--requests 80] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.png"
sys.path.insert(0, str(ROOT / "tests"))  # the fake LINE API the tests use
sys.path.insert(0, str(Path(__file__).parent))


def summarise(latencies: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "requests_per_s": len(ordered) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def bare(model_path: str, count: int) -> dict[str, float]:
    import fer8

    predictor = fer8.Predictor(model_path)
    data = PHOTO.read_bytes()
    predictor.predict(data)
    latencies = []
    start = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        predictor.predict(data)
        latencies.append(time.perf_counter() - t)
    return summarise(latencies, time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model_path: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fer8", "serve", "--model", model_path, "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("fer8 serve did not start")


def load(url: str, clients: int, count: int) -> dict[str, float]:
    import httpx

    data = PHOTO.read_bytes()
    latencies: list[float] = []
    lock = threading.Lock()

    def client(requests: int) -> None:
        with httpx.Client(timeout=120) as session:
            session.post(f"{url}/v1/predict", files={"file": ("a.png", data)})  # connect, warm
            for _ in range(requests):
                t = time.perf_counter()
                response = session.post(f"{url}/v1/predict", files={"file": ("a.png", data)})
                elapsed = time.perf_counter() - t
                response.raise_for_status()
                with lock:
                    latencies.append(elapsed)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [count // clients] * clients))
    return summarise(latencies, time.perf_counter() - start)


def line_round_trips(model_path: str, count: int) -> dict[str, float]:
    import httpx
    from servers import FakeLine, image_message, message_event, webhook_body

    with FakeLine() as line:
        line.contents["m"] = PHOTO.read_bytes()
        env = {
            "LINE_CHANNEL_SECRET": FakeLine.SECRET,
            "LINE_CHANNEL_ACCESS_TOKEN": FakeLine.TOKEN,
            "FER8_LINE_API_URL": line.url,
            "FER8_LINE_DATA_URL": line.url,
        }
        process, url = start_server(model_path, env)
        try:
            webhook, reply = [], []
            for index in range(count):
                body = webhook_body(message_event(f"ev{index}", f"r{index}", image_message("m")))
                sent = time.monotonic()
                response = httpx.post(
                    f"{url}/line/callback",
                    content=body,
                    headers={"X-Line-Signature": FakeLine.sign(body)},
                )
                webhook.append(time.monotonic() - sent)
                response.raise_for_status()
                replies = line.wait_for_replies(index + 1)
                reply.append(replies[index]["time"] - sent)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return {
        "webhook_answer_p50_ms": 1000 * statistics.median(webhook),
        "webhook_to_reply_p50_ms": 1000 * statistics.median(reply),
        "webhook_to_reply_max_ms": 1000 * max(reply),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .fer8 file (default: random-weight ResNet50 at 224)")
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--line-events", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model
        if model_path is None:
            from bench_predict import benchmark_model_file

            model_path = benchmark_model_file(None, Path(tmp))
        report = {"bare_predict": bare(model_path, args.requests // 2)}
        process, url = start_server(model_path, {})
        try:
            for clients in (1, 8):
                report[f"http_{clients}_clients"] = load(url, clients, args.requests)
        finally:
            process.terminate()
            process.wait(timeout=30)
        report["line"] = line_round_trips(model_path, args.line_events)

    print("| path | requests/s | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- |")
    for name in ("bare_predict", "http_1_clients", "http_8_clients"):
        r = report[name]
        print(
            f"| {name.replace('_', ' ')} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} |"
        )
    line = report["line"]
    print(
        f"\nLINE webhook answered in {line['webhook_answer_p50_ms']:.1f} ms (p50); "
        f"webhook to reply {line['webhook_to_reply_p50_ms']:.0f} ms p50, "
        f"{line['webhook_to_reply_max_ms']:.0f} ms max"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
