#!/usr/bin/env python3
"""In-process prediction, this checkout against an earlier fer8, in the same run.

Each variant runs in a fresh process with the bundled model (or ``--model``), the
variants taking turns ``--repeats`` times:

* **one photo**: ``Predictor.predict`` on the astronaut (512x512, one face, decoded
  once beforehand), the median of blocks of 20 calls; the median over blocks is reported;
* **a folder**: ``Predictor.predict_many`` over ``--images`` photo files (the two
  example portraits, copied), three times: the best in photos per second, and the least
  CPU time a photo (both cores' work; a shared machine's other work slows a pass, never
  speeds one up);
* **where the time goes**: with ``--profile``, cProfile over 20 calls of
  ``Predictor.predict``: the functions taking the most time of their own;
* **OpenCV Zoo's pipeline**, with ``--zoo-model`` (its expression model's ONNX file):
  the same photo through what a user of OpenCV Zoo runs (``cv2.FaceDetectorYN`` at the
  photo's size, the five-point warp to 112x112, MobileFaceNet int8; ``peer_zoo.py``),
  timed the same way, taking turns with the others;
* with ``--avx2``, both fer8s and OpenCV Zoo's pipeline again as on a CPU with AVX2
  alone (``scripts/avx2_only.sh``: AVX-512, AMX and AVX-VNNI hidden from CPUID, so
  ONNX Runtime, OpenCV and numpy take their AVX2 kernels), taking turns with the rest,
  each compared with the zoo's pipeline on the same kernels.

Usage:
    python scripts/bench_pipeline.py [--old-rev 998e0e7] [--repeats 3] [--images 100]
        [--profile] [--zoo-model ../shared/weights/opencv_zoo_fer_mobilefacenet_int8.onnx]
        [--avx2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import cProfile, io, json, pstats, statistics, sys, time
import fer8
model, folder, profile = sys.argv[1] or None, sys.argv[2], sys.argv[3] == "1"
predictor = fer8.Predictor(model)
photo = fer8.load_image(%(astronaut)r)
for _ in range(3):
    predictor.predict(photo)
blocks = []
for _ in range(5):
    start = time.perf_counter()
    for _ in range(20):
        predictor.predict(photo)
    blocks.append((time.perf_counter() - start) / 20)
import pathlib
files = sorted(pathlib.Path(folder).iterdir())
list(predictor.predict_many(files[:8]))
rates, cpu = [], []
for _ in range(3):
    start, start_cpu = time.perf_counter(), time.process_time()
    faces = sum(len(r.faces) for r in predictor.predict_many(files))
    rates.append(len(files) / (time.perf_counter() - start))
    cpu.append(1000 * (time.process_time() - start_cpu) / len(files))
top = []
if profile:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(20):
        predictor.predict(photo)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    top = [(f"{func[2]} ({pathlib.Path(func[0]).name}:{func[1]})", 1000 * v[2] / 20)
           for func, v in rows]
print(json.dumps({"photo_ms": 1000 * statistics.median(blocks), "folder_per_s": max(rates),
                  "folder_cpu_ms": min(cpu), "faces": faces, "top": top}))
"""


ZOO_CHILD = """
import json, statistics, sys, time
sys.path.insert(0, %(scripts)r)
import cv2
import fer8
from peer_zoo import ZooModel
photo = cv2.cvtColor(fer8.load_image(%(astronaut)r), cv2.COLOR_RGB2BGR)  # as cv2.imread
model = ZooModel(%(zoo)r)
height, width = photo.shape[:2]
detector = cv2.FaceDetectorYN.create(%(yunet)r, "", (width, height), 0.9, 0.3, 5000)

def predict():
    _, faces = detector.detect(photo)
    rgb = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)
    return [model.on_keypoints(rgb, face[4:14].reshape(5, 2)) for face in faces]

assert len(predict()) == 1
for _ in range(3):
    predict()
blocks = []
for _ in range(5):
    start = time.perf_counter()
    for _ in range(20):
        predict()
    blocks.append((time.perf_counter() - start) / 20)
print(json.dumps({"photo_ms": 1000 * statistics.median(blocks)}))
"""


AVX2_ONLY = ("bash", str(ROOT / "scripts" / "avx2_only.sh"))


