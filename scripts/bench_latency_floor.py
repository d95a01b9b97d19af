#!/usr/bin/env python3
"""How low can one photo's end-to-end latency go on this machine? The floor, stage by stage.

``bench_predict.py`` times the pipeline as it is. This script asks what the two
expensive stages would cost if they were made cheaper in the two obvious ways, to show
whether the foundation's 40 ms target is within reach on this hardware:

* the network: the bundled model's architecture, FaceNet's Inception-ResNet-v1
  (``--backbone resnet50`` for the earlier ResNet50), with random weights and BatchNorm
  folded as ``fer8`` runs it, at batch 1 for each of ``--sizes`` input sides (the
  bundled model uses 160);
* detection: ``fer8.detect`` (YuNet, the default detector) on the astronaut with each
  of ``--min-sizes`` as the smallest face searched for (YuNet's default is 20 px).

The CPU stages that do not change (load, landmarks, align) are timed once, and each
combination's sum of medians is printed: a lower bound for end to end, since it leaves
out the Python glue between stages.

Usage:
    python scripts/bench_latency_floor.py [--backbone facenet] [--sizes 160,128,112] \\
        [--min-sizes 20,48] [--repeats 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds, after a few warm-up calls."""
    for _ in range(5):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return 1000 * statistics.median(seconds)


def network_ms(backbone: str, size: int, repeats: int) -> float:
    import numpy as np

    from fer8.training.backbones import build_backbone, build_classifier
    from fer8.training.inference import inference_function

    run = inference_function(build_classifier(build_backbone(backbone, size), 7), size)
    batch = np.random.default_rng(0).uniform(-100, 100, (1, size, size, 3)).astype(np.float32)
    return median_ms(lambda: run(batch), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backbone", default="facenet", help="network: facenet (the bundled one) or resnet50"
    )
    parser.add_argument("--sizes", default="160,128,112", help="network input sides")
    parser.add_argument("--min-sizes", default="20,48", help="smallest faces searched for")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()

    import fer8
    from fer8.pipeline.detection import load_detectors
    from fer8.pipeline.landmarking import load_landmark_model

    load_detectors()
    landmark_model = load_landmark_model()
    image = fer8.load_image(PHOTO)
    (box,) = fer8.detect(image)
    points = fer8.landmarks(image, box, predictor=landmark_model)
    fixed = {
        "load": median_ms(lambda: fer8.load_image(PHOTO), args.repeats),
        "landmarks": median_ms(
            lambda: fer8.landmarks(image, box, predictor=landmark_model), args.repeats
        ),
        "align": median_ms(lambda: fer8.align(image, box, points), args.repeats),
    }
    detect = {
        m: median_ms(lambda m=m: fer8.detect(image, min_size=m), args.repeats)
        for m in map(int, args.min_sizes.split(","))
    }
    network = {
        s: network_ms(args.backbone, s, args.repeats) for s in map(int, args.sizes.split(","))
    }

    print("| fixed stage | p50 ms |\n| --- | --- |")
    for name, ms in fixed.items():
        print(f"| {name} | {ms:.1f} |")
    print("\n| smallest face | detect p50 ms |\n| --- | --- |")
    for min_size, ms in detect.items():
        print(f"| {min_size} px | {ms:.1f} |")
    print("\n| network input | batch-1 p50 ms |\n| --- | --- |")
    for size, ms in network.items():
        print(f"| {size} px | {ms:.1f} |")
    print("\n| smallest face | network input | sum of stage medians ms |\n| --- | --- | --- |")
    for min_size, detect_ms in detect.items():
        for size, net_ms in network.items():
            print(f"| {min_size} px | {size} px | {sum(fixed.values()) + detect_ms + net_ms:.1f} |")


if __name__ == "__main__":
    main()
