#!/usr/bin/env python3
"""Benchmark ``--engine ray`` against plain ``predict_many`` on one machine.

What it measures, on a folder of copies of the two example photos (``--images``):

1. Plain: ``Predictor.predict_many`` over the folder in one fresh process (one
   preparation thread, ONNX Runtime on every core), timed after the model is loaded,
   and that process's peak resident memory (VmHWM).
2. Ray: a local Ray instance with ``--actors`` CPUs and a 200 MB object store, then
   :func:`fer8.distributed.ray_data.predict_files` with that many actors (one CPU and
   one ONNX Runtime thread each) writing a Parquet file, timed from the call to the
   last row written: it includes the actors loading their models, which plain's time
   does not. While it runs, each actor's peak resident memory (VmHWM) is sampled from
   ``/proc``.

The ratio is Ray's images/s over plain's: what the Ray path costs on one machine,
where it can only add overhead. On a cluster, throughput grows with the actors.

Usage:
    python scripts/bench_ray.py [--images 200] [--actors 2] [--model default] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [ROOT / "examples" / "astronaut.png", ROOT / "examples" / "grace_hopper.jpg"]


def make_folder(folder: Path, count: int) -> list[Path]:
    """``count`` copies of the example photos, alternating."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        example = EXAMPLES[index % 2]
        path = folder / f"{index:05d}-{example.name}"
        shutil.copyfile(example, path)
        paths.append(path)
    return paths


def plain(folder: Path, model: str, batch_size: int) -> dict:
    """images/s of predict_many in a fresh process, after loading, and its VmHWM (MB)."""
    code = (
        "import json, sys, time, pathlib, fer8\n"
        "paths = sorted(pathlib.Path(sys.argv[1]).iterdir())\n"
        "predictor = fer8.Predictor(sys.argv[2], batch_size=int(sys.argv[3]))\n"
        "start = time.perf_counter()\n"
        "n = sum(1 for _ in predictor.predict_many(map(str, paths)))\n"
        "seconds = time.perf_counter() - start\n"
        "status = open('/proc/self/status').read()\n"
        "print(json.dumps({'images': n, 'seconds': seconds,\n"
        "                  'peak_rss_mb': int(status.split('VmHWM:')[1].split()[0]) / 1024}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder), model, str(batch_size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


class ActorMemory(threading.Thread):
    """Samples the peak resident memory (VmHWM, MB) of every fer8 actor process."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[int, float] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"_PredictBatch" not in cmdline:
                        continue
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
                self.peaks[int(pid)] = max(peak, self.peaks.get(int(pid), 0.0))

    def stop(self) -> dict[int, float]:
        self._done.set()
        self.join()
        return self.peaks


def on_ray(folder: Path, model: str, batch_size: int, actors: int) -> dict:
    """images/s of predict_files with ``actors`` actors, and each actor's VmHWM (MB)."""
    import ray

    from fer8.distributed.inputs import list_inputs
    from fer8.distributed.ray_data import connect, predict_files

    connect(None, object_store_memory=200_000_000, num_cpus=actors)
    try:
        files = list_inputs([str(folder)])
        memory = ActorMemory()
        memory.start()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            predict_files(
                files, Path(out) / "rows.parquet", model, concurrency=actors, batch_size=batch_size
            )
        seconds = time.perf_counter() - start
        peaks = memory.stop()
    finally:
        ray.shutdown()
    return {
        "images": len(files),
        "seconds": seconds,
        "actor_peak_rss_mb": sorted(round(v, 1) for v in peaks.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--model", default="default", help="a model name or .fer8 file")
    parser.add_argument("--batch-size", type=int, default=16, help="faces per forward pass")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    with tempfile.TemporaryDirectory(prefix="fer8-bench-ray-") as temp:
        folder = Path(temp) / "photos"
        make_folder(folder, args.images)
        base = plain(folder, args.model, args.batch_size)
        ray_run = on_ray(folder, args.model, args.batch_size, args.actors)
    base_rate = base["images"] / base["seconds"]
    ray_rate = ray_run["images"] / ray_run["seconds"]
    figures = {
        "images": args.images,
        "actors": args.actors,
        "model": args.model,
        "plain_images_per_s": round(base_rate, 2),
        "plain_peak_rss_mb": round(base["peak_rss_mb"], 1),
        "ray_images_per_s": round(ray_rate, 2),
        "ray_actor_peak_rss_mb": ray_run["actor_peak_rss_mb"],
        "ratio": round(ray_rate / base_rate, 3),
    }
    print("| engine | images/s | peak RSS (MB) |")
    print("| --- | ---: | ---: |")
    print(f"| plain `predict_many`, one process | {base_rate:.2f} | {base['peak_rss_mb']:.0f} |")
    print(
        f"| Ray, {args.actors} actors | {ray_rate:.2f} | "
        f"{', '.join(f'{v:.0f}' for v in ray_run['actor_peak_rss_mb'])} (each actor) |"
    )
    print(f"\nratio Ray / plain: {ray_rate / base_rate:.3f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