def run_zoo(zoo_model: str, wrapper: tuple[str, ...] = ()) -> dict:
    code = ZOO_CHILD % {
        "scripts": str(ROOT / "scripts"),
        "astronaut": str(ROOT / "examples" / "astronaut.png"),
        "zoo": zoo_model,
        "yunet": str(ROOT / "src" / "fer8" / "models" / "face_detection_yunet_2023mar.onnx"),
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [*wrapper, sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(
    src: Path, model: str | None, folder: Path, profile: bool, wrapper: tuple[str, ...] = ()
) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    code = CHILD % {"astronaut": str(ROOT / "examples" / "astronaut.png")}
    out = subprocess.run(
        [*wrapper, sys.executable, "-c", code, model or "", str(folder), "1" if profile else "0"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--old-rev", default="998e0e7")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--zoo-model", help="OpenCV Zoo's expression model (ONNX)")
    parser.add_argument("--avx2", action="store_true", help="also as on a CPU with AVX2 alone")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fer8-bench-pipeline-"))
    folder = tmp / "photos"
    folder.mkdir()
    examples = [ROOT / "examples" / "astronaut.png", ROOT / "examples" / "grace_hopper.jpg"]
    for index in range(args.images):
        source = examples[index % 2]
        shutil.copy(source, folder / f"{index:04d}{source.suffix}")
    old = tmp / "old"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.old_rev],
        check=True,
        capture_output=True,
    )
    # Each fer8 variant: its source, how it runs (a wrapper command) and its zoo turn.
    variants: dict[str, tuple[Path, tuple[str, ...], str]] = {
        f"fer8 at {args.old_rev}": (old / "src", (), "OpenCV Zoo"),
        "this checkout": (ROOT / "src", (), "OpenCV Zoo"),
    }
    zoo_variants = {"OpenCV Zoo": ()}
    if args.avx2:
        zoo = "OpenCV Zoo, AVX2 alone"
        variants[f"fer8 at {args.old_rev}, AVX2 alone"] = (old / "src", AVX2_ONLY, zoo)
        variants["this checkout, AVX2 alone"] = (ROOT / "src", AVX2_ONLY, zoo)
        zoo_variants[zoo] = AVX2_ONLY
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    zoos: dict[str, list[dict]] = {name: [] for name in zoo_variants}
    try:
        for repeat in range(args.repeats):
            for name, (src, wrapper, _) in variants.items():
                result = run(src, args.model, folder, args.profile and repeat == 0, wrapper)
                runs[name].append(result)
                print(
                    f"{name}: one photo {result['photo_ms']:.1f} ms, "
                    f"folder {result['folder_per_s']:.1f} photos/s, "
                    f"{result['folder_cpu_ms']:.1f} CPU ms a photo",
                    file=sys.stderr,
                )
            for name, wrapper in zoo_variants.items() if args.zoo_model else ():
                zoos[name].append(run_zoo(args.zoo_model, wrapper))
                print(f"{name}: one photo {zoos[name][-1]['photo_ms']:.1f} ms", file=sys.stderr)
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        "| fer8 | one photo, ms (median of blocks of 20) | folder, photos/s "
        "| folder, CPU ms a photo |"
    )
    print("| --- | ---: | ---: | ---: |")
    for name, results in runs.items():
        photo = statistics.median(r["photo_ms"] for r in results)
        rate = statistics.median(r["folder_per_s"] for r in results)
        cpu = statistics.median(r["folder_cpu_ms"] for r in results)
        print(f"| {name} | {photo:.1f} | {rate:.1f} | {cpu:.1f} |")
    if args.zoo_model:
        for name, results in zoos.items():
            zoo_ms = statistics.median(r["photo_ms"] for r in results)
            print(f"| {name} | {zoo_ms:.1f} | | |")
        for name, results in runs.items():
            # Each turn against the zoo's turn of the same repeat: the machine's speed
            # drifts between repeats more than between neighbouring runs.
            zoo = zoos[variants[name][2]]
            ratios = [r["photo_ms"] / z["photo_ms"] for r, z in zip(results, zoo)]
            print(
                f"\n{name}: {statistics.median(ratios):.2f}x OpenCV Zoo's time for one photo "
                f"on the same kernels (median of the repeats' ratios; "
                f"{min(ratios):.2f}-{max(ratios):.2f})"
            )
    if args.profile:
        for name, results in runs.items():
            print(f"\n{name}, own time, ms per call of Predictor.predict:")
            for label, ms in results[0]["top"]:
                print(f"  {ms:7.2f}  {label}")
    if args.json:
        args.json.write_text(json.dumps({**runs, **zoos}, indent=2) + "\n")


if __name__ == "__main__":
    main()
