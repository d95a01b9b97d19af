#!/usr/bin/env python3
"""One photo from the command line, as a new user runs it: wall time and peak memory of a
whole ``fer8 predict examples/astronaut.png`` process, this checkout against an earlier
fer8 (``--old-rev``), in the same run.

The old fer8 is measured with dlib's landmark model loaded in a process of its own (what
it does when a core is free, ``FER8_LANDMARK_PROCESS=1``) and in process (a busy
machine, ``=0``). fer8 caches ONNX Runtime's optimised graph, the bundled model's
checksum and, since issue 41, dlib's landmark model converted to arrays
(``fer8.pipeline.shape_cache``) after the first run: this checkout is measured with its
cache made (the usual run) and with an empty cache (a machine's first run), with and
without the landmark process, and the old one likewise on an empty cache. After this
checkout's first run the model is converted in the background; the next run waits for
that to end, so that it measures nothing of it.
Peak memory is the process's own, and beside it the sum of its child processes' peaks
(the landmark process).

The old fer8 is checked out from git (``--old-rev``) into a temporary worktree and run
with this interpreter. Both checkouts' modules are compiled first, as an installed
package's are (with ``PYTHONDONTWRITEBYTECODE=1`` a checkout would compile them again
in every run). The variants take turns, ``--repeats`` times each, so all see the same
machine; the medians are reported, and each one's ratio to the old fer8's.

Usage:
    python scripts/bench_light.py [--repeats 7] [--old-rev 55a2b0d] [--json out.json]
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


def _children_peak(pid: int, peaks: dict[int, float]) -> None:
    """Record the peak resident MB (VmHWM) of each child process of ``pid``."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return
    for child in map(int, children):
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue
        if "VmHWM:" in status:
            peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
            peaks[child] = max(peaks.get(child, 0.0), peak)


def run_once(
    src: Path, cwd: Path, home: Path, landmark_process: str = ""
) -> tuple[float, float, float]:
    """Wall seconds, peak resident MB of one ``fer8 predict`` process with its cache in
    ``home``, and the sum of its child processes' peaks (the landmark process)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "FER8_HOME": str(home),
        "FER8_LANDMARK_PROCESS": landmark_process,  # this checkout: always, or never
    }
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "fer8", "predict", PHOTO, "--format", "json"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    peaks: dict[int, float] = {}
    while True:  # polling the children costs the process nothing measurable
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        _children_peak(process.pid, peaks)
        time.sleep(0.005)
    seconds = time.perf_counter() - start
    out, err = process.communicate()
    if os.waitstatus_to_exitcode(status) != 0 or b'"happy"' not in out:
        raise SystemExit(f"fer8 predict failed in {cwd}: {err.decode()[-500:]}")
    return seconds, usage.ru_maxrss / 1024, sum(peaks.values())


def wait_for_conversion(home: Path, limit: float = 30.0) -> None:
    """Wait until the landmark model converted in the background after a first run is
    in ``home`` (and its process has ended), so that the next run has the CPU alone."""
    deadline = time.monotonic() + limit
    while not list((home / "landmarks").glob("*.shapes")) and time.monotonic() < deadline:
        time.sleep(0.05)
    while list((home / "landmarks").glob("*.partial")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the converting process ends right after its rename


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--old-rev", default="55a2b0d")
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
            for root in (ROOT, old):  # as an installed package is: compiled
                subprocess.run(
                    [sys.executable, "-m", "compileall", "-q", str(root / "src")],
                    check=True,
                    capture_output=True,
                    env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
                )
            old_name = f"fer8 at {args.old_rev}"
            # name: (checkout, whether each run starts with an empty fer8 cache, whether
            # dlib's model loads in a process of its own when it is loaded)
            variants = {
                f"{old_name}, landmark process": (old, False, "1"),
                f"{old_name}, landmarks in process": (old, False, "0"),
                "this checkout, cache made": (ROOT, False, ""),
                f"{old_name}, landmark process, empty cache": (old, True, "1"),
                "this checkout, landmark process, empty cache": (ROOT, True, "1"),
                f"{old_name}, landmarks in process, empty cache": (old, True, "0"),
                "this checkout, landmarks in process, empty cache": (ROOT, True, "0"),
            }
            runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
            home = Path(tmp) / "home"
            for root, _, separate in variants.values():
                run_once(root / "src", root, home, separate)  # warm the caches
            wait_for_conversion(home)
            for repeat in range(args.repeats):
                for name, (root, empty, separate) in variants.items():
                    run_home = Path(tempfile.mkdtemp(dir=tmp)) if empty else home
                    runs[name].append(run_once(root / "src", root, run_home, separate))
                    if empty and root == ROOT:
                        wait_for_conversion(run_home)
                    logger.info(
                        "%d %s: %.2f s, %.0f MB (+%.0f MB children)",
                        repeat,
                        name,
                        *runs[name][-1],
                    )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                check=False,
                capture_output=True,
            )

    report = {
        name: {
            "wall_s_median": statistics.median(s for s, _, _ in values),
            "peak_rss_mb_median": statistics.median(m for _, m, _ in values),
            "children_peak_rss_mb_median": statistics.median(c for _, _, c in values),
            "runs": values,
        }
        for name, values in runs.items()
    }
    print(f"`fer8 predict {PHOTO}`, a whole process, median of {args.repeats}:\n")
    print("| fer8 | wall s | / old | peak RSS MB | its child processes' peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, row in report.items():
        in_process = "in process" in name
        reference = report[
            f"{old_name}, landmark{'s in' if in_process else ''} process"
            + (", empty cache" if "empty cache" in name else "")
        ]["wall_s_median"]
        print(
            f"| {name} | {row['wall_s_median']:.2f} | {row['wall_s_median'] / reference:.2f} | "
            f"{row['peak_rss_mb_median']:.0f} | {row['children_peak_rss_mb_median']:.0f} |"
        )
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
