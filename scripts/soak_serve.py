#!/usr/bin/env python3
"""Soak test for ``fer8 serve``: concurrent clients on loopback for minutes, a mix of
photos, videos, corrupt files, oversized bodies and slow senders.

Reports the requests served, the outcomes by kind (the 4xx a kind should get counted
apart from anything else), p50/p99 latency per kind, and the server's resident memory
(its processes together) before any load, after the warm-up, after the first minute and
at the end. It also checks that the server's own count of answers (``/metrics``) equals
the clients' count of responses: a response the server sent and no client got, or a
request a client sent and the server never answered, is a lost response. Exits 1 on any
unexpected outcome or lost response.

A short version of it runs in the test suite (``tests/test_soak.py``).

Usage:
    nice python scripts/soak_serve.py [--model PATH] [--seconds 600] [--clients 8]
        [--workers 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # ServeProcess, the tests' fer8 serve runner

logger = logging.getLogger("soak")

#: How often each kind of request is sent.
MIX = {"photo": 45, "video": 10, "corrupt": 15, "oversized": 10, "slow": 20}
#: The statuses each kind should get: anything else is unexpected.
EXPECTED = {"photo": {200}, "video": {200}, "corrupt": {400}, "oversized": {413}, "slow": {200}}
MAX_UPLOAD_MB = 2.0
MAX_VIDEO_MB = 8.0
#: A slow sender spreads its upload over about this many seconds.
SLOW_SECONDS = 3.0


@dataclass(frozen=True)
class Payloads:
    """What the clients send, made once."""

    photos: tuple[tuple[str, bytes], ...]
    video: bytes
    corrupt: tuple[tuple[str, bytes, str], ...]
    oversized: bytes

    @classmethod
    def make(cls, folder: Path, max_upload_bytes: int) -> Payloads:
        import numpy as np
        from PIL import Image

        astronaut = (ROOT / "examples" / "astronaut.png").read_bytes()
        hopper = (ROOT / "examples" / "grace_hopper.jpg").read_bytes()
        small = io.BytesIO()
        Image.open(io.BytesIO(astronaut)).convert("RGB").resize((256, 256)).save(small, "JPEG")
        rng = np.random.default_rng(0)
        noise = rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()
        return cls(
            photos=(
                ("astronaut.png", astronaut),
                ("grace_hopper.jpg", hopper),
                ("small.jpg", small.getvalue()),
            ),
            video=_video(folder / "clip.mp4"),
            corrupt=(
                ("noise.jpg", noise, "image/jpeg"),
                ("cut.png", astronaut[:2000], "image/png"),
                ("header.jpg", b"\xff\xd8\xff\xe0" + noise[:5000], "image/jpeg"),
                ("notes.png", b"not really a picture", "image/png"),
            ),
            oversized=bytes(max_upload_bytes + 512 * 1024),
        )


def _video(path: Path) -> bytes:
    """Two seconds of the astronaut drifting right, 8 frames a second, 320x240 MPEG-4."""
    import cv2
    import numpy as np

    photo = cv2.imread(str(ROOT / "examples" / "astronaut.png"))
    face = cv2.resize(photo[20:260, 110:340], (115, 120))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (320, 240))
    for index in range(16):
        frame = np.full((240, 320, 3), 60, np.uint8)
        x = 20 + 8 * index
        frame[60:180, x : x + 115] = face
        writer.write(frame)
    writer.release()
    return path.read_bytes()


@dataclass
class Tally:
    """What the clients saw: (kind, outcome, seconds) per request."""

    records: list[tuple[str, str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, outcome: str, seconds: float) -> None:
        with self.lock:
            self.records.append((kind, outcome, seconds))


def outcome_of(kind: str, status: int) -> str:
    """``ok``, ``expected_4xx``, or ``unexpected_<status>``."""
    if status in EXPECTED[kind]:
        return "ok" if status < 400 else "expected_4xx"
    return f"unexpected_{status}"


def send(client, url: str, kind: str, payloads: Payloads, rng: random.Random) -> int:
    """One request of ``kind``; returns its status (raises on a transport error)."""
    predict = f"{url}/v1/predict"
    if kind == "photo":
        name, data = rng.choice(payloads.photos)
        query = "?annotate=true" if rng.random() < 0.2 else ""
        return client.post(predict + query, files={"file": (name, data)}).status_code
    if kind == "video":
        return client.post(
            predict, content=payloads.video, headers={"Content-Type": "video/mp4"}
        ).status_code
    if kind == "corrupt":
        name, data, content_type = rng.choice(payloads.corrupt)
        if rng.random() < 0.5:
            return client.post(predict, files={"file": (name, data, content_type)}).status_code
        return client.post(
            predict, content=data, headers={"Content-Type": content_type}
        ).status_code
    if kind == "oversized":
        if rng.random() < 0.5:  # declared: refused from its Content-Length
            return client.post(
                predict, content=payloads.oversized, headers={"Content-Type": "image/jpeg"}
            ).status_code
        chunks = [
            payloads.oversized[i : i + 65536] for i in range(0, len(payloads.oversized), 65536)
        ]
        return client.post(
            predict,
            content=iter(chunks),  # streamed: counted as it comes
            headers={"Content-Type": "image/jpeg"},
        ).status_code
    if kind == "slow":
        _, data = payloads.photos[1]
        pieces = 30
        size = -(-len(data) // pieces)

        def trickle():
            for start in range(0, len(data), size):
                time.sleep(SLOW_SECONDS / pieces)
                yield data[start : start + size]

        return client.post(
            predict, content=trickle(), headers={"Content-Type": "image/jpeg"}
        ).status_code
    raise ValueError(kind)


def drive(
    url: str, payloads: Payloads, clients: int, seconds: float, seed: int, tally: Tally
) -> None:
    """``clients`` threads sending the mix until ``seconds`` have passed."""
    import httpx

    deadline = time.monotonic() + seconds
    kinds, weights = zip(*MIX.items())

    def client_loop(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < deadline:
                kind = rng.choices(kinds, weights)[0]
                started = time.perf_counter()
                try:
                    status = send(client, url, kind, payloads, rng)
                except httpx.HTTPError as exc:  # no response: lost
                    tally.add(kind, f"lost_{type(exc).__name__}", time.perf_counter() - started)
                else:
                    tally.add(kind, outcome_of(kind, status), time.perf_counter() - started)

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def resident_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children (the workers), from /proc."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    total = 0
    for one in pids:
        try:
            with open(f"/proc/{one}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def answered(url: str) -> float:
    """How many ``/v1/predict`` requests the server says it has answered."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "fer8_requests"
        for sample in family.samples
        if sample.name == "fer8_requests_total" and sample.labels.get("route") == "/v1/predict"
    )


