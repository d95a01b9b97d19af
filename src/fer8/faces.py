"""From an image to framed face crops: the one place that chains detect -> landmarks -> align.

Prediction (:class:`fer8.Predictor`), training and evaluation all call these two
functions, so a training crop is framed exactly like the crop ``fer8 predict`` makes.

* :func:`faces_in_photo`: whole photos; every face is detected, landmarked and aligned.
* :func:`face_from_crop`: a picture that already is one face (FER2013's 48x48 crops,
  RAF-DB's aligned faces). It is aligned like a detected face when dlib's HOG detector
  confirms a face in it, and otherwise used whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.alignment import AlignedFace, align, crop_square, landmarks_fit
from fer8.detection import detect, verify_face
from fer8.landmarking import landmarks as fit_landmarks
from fer8.results import Box


def faces_in_photo(
    image: NDArray[np.uint8],
    *,
    detector: Mapping[str, Any] | None = None,
    max_faces: int | None = None,
    landmark_model: Any = None,
    size: int = 224,
) -> list[tuple[Box, AlignedFace]]:
    """Every face of a photo, largest first, each aligned from its landmarks.

    Args:
        image: RGB ``uint8`` array.
        detector: Keyword arguments for :func:`fer8.detect`.
        max_faces: Keep only the largest N faces.
        landmark_model: A loaded dlib shape predictor (loaded on first use when None).
        size: Side of the aligned crops.
    """
    boxes = detect(image, **(detector or {}))[:max_faces]
    return [(box, align(image, box, fit_landmarks(image, box, predictor=landmark_model), size))
            for box in boxes]


def face_from_crop(
    image: NDArray[np.uint8], *, landmark_model: Any = None, size: int = 224
) -> tuple[Box, AlignedFace]:
    """Frame a picture that is already one face like :func:`faces_in_photo` would.

    dlib's shape predictor returns 68 points for any input, even a blank image, so the
    points are trusted only where the HOG detector confirms a face; otherwise the
    picture is used whole (``aligned`` False), which for FER2013-style crops is close to
    the aligned framing anyway.
    """
    height, width = image.shape[:2]
    box = Box(0, 0, width, height)
    # A picture more than twice as long as it is wide is not one face, and checking it
    # would search a strip scaled to a 120-pixel width (10 x 30000 pixels: 13 s, 800 MB).
    if max(width, height) <= 2 * min(width, height) and verify_face(image, box):
        points = fit_landmarks(image, box, predictor=landmark_model)
        if landmarks_fit(points, box):
            return box, align(image, box, points, size)
    return box, crop_square(image, box, size, margin=0.0)
