#!/usr/bin/env python3
"""Benchmark fer8's prediction path: per-stage latency, folder throughput, peak memory.

What it measures, for each runtime (``--runtimes``): ``onnxruntime``, how fer8 predicts,
and ``tensorflow``, the same weights run by Keras with BatchNorm folded (how fer8
predicted before ONNX Runtime; needs the train extra), in the same run:

1. One photo with one face (the astronaut), stage by stage: load (decode the file),
   detect, landmarks, align, classify (batch of 1), and end to end
   (``Predictor.predict(path)``); median and 90th percentile over ``--repeats`` runs,
   for each face detector (``--detectors``, YuNet and Haar by default).
2. A folder of photos (the two example portraits, copied) through ``predict_many`` at
   ``--batch-size``, in images/s, against the bare model's throughput at the same batch
   size (``ExpressionModel`` on preprocessed crops, nothing else).
3. Peak resident memory of a folder run over 100 and over 2,000 images, each in a fresh
   process, to show memory does not grow with the number of images.
4. The richer results on ONNX Runtime, in turns with plain prediction of the same photo:
   ``Predictor.predict`` (whose faces carry landmarks and head pose), the head pose
   alone (``head_pose``, what ``--landmarks`` costs beyond landmarks fitted anyway),
   ``Predictor.explain`` (class activation maps from the same forward pass), and
   ``--explain``'s picture (the heatmap laid over the photo).

The model is a ResNet50 at 224x224 with random weights unless ``--model`` names a
trained one: speed does not depend on the weights. Results are printed as Markdown and
written as JSON with ``--json``.

Usage:
    python scripts/bench_predict.py [--model PATH] [--repeats 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [ROOT / "examples" / "astronaut.png", ROOT / "examples" / "grace_hopper.jpg"]
LABELS = ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")


def benchmark_model_file(model_path: str | None, folder: Path) -> str:
    """The model file to time: ``model_path``, or a random-weight ResNet50 classifier at
    224 written into ``folder`` (speed does not depend on the weights)."""
    if model_path:
        return model_path
    from fer8.models.modelfile import ModelSpec
    from fer8.training.backbones import BACKBONES, build_backbone, build_classifier
    from fer8.training.keras_models import save_model

    network = build_classifier(build_backbone("resnet50", 224), len(LABELS))
    spec = ModelSpec(LABELS, 224, BACKBONES["resnet50"], "resnet50", name="random-resnet50")
    return str(save_model(network, spec, folder / "random-resnet50.fer8"))


def load_benchmark_model(model_path: str, runtime: str):
    """The model in ``runtime``: ``onnxruntime`` (fer8's) or ``tensorflow`` (Keras)."""
    import fer8

    if runtime == "onnxruntime":
        return fer8.load_model(model_path)
    from fer8.training.keras_models import keras_expression_model, load_keras_model

    return keras_expression_model(*load_keras_model(model_path))


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p90_ms": 1000 * ordered[int(0.9 * (len(ordered) - 1))],
    }


