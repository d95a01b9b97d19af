#!/usr/bin/env python3
"""One photo from the command line, as a new user runs it: wall time and peak memory of a
whole ``fer8 predict examples/astronaut.png`` process, fer8 on ONNX Runtime against the
last fer8 that predicted on TensorFlow, in the same run.

fer8 caches ONNX Runtime's optimised graph after the first load (``fer8.models.runtime``),
so the new path is measured both ways: with the graph cached, as every run after a
machine's first, and with an empty cache.

The old fer8 is checked out from git (``--old-rev``, default ``89a97a1``: the package
layout of today, prediction on TensorFlow) into a temporary worktree and run with this
interpreter, which therefore needs the train extra (TensorFlow). The two take turns,
``--repeats`` times each, so both see the same machine; the medians are reported.

Usage:
    python scripts/bench_light.py [--repeats 5] [--old-rev 89a97a1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = "examples/astronaut.png"

logger = logging.getLogger("bench_light")


def run_once(src: Path, cwd: Path, home: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one ``fer8 predict`` process with its cache
    in ``home``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "FER8_HOME": str(home),
    }
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "fer8", "predict", PHOTO, "--format", "json"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    out, err = process.communicate()
    if os.waitstatus_to_exitcode(status) != 0 or b'"happy"' not in out:
        raise SystemExit(f"fer8 predict failed in {cwd}: {err.decode()[-500:]}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--old-rev", default="89a97a1")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.old_rev],
            check=True,
            capture_output=True,
        )
        try:
            # name: (checkout, whether each run starts with an empty fer8 cache)
            variants = {
                "onnxruntime (this checkout)": (ROOT, False),
                "onnxruntime, empty cache (a machine's first run)": (ROOT, True),
                f"tensorflow ({args.old_rev})": (old, False),
            }
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
            home = Path(tmp) / "home"
            for root, _ in variants.values():
                run_once(root / "src", root, home)  # warm the page cache and fer8's cache
            for repeat in range(args.repeats):
                for name, (root, empty) in variants.items():
                    run_home = Path(tempfile.mkdtemp(dir=tmp)) if empty else home
                    runs[name].append(run_once(root / "src", root, run_home))
                    logger.info("%d %s: %.2f s, %.0f MB", repeat, name, *runs[name][-1])
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                check=False,
                capture_output=True,
            )

    report = {
        name: {
            "wall_s_median": statistics.median(s for s, _ in values),
            "peak_rss_mb_median": statistics.median(m for _, m in values),
            "runs": values,
        }
        for name, values in runs.items()
    }
    print(f"`fer8 predict {PHOTO}`, a whole process, median of {args.repeats}:\n")
    print("| fer8 | wall s | peak RSS MB |")
    print("| --- | --- | --- |")
    for name, row in report.items():
        print(f"| {name} | {row['wall_s_median']:.2f} | {row['peak_rss_mb_median']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
