#!/usr/bin/env python3
"""Benchmark ``fer8 train``: step throughput against the bare model, and peak memory.

1. ``fer8 train`` (the library's :func:`fer8.training.train`, which the command calls)
   on a FER+-sized dataset for two short epochs of ``--steps`` steps; the second epoch's
   training steps are timed (from the epoch's start to its validation), so compiling
   and validation are left out. Its images/s include the whole input pipeline: gather
   from the in-memory crops, augmentation, preprocessing, prefetch.
2. The bare model: the same network, optimizer, loss and batch size, compiled the same
   way, fed one fixed preprocessed batch with ``train_on_batch``: the speed with no
   input pipeline at all.
3. Peak resident memory (``ru_maxrss``) of the run in (1), including preparing the
   crops of every image of the training and validation sets.

Each part runs in its own process so one does not warm the other up.

    python scripts/bench_train.py --data FER2013Train --val FER2013Valid \\
        [--image-size 224] [--batch-size 32] [--steps 30] [--json out.json]

Crops come from the crop cache when it holds them (run ``fer8 train`` once first, or
wait for the first preparation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def run_fer8_train(args) -> dict:
    import keras

    from fer8.training.loop import TrainConfig, train

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    timer = StepTimer()
    config = TrainConfig(
        data=args.data,
        val=args.val,
        epochs=2,
        batch_size=args.batch_size,
        image_size=args.image_size,
        backbone_weights="none",
        freeze_stages=args.freeze_stages,
        steps_per_epoch=args.steps,
        precision=args.precision,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, Path(tmp) / "run", verbose=0, callbacks=[timer])
    images = args.steps * args.batch_size
    return {
        "images_per_s": images / timer.seconds[-1],
        "epoch_seconds": timer.seconds,
        "epochs_done": result.epochs_done,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_bare(args) -> dict:
    import keras
    import numpy as np

    from fer8.training.loop import TrainConfig, build_model, set_precision

    config = TrainConfig(
        data=args.data,
        batch_size=args.batch_size,
        image_size=args.image_size,
        backbone_weights="none",
        freeze_stages=args.freeze_stages,
        precision=args.precision,
    )
    set_precision(config.precision)
    model = build_model(config, tuple(f"class{i}" for i in range(7)), args.steps)
    rng = np.random.default_rng(0)
    x = rng.uniform(-120, 150, (args.batch_size, args.image_size, args.image_size, 3))
    y = keras.utils.to_categorical(rng.integers(0, 7, args.batch_size), 7)
    x, y, w = x.astype("float32"), y.astype("float32"), np.ones(args.batch_size, "float32")
    for _ in range(3):
        model.train_on_batch(x, y, sample_weight=w)
    started = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(x, y, sample_weight=w)
    seconds = time.perf_counter() - started
    return {"images_per_s": args.steps * args.batch_size / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="training data (FER+ FER2013Train)")
    parser.add_argument("--val", required=True, help="validation data (FER+ FER2013Valid)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--freeze-stages", type=int, default=0)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--part", choices=["train", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part:  # child process
        result = run_fer8_train(args) if args.part == "train" else run_bare(args)
        print(json.dumps(result))
        return

    results = {}
    for part in ("bare", "train"):
        command = [sys.executable, __file__, *sys.argv[1:], "--part", part]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[part] = json.loads(output.strip().splitlines()[-1])
    ratio = results["train"]["images_per_s"] / results["bare"]["images_per_s"]
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "freeze_stages": args.freeze_stages,
        "precision": args.precision,
        "steps": args.steps,
        "fer8_train_images_per_s": round(results["train"]["images_per_s"], 2),
        "bare_train_on_batch_images_per_s": round(results["bare"]["images_per_s"], 2),
        "input_pipeline_cost_percent": round(100 * (1 - ratio), 1),
        "peak_rss_mb": round(results["train"]["peak_rss_mb"]),
    }
    print(
        f"| image size | batch | fer8 train img/s | bare img/s | pipeline cost | peak RSS |\n"
        f"|---|---|---|---|---|---|\n"
        f"| {args.image_size} | {args.batch_size} | {summary['fer8_train_images_per_s']} | "
        f"{summary['bare_train_on_batch_images_per_s']} | "
        f"{summary['input_pipeline_cost_percent']}% | {summary['peak_rss_mb']} MB |"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
