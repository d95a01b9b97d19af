"""Face detectors compared: recall on ExpW, false faces on face-free pictures, speed.

For each detector (YuNet, fer8's default, and the Haar cascade with its HOG check):

* **recall** on ExpW's labelled faces: a face counts as found when a detected box
  overlaps its labelled box at IoU >= 0.3 (the rule ``fer8 evaluate`` uses; ExpW's boxes
  come from another detector and frame faces differently);
* **false faces** on scikit-image's face-free pictures;
* **found** on the example portraits, the two side by side, and every JAFFE photo;
* **time**: p50 of ``fer8.detect`` on the 512x512 astronaut, and over the ExpW photos.

Usage::

    python scripts/bench_detect.py --expw EXPW_DIR --jaffe JAFFE_DIR [--limit N]

(the folders of ``../shared/data/expw.tar.gz`` and ``jaffe.tar.gz``, extracted).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import fer8
from fer8.pipeline.detection import DETECTORS, load_detectors
from fer8.pipeline.faces import match
from fer8.pipeline.images import iter_image_files
from fer8.training.datasets import read_dataset

ROOT = Path(__file__).resolve().parents[1]
#: scikit-image's sample pictures without a face (its "camera" and "astronaut" have one).
FACE_FREE = (
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "horse.png",
    "moon.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
    "hubble_deep_field.jpg",
    "page.png",
    "text.png",
    "clock_motion.png",
    "logo.png",
    "chessboard_RGB.png",
    "color.png",
    "retina.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "cell.png",
)


def face_free_pictures() -> dict[str, np.ndarray]:
    """scikit-image's face-free sample pictures, by file name."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return {name: fer8.load_image(folder / name) for name in FACE_FREE if (folder / name).is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expw", type=Path, required=True)
    parser.add_argument("--jaffe", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="ExpW faces (0: all)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    expw = read_dataset(args.expw).samples
    if args.limit:
        expw = expw[:: max(1, len(expw) // args.limit)][: args.limit]
    free = face_free_pictures()
    astronaut = fer8.load_image(ROOT / "examples" / "astronaut.png")
    hopper = fer8.load_image(ROOT / "examples" / "grace_hopper.jpg")
    portraits = {
        "astronaut": astronaut,
        "grace_hopper": hopper,
        "side by side": np.ascontiguousarray(np.concatenate([astronaut, hopper[:512]], axis=1)),
    }
    jaffe = [fer8.load_image(p) for p in iter_image_files([args.jaffe])]
    print(f"ExpW faces: {len(expw)}; face-free pictures: {len(free)}; JAFFE photos: {len(jaffe)}")
    for detector in DETECTORS:
        load_detectors(detector)
        found, seconds = 0, []
        for sample in expw:
            image = sample.load()
            start = time.perf_counter()
            boxes = fer8.detect(image, detector)
            seconds.append(time.perf_counter() - start)
            found += match(sample.box, boxes) is not None
        false = {name: len(fer8.detect(image, detector)) for name, image in free.items()}
        portraits_found = {
            name: len(fer8.detect(image, detector)) for name, image in portraits.items()
        }
        jaffe_found = sum(len(fer8.detect(image, detector)) == 1 for image in jaffe)
        timings = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fer8.detect(astronaut, detector)
            timings.append(time.perf_counter() - start)
        print(f"{detector}:")
        print(
            f"  ExpW recall (IoU >= 0.3): {found / len(expw):.1%} ({found} of {len(expw)}); "
            f"{1000 * np.median(seconds):.1f} ms p50 per photo"
        )
        print(
            f"  false faces on {len(free)} face-free pictures: {sum(false.values())} "
            f"{ {k: v for k, v in false.items() if v} or '' }"
        )
        print(
            f"  faces on the portraits: {portraits_found}; JAFFE photos with exactly one "
            f"face: {jaffe_found} of {len(jaffe)}"
        )
        print(f"  astronaut (512x512): {1000 * np.median(timings):.2f} ms p50 over {args.repeats}")


if __name__ == "__main__":
    main()
