"""Run the `fer` package on images; used by bench_accuracy.py inside .venv-fer.

Reads JSON lines ``{"path": ..., "cropped": bool}`` on stdin and writes one JSON line per
image: ``{"label": <fer8 label or null>}`` (null: no face found, or unreadable).
Pre-cropped faces are given to FER as one whole-image box with offsets (0, 0), so it
neither searches for a face nor shrinks the crop by its 10-pixel margin; photos go
through FER's own Haar detector with its default margin, and the largest face counts.
"""

import json
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
from fer.fer import FER  # noqa: E402

# FER's label names -> fer8's.
LABELS = {"angry": "angry", "disgust": "disgusted", "fear": "fearful", "happy": "happy",
          "sad": "sad", "surprise": "surprised", "neutral": "neutral"}


def main() -> None:
    logging.disable(logging.INFO)
    for_crops, for_photos = FER(offsets=(0, 0)), FER()
    for line in sys.stdin:
        request = json.loads(line)
        image = cv2.imread(request["path"])  # BGR, as FER expects
        label = None
        if image is not None:
            if request["cropped"]:
                h, w = image.shape[:2]
                faces = for_crops.detect_emotions(image, face_rectangles=[(0, 0, w, h)])
            else:
                faces = for_photos.detect_emotions(image)
            if faces:
                largest = max(faces, key=lambda f: f["box"][2] * f["box"][3])
                label = LABELS[max(largest["emotions"], key=largest["emotions"].get)]
        print(json.dumps({"label": label}), flush=True)


if __name__ == "__main__":
    main()
