#!/usr/bin/env python3
"""fer8's numpy evaluation of dlib's 68-point model against dlib itself: the points on
real faces (the largest difference, in pixels) and the time each takes per face.

Faces: the two example photos, and from each folder given every n-th photo's detected
faces; a folder named like FER2013 (48x48 crops) is taken whole-crop, as ``fer8
predict --no-detect`` does (upscaled before fitting). Both predictors get the same
image and box through ``fer8.landmarks``.

Usage::

    python scripts/landmark_numpy_check.py [FOLDER ...] [--limit 200]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import dlib
import numpy as np

from fer8.pipeline.detection import detect
from fer8.pipeline.images import iter_image_files, load_image
from fer8.pipeline.landmark_worker import landmark_model_path
from fer8.pipeline.landmarking import landmarks
from fer8.pipeline.shape_model import read_shape_predictor
from fer8.pipeline.shape_predictor import ShapePredictor
from fer8.results import Box

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("landmark_numpy_check")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--limit", type=int, default=200, help="photos per folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    path = landmark_model_path()
    theirs = dlib.shape_predictor(str(path))
    ours = ShapePredictor(read_shape_predictor(path))
    sources = {"examples": [ROOT / "examples/astronaut.png", ROOT / "examples/grace_hopper.jpg"]}
    for folder in args.folders:
        files = sorted(iter_image_files([folder]))
        sources[folder.name] = files[:: max(1, len(files) // args.limit)][: args.limit]
    seconds = {"dlib": 0.0, "numpy": 0.0}
    total = 0
    for name, files in sources.items():
        worst, faces, differ = 0.0, 0, 0
        whole = "fer2013" in name.lower()
        for file in files:
            image = load_image(file)
            height, width = image.shape[:2]
            jobs = (
                [(Box(0, 0, width, height), None)]
                if whole
                else [(b, "yunet") for b in detect(image)]
            )
            for box, detector in jobs:
                points = {}
                for label, predictor in (("dlib", theirs), ("numpy", ours)):
                    start = time.perf_counter()
                    points[label] = landmarks(image, box, detector=detector, predictor=predictor)
                    seconds[label] += time.perf_counter() - start
                difference = float(np.abs(points["dlib"] - points["numpy"]).max())
                faces, differ, worst = faces + 1, differ + (difference > 0), max(worst, difference)
        total += faces
        logger.info(
            "%s: %d photos, %d faces, %d differ, largest difference %.3f px",
            name,
            len(files),
            faces,
            differ,
            worst,
        )
    logger.info(
        "per face (fer8.landmarks, both): dlib %.2f ms, numpy %.2f ms (%d faces)",
        1000 * seconds["dlib"] / total,
        1000 * seconds["numpy"] / total,
        total,
    )


if __name__ == "__main__":
    main()
