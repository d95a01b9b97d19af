"""How well dlib's 68 landmarks fit on each detector's boxes, and YuNet's box mapping.

dlib's shape predictor was fitted on the boxes of dlib's own HOG detector. This script

1. matches each YuNet face to the HOG detector's box of the same face and reports the
   median offset and size of the HOG box relative to the YuNet box (the constants of
   ``fer8.pipeline.detection.yunet.landmark_box``);
2. fits the 68 points on the raw YuNet box, on the mapped box, on the Haar box and on
   the HOG box itself, and measures how far the eye centres of the 68 points are from
   YuNet's own eye keypoints, as a fraction of the distance between the eyes.

Usage::

    python scripts/landmark_fit_check.py JAFFE_DIR EXPW_DIR [--limit N]

(the folders of ``../shared/data/jaffe.tar.gz`` and ``expw.tar.gz``, extracted).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fer8.pipeline.detection import haar, yunet
from fer8.pipeline.images import iter_image_files, load_image
from fer8.pipeline.landmarking import eye_centers, landmarks, load_landmark_model
from fer8.results import Box


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--limit", type=int, default=600, help="photos per folder")
    args = parser.parse_args()

    import dlib

    hog = dlib.get_frontal_face_detector()
    predictor = load_landmark_model()
    for folder in args.folders:
        files = sorted(iter_image_files([folder]))
        step = max(1, len(files) // args.limit)
        offsets: list[tuple[float, float, float]] = []
        errors: dict[str, list[float]] = {
            name: []
            for name in (
                "yunet raw",
                "yunet mapped",
                "hog",
                "haar",
                "yunet raw, Haar's faces",
                "yunet mapped, Haar's faces",
            )
        }
        for path in files[::step][: args.limit]:
            image = load_image(path)
            faces = yunet.detect_faces(image, min_size=40)
            if not faces:
                continue
            face = faces[0]
            eyes = face.keypoints[:2]
            eye_distance = float(np.linalg.norm(eyes[1] - eyes[0]))
            if eye_distance < 10:
                continue

            def error(box: Box, image=image, eyes=eyes, eye_distance=eye_distance) -> float:
                left, right = eye_centers(landmarks(image, box, detector=None, predictor=predictor))
                return float(
                    max(np.linalg.norm(left - eyes[0]), np.linalg.norm(right - eyes[1]))
                    / eye_distance
                )

            errors["yunet raw"].append(error(face.box))
            errors["yunet mapped"].append(error(yunet.landmark_box(face.box)))
            hog_box = _matching(
                face.box, [Box(r.left(), r.top(), r.width(), r.height()) for r in hog(image, 1)]
            )
            haar_box = _matching(face.box, haar.detect(image, verify=False))
            if hog_box is not None:
                errors["hog"].append(error(hog_box))
                b = face.box
                offsets.append(
                    (
                        (hog_box.x + hog_box.w / 2 - b.x - b.w / 2) / b.w,
                        (hog_box.y + hog_box.h / 2 - b.y - b.h / 2) / b.h,
                        hog_box.w / b.w,
                    )
                )
            if haar_box is not None:
                errors["haar"].append(error(haar_box))
                # The same faces on YuNet's boxes: Haar finds only the easier ones.
                errors["yunet raw, Haar's faces"].append(errors["yunet raw"][-1])
                errors["yunet mapped, Haar's faces"].append(errors["yunet mapped"][-1])
        print(f"{folder}: {len(errors['yunet raw'])} faces")
        if offsets:
            dx, dy, scale = np.median(np.asarray(offsets), axis=0)
            print(
                f"  HOG box relative to YuNet's (median of {len(offsets)}): centre "
                f"{dx:+.3f} w, {dy:+.3f} h; side {scale:.3f} w"
            )
        for name, values in errors.items():
            if values:
                v = np.asarray(values)
                print(
                    f"  eye error on {name:<26} boxes: median {np.median(v):.3f}, "
                    f"90th pct {np.percentile(v, 90):.3f}, over 0.25: {np.mean(v > 0.25):.1%} "
                    f"(n {len(v)})"
                )


def _matching(box: Box, candidates: list[Box]) -> Box | None:
    best = max(candidates, key=box.iou, default=None)
    return best if best is not None and box.iou(best) >= 0.3 else None


if __name__ == "__main__":
    main()