def soak(
    url: str,
    pid: int,
    payloads: Payloads,
    *,
    seconds: float,
    clients: int = 8,
    warmup: float = 10.0,
    seed: int = 0,
) -> dict:
    """Run the soak against a running server; returns the report (see the module)."""
    import httpx

    rss_idle = resident_bytes(pid)
    rng = random.Random(seed)
    with httpx.Client(timeout=120) as client:  # every kind once: are the expectations right?
        for kind in MIX:
            status = send(client, url, kind, payloads, rng)
            if status not in EXPECTED[kind]:
                raise RuntimeError(f"{kind}: status {status}, expected {sorted(EXPECTED[kind])}")
    drive(url, payloads, clients, warmup, seed + 1, Tally())
    rss_warm = resident_bytes(pid)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.wait(2.0):
            samples.append((time.monotonic() - started, resident_bytes(pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    before = answered(url)
    tally = Tally()
    drive(url, payloads, clients, seconds, seed + 2, tally)
    elapsed = time.monotonic() - started
    server_count = answered(url) - before
    stop.set()
    sampler.join()
    rss_end = resident_bytes(pid)
    after_minute = next((rss for at, rss in samples if at >= 60), None)

    outcomes: dict[str, Counter] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    for kind, outcome, seconds_taken in tally.records:
        outcomes[kind][outcome] += 1
        if not outcome.startswith("lost"):
            latencies[kind].append(seconds_taken)
    every = sorted(s for kind_latencies in latencies.values() for s in kind_latencies)
    responses = sum(len(v) for v in latencies.values())
    total = Counter()
    for counts in outcomes.values():
        total.update(counts)
    return {
        "seconds": round(elapsed, 1),
        "clients": clients,
        "requests": len(tally.records),
        "responses": responses,
        "server_answered": int(server_count),
        "lost": sum(n for outcome, n in total.items() if outcome.startswith("lost")),
        # The server's answers no client got (or, below 0, responses it did not count).
        "unreceived": int(server_count) - responses,
        "unexpected": sum(n for outcome, n in total.items() if outcome.startswith("unexpected")),
        "outcomes": {kind: dict(counts) for kind, counts in sorted(outcomes.items())},
        "latency_ms": {kind: _percentiles(values) for kind, values in sorted(latencies.items())}
        | {"all": _percentiles(every)},
        "requests_per_s": round(responses / elapsed, 2),
        "rss_mb": {
            "idle": _mb(rss_idle),
            "after_warmup": _mb(rss_warm),
            "after_first_minute": None if after_minute is None else _mb(after_minute),
            "end": _mb(rss_end),
            "max": _mb(max([rss for _, rss in samples] + [rss_end])),
        },
        # Every 2 s, to tell a plateau from a leak.
        "rss_series_mb": [(round(at, 1), _mb(rss)) for at, rss in samples],
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan")}
    ordered = sorted(values)
    return {
        "p50": round(1000 * statistics.median(ordered), 1),
        "p99": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
    }


def _mb(value: int) -> float:
    return round(value / 2**20, 1)


def print_report(report: dict) -> None:
    print(
        f"{report['requests']} requests in {report['seconds']} s from {report['clients']} "
        f"clients ({report['requests_per_s']} responses/s); server answered "
        f"{report['server_answered']}; lost {report['lost']}, unreceived "
        f"{report['unreceived']}, unexpected "
        f"{report['unexpected']}"
    )
    print("| kind | outcomes | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- |")
    for kind, counts in report["outcomes"].items():
        latency = report["latency_ms"].get(kind, {"p50": "-", "p99": "-"})
        text = ", ".join(f"{outcome} {n}" for outcome, n in sorted(counts.items()))
        print(f"| {kind} | {text} | {latency['p50']} | {latency['p99']} |")
    every = report["latency_ms"]["all"]
    print(f"| all | | {every['p50']} | {every['p99']} |")
    rss = report["rss_mb"]
    print(
        f"resident memory (MB): idle {rss['idle']}, after warm-up {rss['after_warmup']}, "
        f"after the first minute {rss['after_first_minute']}, end {rss['end']}, "
        f"max {rss['max']}"
    )
    series = report["rss_series_mb"]
    if series and series[-1][0] >= 120:  # a line of minutes for a long run
        # Each minute's highest sample: one sample swings by +-20 MB as uploads come and
        # go, the highest shows whether memory still grows.
        minutes = range(int(series[-1][0] // 60))  # whole minutes
        peaks = [
            max((mb for at, mb in series if minute * 60 <= at < minute * 60 + 60), default=None)
            for minute in minutes
        ]
        print(
            "resident memory, each minute's peak (MB): "
            + ", ".join(str(peak) for peak in peaks if peak is not None)
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .fer8 file or model name (default: the bundled model)")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="soak: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    from servers import ServeProcess

    serve_args = [
        "--max-upload-mb",
        str(MAX_UPLOAD_MB),
        "--max-video-mb",
        str(MAX_VIDEO_MB),
        "--workers",
        str(args.workers),
    ]
    if args.model:
        serve_args += ["--model", args.model]
    with tempfile.TemporaryDirectory() as tmp:
        payloads = Payloads.make(Path(tmp), int(MAX_UPLOAD_MB * 2**20))
        with ServeProcess(*serve_args, log=Path(tmp) / "serve.log") as server:
            logger.info(
                "fer8 serve at %s (pid %d); soaking for %.0f s",
                server.url,
                server.process.pid,
                args.seconds,
            )
            report = soak(
                server.url,
                server.process.pid,
                payloads,
                seconds=args.seconds,
                clients=args.clients,
                warmup=args.warmup,
            )
        log = server.log_text()
        report["server_exit_status"] = server.process.returncode
        report["server_log_tracebacks"] = log.count("Traceback")
        report["access_log_lines"] = log.count("/v1/predict ")
    print_report(report)
    print(
        f"server exit status {report['server_exit_status']}, tracebacks in its log "
        f"{report['server_log_tracebacks']}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    failed = (
        report["lost"]
        or report["unreceived"]
        or report["unexpected"]
        or report["server_log_tracebacks"]
        or report["server_exit_status"] != 0
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
