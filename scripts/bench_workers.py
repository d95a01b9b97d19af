#!/usr/bin/env python3
"""Throughput of ``fer8 serve --workers N`` for N = 1 and 2 (or ``--workers 1 2 4``), in
one run, on loopback.

Each server gets the same load: ``--clients`` concurrent clients posting the astronaut
photo (multipart), ``--requests`` requests in all after a warm-up that reaches every
worker. Prints requests/s, p50 and p99 latency per worker count, and the machine's
cores and load average (the figures mean little on a machine busy with other work).

Usage:
    python scripts/bench_workers.py [--model PATH] [--workers 1 2] [--clients 8]
        [--requests 160] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # ServeProcess
sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .fer8 file or model name (default: the bundled model)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from bench_serve import load
    from servers import ServeProcess

    report = {"cpus": os.cpu_count(), "load_average_before": os.getloadavg()[0], "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            serve_args = ["--workers", str(workers)] + (
                ["--model", args.model] if args.model else []
            )
            with ServeProcess(*serve_args, log=Path(tmp) / f"serve-{workers}.log") as server:
                load(server.url, args.clients, 4 * args.clients)  # every worker warm
                report["runs"][workers] = load(server.url, args.clients, args.requests)
    report["load_average_after"] = os.getloadavg()[0]

    print(
        f"{args.clients} clients, {args.requests} requests per run; {report['cpus']} cores, "
        f"load average {report['load_average_before']:.1f} before, "
        f"{report['load_average_after']:.1f} after"
    )
    print("| workers | requests/s | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- |")
    for workers, run in report["runs"].items():
        print(
            f"| {workers} | {run['requests_per_s']:.1f} | {run['p50_ms']:.0f} | "
            f"{run['p99_ms']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
