"""Facial landmarks: dlib's 68-point shape predictor (iBUG 300-W layout).

The model file ships in the PyPI package ``face-recognition-models``. Its ``__init__``
imports ``pkg_resources``, which current setuptools no longer provides, so the file is
located through the import system without importing the package.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ModelNotFoundError
from fer8.pipeline.detection import DEFAULT_DETECTOR, landmark_box
from fer8.results import Box

logger = logging.getLogger(__name__)

LANDMARK_MODEL_FILE = "shape_predictor_68_face_landmarks.dat"

# iBUG 300-W indices of the eye contours, as seen in the image (subject's right eye first).
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)

# dlib's predictor is trained on faces of roughly 80-250 pixels; smaller ones (FER2013's
# 48x48 crops) are upscaled to this width first, which fits the points much better.
_MIN_FACE_WIDTH = 128

_lock = threading.Lock()
_predictors: dict[Path, Any] = {}  # dlib.shape_predictor, by path


def landmark_model_path() -> Path:
    """Locate dlib's 68-point model: ``$FER8_LANDMARK_MODEL`` or face-recognition-models.

    Raises:
        ModelNotFoundError: Neither is available.
    """
    override = os.environ.get("FER8_LANDMARK_MODEL")
    if override:
        path = Path(override)
        if not path.is_file():
            raise ModelNotFoundError(f"FER8_LANDMARK_MODEL={override}: no such file")
        return path
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / "models" / LANDMARK_MODEL_FILE
            if path.is_file():
                return path
    raise ModelNotFoundError(
        f"dlib's landmark model {LANDMARK_MODEL_FILE} was not found: "
        "pip install face-recognition-models, or set FER8_LANDMARK_MODEL to the file"
    )


def load_landmark_model(path: str | os.PathLike | None = None):
    """Load (once per process) and return dlib's shape predictor."""
    path = Path(path) if path is not None else landmark_model_path()
    with _lock:
        predictor = _predictors.get(path)
        if predictor is None:
            import dlib

            logger.debug("loading landmark model %s", path)
            predictor = _predictors[path] = dlib.shape_predictor(str(path))
    return predictor


def landmarks(
    image: NDArray[np.uint8],
    box: Box,
    *,
    detector: str | None = DEFAULT_DETECTOR,
    predictor: Any = None,  # a dlib.shape_predictor (untyped)
) -> NDArray[np.float32]:
    """Fit dlib's 68 landmarks to the face in ``box``.

    Args:
        image: RGB ``uint8`` array (H, W, 3).
        box: The face, e.g. from :func:`fer8.detect`.
        detector: The detector that framed ``box`` (``"yunet"``, ``"haar"``), or None
            for a box already in dlib's own framing. dlib's model was fitted on its HOG
            detector's boxes; a YuNet box is first mapped to one of those
            (:func:`fer8.pipeline.detection.landmark_box`), which keeps the fit as good as on
            Haar's boxes.
        predictor: A loaded shape predictor; the default model when omitted.

    Returns:
        A (68, 2) float32 array of (x, y) points in original-image pixels.
    """
    import cv2
    import dlib

    predictor = predictor or load_landmark_model()
    box = landmark_box(box, detector)
    scale = max(1.0, _MIN_FACE_WIDTH / max(box.w, 1))
    if scale > 1.0:
        # Upscale the face and a margin around it, not the whole image.
        margin = box.w // 2
        x0, y0 = max(0, box.x - margin), max(0, box.y - margin)
        x1 = min(image.shape[1], box.x + box.w + margin)
        y1 = min(image.shape[0], box.y + box.h + margin)
        region = cv2.resize(
            image[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC
        )
        offset = np.array([x0, y0], np.float32)
    else:
        region, offset = image, np.zeros(2, np.float32)
    left = (box.x - offset[0]) * scale
    top = (box.y - offset[1]) * scale
    rect = dlib.rectangle(
        int(round(left)),
        int(round(top)),
        int(round(left + box.w * scale)),
        int(round(top + box.h * scale)),
    )
    shape = predictor(np.ascontiguousarray(region), rect)
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
    return points / scale + offset


def eye_centers(points: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Centres of the eye contours, the eye on the image's left first."""
    return points[LEFT_EYE].mean(axis=0), points[RIGHT_EYE].mean(axis=0)