def time_stages(models: dict, repeats: int, detector: str) -> dict[str, dict]:
    """Stage timings per runtime; the runtimes take turns, so that both see the same
    machine (this shared 2-core machine's speed changes from minute to minute)."""
    import fer8

    predictors = {
        runtime: fer8.Predictor(model, detector=detector) for runtime, model in models.items()
    }
    path = EXAMPLES[0]
    names = ("load", "detect", "landmarks", "align", "classify", "end_to_end")
    stages = {runtime: {name: [] for name in names} for runtime in models}
    for _ in range(repeats):
        for runtime, predictor in predictors.items():
            t0 = time.perf_counter()
            image = fer8.load_image(path)
            t1 = time.perf_counter()
            (box,) = fer8.detect(image, detector)
            t2 = time.perf_counter()
            points = fer8.landmarks(
                image, box, detector=detector, predictor=predictor.landmark_model
            )
            t3 = time.perf_counter()
            crop = fer8.align(image, box, points)
            t4 = time.perf_counter()
            fer8.classify([crop], predictor.model)
            t5 = time.perf_counter()
            predictor.predict(path)
            t6 = time.perf_counter()
            for name, seconds in zip(names, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                stages[runtime][name].append(seconds)
    return {
        runtime: {name: percentiles(values) for name, values in timings.items()}
        for runtime, timings in stages.items()
    }


def time_richer(model, repeats: int) -> dict[str, dict]:
    """Plain prediction, the pose, explanations and their picture, taking turns."""
    import fer8
    from fer8.pipeline.explain import overlay
    from fer8.pipeline.pose import head_pose

    predictor = fer8.Predictor(model)
    path = EXAMPLES[0]
    image = fer8.load_image(path)
    (face,) = predictor.predict(path).faces
    predictor.explain(path)  # reads the head's weights once
    names = ("predict", "pose", "explain", "explain_picture")
    timings = {name: [] for name in names}
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict(path)
        t1 = time.perf_counter()
        head_pose(face.landmarks, image.shape[1::-1])
        t2 = time.perf_counter()
        explanations = predictor.explain(path)
        t3 = time.perf_counter()
        overlay(image, explanations)
        t4 = time.perf_counter()
        for name, seconds in zip(names, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            timings[name].append(seconds)
    return {name: percentiles(values) for name, values in timings.items()}


def make_folder(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        source = EXAMPLES[index % len(EXAMPLES)]
        target = folder / f"{index:05d}{source.suffix}"
        shutil.copyfile(source, target)
        paths.append(str(target))
    return paths


def bare_throughput(model, batch_size: int, batches: int) -> float:
    """Images/s of the network alone on preprocessed crops (the upper bound).

    Best of two runs, like the folder figure: this shared 2-core machine varies by
    up to 20% from one minute to the next, and the best run is the least disturbed.
    """
    import numpy as np

    size = model.spec.input_size
    crops = np.random.default_rng(0).integers(0, 255, (batch_size, size, size, 3), np.uint8)
    batch = model.spec.preprocessing.apply(crops)
    model(batch)
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        for _ in range(batches):
            model(batch)
        rates.append(batches * batch_size / (time.perf_counter() - start))
    return max(rates)


def folder_throughput(model, paths: list[str], batch_size: int, workers: int) -> float:
    import fer8

    predictor = fer8.Predictor(model, batch_size=batch_size, workers=workers)
    list(predictor.predict_many(paths[:batch_size]))  # warm up every code path
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        faces = sum(len(result.faces) for result in predictor.predict_many(paths))
        rates.append(len(paths) / (time.perf_counter() - start))
        assert faces == len(paths), f"expected one face per image, got {faces}"
    return max(rates)


def peak_memory_mb(count: int, batch_size: int, model_path: str, runtime: str) -> float:
    """Peak RSS of a fresh process predicting ``count`` images from a folder."""
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from bench_predict import load_benchmark_model, make_folder\n"
        "import fer8, tempfile, pathlib\n"
        "model = load_benchmark_model(%r, %r)\n"
        "paths = make_folder(pathlib.Path(tempfile.mkdtemp()), %d)\n"
        "n = sum(1 for _ in fer8.Predictor(model, batch_size=%d).predict_many(paths))\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child
        # of this (large) process would report this process's size.
        "status = open('/proc/self/status').read()\n"
        "print(int(status.split('VmHWM:')[1].split()[0]) / 1024)\n"
    ) % (str(Path(__file__).parent), model_path, runtime, count, batch_size)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .fer8 file (default: random-weight ResNet50 at 224)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=160, help="folder size for throughput")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--memory-counts", default="100,2000")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--detectors",
        default="yunet,haar",
        help="face detectors to time the stages with, comma-separated",
    )
    parser.add_argument("--runtimes", default="onnxruntime,tensorflow")
    args = parser.parse_args()

    import onnxruntime

    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "processor": platform.processor(),
        },
        "batch_size": args.batch_size,
        "runtimes": {},
    }
    runtimes = args.runtimes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = benchmark_model_file(args.model, Path(tmp))
        paths = make_folder(Path(tmp) / "folder", args.images)
        models = {runtime: load_benchmark_model(model_path, runtime) for runtime in runtimes}
        timings = {
            detector: time_stages(models, args.repeats, detector)
            for detector in args.detectors.split(",")
        }
        for runtime, model in models.items():
            stages = {detector: timings[detector][runtime] for detector in timings}
            bare = bare_throughput(model, args.batch_size, max(10, args.images // args.batch_size))
            folder = folder_throughput(model, paths, args.batch_size, args.workers)
            report["runtimes"][runtime] = {
                "stages": stages,
                "bare_model_img_s": bare,
                "folder_img_s": folder,
                "folder_vs_bare": folder / bare,
            }
            ends = ", ".join(f"{d} {s['end_to_end']['p50_ms']:.1f} ms" for d, s in stages.items())
            print(
                f"{runtime}: end to end p50 {ends}, "
                f"folder {folder:.1f} img/s vs bare {bare:.1f} img/s",
                file=sys.stderr,
            )
        if "onnxruntime" in models:
            report["richer"] = time_richer(models["onnxruntime"], args.repeats)
        counts = [int(c) for c in args.memory_counts.split(",") if c]
        report["peak_rss_mb"] = {
            runtime: {
                str(c): peak_memory_mb(c, args.batch_size, model_path, runtime) for c in counts
            }
            for runtime in runtimes
        }

    print_markdown(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def print_markdown(report: dict) -> None:
    machine = report["machine"]
    print(
        f"Machine: {machine['cpus']} CPUs, Python {machine['python']}, "
        f"ONNX Runtime {machine['onnxruntime']}; batch size {report['batch_size']}\n"
    )
    columns = [(r, d, s) for r, v in report["runtimes"].items() for d, s in v["stages"].items()]
    print(
        "| stage (one photo, one face) | "
        + " | ".join(f"{r}, {d}: p50 / p90 ms" for r, d, _ in columns)
        + " |"
    )
    print("| --- |" + " --- |" * len(columns))
    for stage in columns[0][2]:
        cells = [f"{s[stage]['p50_ms']:.1f} / {s[stage]['p90_ms']:.1f}" for _, _, s in columns]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print("\n| runtime | folder img/s | bare model img/s | folder / bare |")
    print("| --- | --- | --- | --- |")
    for runtime, r in report["runtimes"].items():
        print(
            f"| {runtime} | {r['folder_img_s']:.1f} | {r['bare_model_img_s']:.1f} | "
            f"{r['folder_vs_bare']:.0%} |"
        )
    if "richer" in report:
        print("\n| one photo, one face, onnxruntime | p50 / p90 ms |")
        print("| --- | --- |")
        for name, value in report["richer"].items():
            print(f"| {name} | {value['p50_ms']:.2f} / {value['p90_ms']:.2f} |")
    print("\n| runtime | images in folder run | peak RSS MB |")
    print("| --- | --- | --- |")
    for runtime, counts in report["peak_rss_mb"].items():
        for count, mb in counts.items():
            print(f"| {runtime} | {count} | {mb:.0f} |")


if __name__ == "__main__":
    main()
