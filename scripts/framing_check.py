"""Do pre-cropped faces get framed like faces found in whole photos? Measured on JAFFE.

Every JAFFE photo (256x256, head and shoulders) is framed two ways:

* **photo**: the full ``fer8 predict`` path, detect -> landmarks -> align
  (:func:`fer8.faces_in_photo`);
* **FER-style crop**: the Haar box cut out and shrunk to 48x48 grayscale, as FER2013's
  faces were made, then framed by :func:`fer8.face_from_crop` (what training does with
  FER+ and fer2013.csv).

Both crops are mapped back to the photo, and the script reports where the eye centres
(from the photo's landmarks) land in each 224-pixel crop, and how far apart the two
framings put them. With ``--model`` it also classifies both crops.

    python scripts/framing_check.py JAFFE_DIR [--model runs/default/model.fer8]
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2
import numpy as np

import fer8
from fer8.pipeline.alignment import EYE_X, EYE_Y
from fer8.pipeline.landmarking import eye_centers, load_landmark_model
from fer8.training.datasets import read_dataset

logger = logging.getLogger("framing_check")
SIZE = 224


def fer_style_crop(image: np.ndarray, box: fer8.Box) -> tuple[np.ndarray, np.ndarray]:
    """The face box shrunk to 48x48 gray, and the 2x3 matrix photo -> 48 px crop."""
    scale = 48.0 / box.w
    matrix = np.array([[scale, 0, -scale * box.x], [0, scale, -scale * box.y]])
    crop = cv2.warpAffine(image, matrix, (48, 48), flags=cv2.INTER_AREA)
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return np.repeat(gray[:, :, None], 3, axis=2), matrix


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``outer(inner(x))``."""
    full = np.vstack([inner, [0, 0, 1]])
    return (np.vstack([outer, [0, 0, 1]]) @ full)[:2]


def apply(matrix: np.ndarray, point: np.ndarray) -> np.ndarray:
    return matrix[:, :2] @ point + matrix[:, 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jaffe", type=Path, help="folder with JAFFE's class folders")
    parser.add_argument("--model", help="also classify both crops with this model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    data = read_dataset(args.jaffe, cropped=False)
    landmark_model = load_landmark_model()
    model = fer8.load_model(args.model) if args.model else None
    targets = np.array([[EYE_X * SIZE, EYE_Y * SIZE], [(1 - EYE_X) * SIZE, EYE_Y * SIZE]])
    whole_err = []
    photo_err, crop_err, gap, aligned, correct = [], [], [], 0, {"photo": 0, "crop": 0}
    missed = 0
    for sample in data.samples:
        image = sample.load()
        faces = fer8.faces_in_photo(image, max_faces=1, landmark_model=landmark_model)
        if not faces:
            missed += 1
            continue
        box, photo = faces[0]
        eyes = np.array(eye_centers(photo.landmarks), np.float64)
        small, to_small = fer_style_crop(image, box)
        _, crop = fer8.face_from_crop(small, landmark_model=landmark_model)
        aligned += crop.aligned
        in_photo = np.array([apply(photo.matrix, e) for e in eyes])
        in_crop = np.array([apply(compose(crop.matrix, to_small), e) for e in eyes])
        # The fallback for crops without a confirmed face: the 48 px crop used whole.
        whole = fer8.crop_square(small, fer8.Box(0, 0, 48, 48), SIZE, margin=0.0)
        in_whole = np.array([apply(compose(whole.matrix, to_small), e) for e in eyes])
        whole_err.append(np.linalg.norm(in_whole - targets, axis=1).mean())
        photo_err.append(np.linalg.norm(in_photo - targets, axis=1).mean())
        crop_err.append(np.linalg.norm(in_crop - targets, axis=1).mean())
        gap.append(np.linalg.norm(in_photo - in_crop, axis=1).mean())
        if model is not None:
            probabilities = fer8.classify([photo, crop], model)
            for name, row in zip(("photo", "crop"), probabilities):
                correct[name] += model.labels[int(row.argmax())] == sample.label

    n = len(photo_err)
    logger.info("JAFFE photos: %d, face found in %d (%d missed)", len(data.samples), n, missed)
    logger.info(
        "FER-style 48 px crops aligned from landmarks (HOG-confirmed): %d of %d (%.0f%%);"
        " the rest used whole",
        aligned,
        n,
        100 * aligned / n,
    )
    for name, errors in (
        ("photo (detect+align)", photo_err),
        ("FER-style crop", crop_err),
        ("FER-style crop used whole (fallback)", whole_err),
    ):
        logger.info(
            "eye centres vs their target positions in a %d px crop, %s: mean %.1f px, "
            "95th percentile %.1f px",
            SIZE,
            name,
            np.mean(errors),
            np.percentile(errors, 95),
        )
    logger.info(
        "distance between the two framings' eye positions: mean %.1f px (%.1f%% of the "
        "side), 95th percentile %.1f px",
        np.mean(gap),
        100 * np.mean(gap) / SIZE,
        np.percentile(gap, 95),
    )
    if model is not None:
        logger.info(
            "accuracy with %s: photo framing %.1f%%, FER-style crop framing %.1f%%",
            args.model,
            100 * correct["photo"] / n,
            100 * correct["crop"] / n,
        )


if __name__ == "__main__":
    main()
