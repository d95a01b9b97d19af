"""Run the `fer` package on images; used by bench_accuracy.py inside .venv-fer.

Reads JSON lines ``{"path": ..., "cropped": bool, "box": [x, y, w, h] or null}`` on stdin
and writes one JSON line per image: ``{"label": <fer8 label or null>, "box_label": ...}``
(null: no face found, or unreadable). Pre-cropped faces are given to FER as one
whole-image box with offsets (0, 0), so it neither searches for a face nor shrinks the
crop by its 10-pixel margin; photos go through FER's own Haar detector with its default
margin, and the largest face counts, or with a labelled ``box`` the detected face that
overlaps it at IoU >= 0.3; ``box_label`` is FER's answer on the labelled box itself.
"""

import json
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
from fer.fer import FER  # noqa: E402

# FER's label names -> fer8's.
LABELS = {
    "angry": "angry",
    "disgust": "disgusted",
    "fear": "fearful",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprised",
    "neutral": "neutral",
}


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union if union else 0.0


def answer(face) -> str:
    return LABELS[max(face["emotions"], key=face["emotions"].get)]


def main() -> None:
    logging.disable(logging.INFO)
    for_crops, for_photos = FER(offsets=(0, 0)), FER()
    for line in sys.stdin:
        request = json.loads(line)
        image = cv2.imread(request["path"])  # BGR, as FER expects
        label = box_label = None
        box = request.get("box")
        if image is not None:
            if request["cropped"]:
                h, w = image.shape[:2]
                faces = for_crops.detect_emotions(image, face_rectangles=[(0, 0, w, h)])
            else:
                faces = for_photos.detect_emotions(image)
            if box is not None:
                faces = [f for f in faces if iou(f["box"], box) >= 0.3]
                faces = sorted(faces, key=lambda f: iou(f["box"], box))[-1:]
                labelled = for_photos.detect_emotions(image, face_rectangles=[tuple(box)])
                box_label = answer(labelled[0]) if labelled else None
            if faces:
                largest = max(faces, key=lambda f: f["box"][2] * f["box"][3])
                label = answer(largest)
        print(json.dumps({"label": label, "box_label": box_label}), flush=True)


if __name__ == "__main__":
    main()
