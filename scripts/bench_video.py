#!/usr/bin/env python3
"""Benchmark fer8 on video: frames analysed per second, and peak memory against length.

It makes its own 1280x720 test videos from the two example portraits (two faces drifting
across a grey picture, MPEG-4 ``mp4v`` at ``--rate`` frames per second), 30 s and 10 min
long, then, each in a fresh process (the bundled model unless ``--model``):

1. Speed on the 30 s video, at ``--fps 5`` and at every frame: frames analysed per
   second of wall time (after the model is loaded and warm), and how many seconds of
   video that is per second (1.0 = real time).
2. Peak resident memory (VmHWM from ``/proc/self/status``) of the 30 s and the 10 min
   video at ``--fps 5``: equal within 10% means memory does not grow with length.

With ``--old-rev REV`` it instead analyses every frame of one ``--seconds`` long video
with this checkout and with fer8 at ``REV`` (a temporary git worktree), taking turns,
and reports the median frames per second and CPU time a frame of each; ``--avx2`` adds
both as on a CPU with AVX2 alone (``scripts/avx2_only.sh``) to the turns.

Usage:
    python scripts/bench_video.py [--model PATH] [--rate 10] [--json out.json]
    python scripts/bench_video.py --old-rev 998e0e7 --seconds 10 --rate 25 [--repeats 2] [--avx2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1280, 720


def make_video(path: Path, seconds: float, rate: float) -> Path:
    """Two portraits drifting left and right on grey, written frame by frame."""
    import cv2

    import fer8

    faces = []
    for name, rows, cols in (
        ("astronaut.png", (20, 260), (110, 340)),
        ("grace_hopper.jpg", (60, 400), (120, 410)),
    ):
        photo = fer8.load_image(ROOT / "examples" / name)[rows[0] : rows[1], cols[0] : cols[1]]
        scale = 300 / photo.shape[0]
        faces.append(
            cv2.cvtColor(
                cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA),
                cv2.COLOR_RGB2BGR,
            )
        )
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), rate, (WIDTH, HEIGHT))
    for index in range(int(seconds * rate)):
        frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        phase = np.sin(2 * np.pi * index / (rate * 8))  # one sweep every 8 s
        for face, base in zip(faces, (120, 760)):
            x, y = int(base + 100 * phase), 180
            frame[y : y + face.shape[0], x : x + face.shape[1]] = face
        writer.write(frame)
    writer.release()
    return path


def run_child(
    video: Path,
    model: str | None,
    sampling: dict,
    src: Path = ROOT / "src",
    wrapper: tuple[str, ...] = (),
) -> dict:
    """Analyse one video in a fresh process (fer8 from ``src``, its command run through
    ``wrapper``): frames, faces, seconds, CPU seconds, peak memory."""
    code = (
        "import json, os, sys, time\n"
        "import fer8\n"
        "predictor = fer8.Predictor(%r)\n"
        "start, cpu = time.perf_counter(), sum(os.times()[:2])\n"
        "frames = faces = 0\n"
        "for result in predictor.predict_video(%r, **%r):\n"
        "    frames += 1; faces += len(result.faces)\n"
        "    assert result.error is None, result.error\n"
        "seconds, cpu = time.perf_counter() - start, sum(os.times()[:2]) - cpu\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec.
        "status = open('/proc/self/status').read()\n"
        "peak = int(status.split('VmHWM:')[1].split()[0]) / 1024\n"
        "print(json.dumps({'frames': frames, 'faces': faces, 'seconds': seconds,"
        " 'cpu_seconds': cpu, 'peak_mb': peak}))\n"
    ) % (model, str(video), sampling)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [*wrapper, sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .fer8 file or name (default: the bundled model)")
    parser.add_argument(
        "--rate", type=float, default=10.0, help="frame rate of the test videos (default 10)"
    )
    parser.add_argument(
        "--long",
        type=float,
        default=600.0,
        help="length of the long video in seconds (default 600)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--old-rev",
        help="instead: every frame of a --seconds long video with this checkout and with "
        "fer8 at this git revision, taking turns --repeats times",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="with --old-rev")
    parser.add_argument("--repeats", type=int, default=2, help="with --old-rev")
    parser.add_argument(
        "--avx2", action="store_true", help="with --old-rev: also as on a CPU with AVX2 alone"
    )
    args = parser.parse_args()
    if args.old_rev:
        compare(args)
        return

    folder = Path(tempfile.mkdtemp(prefix="fer8-bench-video-"))
    started = time.perf_counter()
    short = make_video(folder / "short.mp4", 30, args.rate)
    long = make_video(folder / "long.mp4", args.long, args.rate)
    print(
        f"made the videos in {time.perf_counter() - started:.0f} s: "
        f"{short.stat().st_size / 1e6:.1f} MB, {long.stat().st_size / 1e6:.1f} MB",
        file=sys.stderr,
    )

    figures: dict[str, dict] = {}
    for name, video, sampling in (
        ("30 s, --fps 5", short, {"fps": 5.0}),
        ("30 s, every frame", short, {"every_frame": True}),
        (f"{args.long / 60:.0f} min, --fps 5", long, {"fps": 5.0}),
    ):
        result = run_child(video, args.model, sampling)
        duration = 30 if video is short else args.long
        result["frames_per_s"] = result["frames"] / result["seconds"]
        result["video_s_per_s"] = duration / result["seconds"]
        figures[name] = result
        print(
            f"{name}: {result['frames']} frames ({result['faces']} faces) in "
            f"{result['seconds']:.1f} s",
            file=sys.stderr,
        )

    print(
        f"| video (1280x720, {args.rate:g} fps) | frames analysed | faces | seconds | "
        "frames/s | video s per s | peak memory |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, row in figures.items():
        print(
            f"| {name} | {row['frames']:,} | {row['faces']:,} | {row['seconds']:.1f} | "
            f"{row['frames_per_s']:.1f} | {row['video_s_per_s']:.2f} | "
            f"{row['peak_mb']:.0f} MB |"
        )
    peaks = [
        figures["30 s, --fps 5"]["peak_mb"],
        figures[f"{args.long / 60:.0f} min, --fps 5"]["peak_mb"],
    ]
    print(f"\npeak memory, long against short: {100 * (peaks[1] / peaks[0] - 1):+.1f}%")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def compare(args: argparse.Namespace) -> None:
    """Every frame of one video, this checkout against ``args.old_rev``, taking turns."""
    import statistics

    folder = Path(tempfile.mkdtemp(prefix="fer8-bench-video-"))
    video = make_video(folder / "video.mp4", args.seconds, args.rate)
    old = folder / "old"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.old_rev],
        check=True,
        capture_output=True,
    )
    variants: dict[str, tuple[Path, tuple[str, ...]]] = {
        f"fer8 at {args.old_rev}": (old / "src", ()),
        "this checkout": (ROOT / "src", ()),
    }
    if args.avx2:
        avx2_only = ("bash", str(ROOT / "scripts" / "avx2_only.sh"))
        variants[f"fer8 at {args.old_rev}, AVX2 alone"] = (old / "src", avx2_only)
        variants["this checkout, AVX2 alone"] = (ROOT / "src", avx2_only)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    try:
        for _ in range(args.repeats):
            for name, (src, wrapper) in variants.items():
                result = run_child(video, args.model, {"every_frame": True}, src, wrapper)
                runs[name].append(result)
                print(
                    f"{name}: {result['frames']} frames ({result['faces']} faces) in "
                    f"{result['seconds']:.1f} s, {result['cpu_seconds']:.1f} CPU s",
                    file=sys.stderr,
                )
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
            check=False,
            capture_output=True,
        )
    print(
        f"| 1280x720, two faces, every frame of {args.seconds:g} s at {args.rate:g} fps | "
        "frames/s (median) | CPU ms a frame | faces | peak memory |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, results in runs.items():
        rate = statistics.median(r["frames"] / r["seconds"] for r in results)
        cpu = statistics.median(1000 * r["cpu_seconds"] / r["frames"] for r in results)
        print(
            f"| {name} | {rate:.1f} | {cpu:.0f} | {results[0]['faces']:,} | "
            f"{max(r['peak_mb'] for r in results):.0f} MB |"
        )
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
