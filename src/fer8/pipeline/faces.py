"""From an image to framed face crops: the one place that chains detect -> landmarks -> align.

Prediction (:class:`fer8.Predictor`), training and evaluation all call these two
functions, so a training crop is framed exactly like the crop ``fer8 predict`` makes.

* :func:`faces_in_photo`: whole photos; every face is detected, landmarked and aligned.
* :func:`face_from_crop`: a picture that already is one face (FER2013's 48x48 crops,
  RAF-DB's aligned faces). It is aligned like a detected face when dlib's HOG detector
  confirms a face in it, and otherwise used whole.
* :func:`labelled_face`: one face of a photo whose box a dataset gives (ExpW), framed
  as :func:`faces_in_photo` would frame it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.models.modelfile import ModelSpec
from fer8.pipeline.alignment import (
    EYE_X,
    EYE_Y,
    FALLBACK_MARGIN,
    AlignedFace,
    align,
    crop_square,
    landmarks_fit,
)
from fer8.pipeline.detection import DEFAULT_DETECTOR, detect, verify_face
from fer8.pipeline.landmarking import LEFT_EYE, RIGHT_EYE
from fer8.pipeline.landmarking import landmarks as fit_landmarks
from fer8.pipeline.masking import BROWS, CHIN, FOREHEAD, JAW
from fer8.results import Box

#: A labelled box and a detected one are the same face from this overlap on (boxes of
#: different detectors frame a face differently, so the bar is low).
MATCH_IOU = 0.3
#: The side of the aligned crops; the classifier resizes them to its input
#: (:func:`fer8.pipeline.classification.classify`, area averaging when shrinking).
ALIGNED_SIZE = 224


def faces_in_photo(
    image: NDArray[np.uint8],
    *,
    detector: str = DEFAULT_DETECTOR,
    detector_options: Mapping[str, Any] | None = None,
    max_faces: int | None = None,
    landmark_model: Any = None,
    size: int = ALIGNED_SIZE,
    boxes: list[Box] | None = None,
) -> list[tuple[Box, AlignedFace]]:
    """Every face of a photo, largest first, each aligned from its landmarks.

    Args:
        image: RGB ``uint8`` array.
        detector: ``"yunet"`` or ``"haar"`` (see :func:`fer8.detect`).
        detector_options: That detector's settings.
        max_faces: Keep only the largest N faces.
        landmark_model: A loaded dlib shape predictor (loaded on first use when None).
        size: Side of the aligned crops.
        boxes: The faces' boxes, largest first, when they were found already (a video's
            :class:`~fer8.pipeline.detection.Follower`); detected when None.
    """
    if boxes is None:
        boxes = detect(image, detector, **(detector_options or {}))
    boxes = boxes[:max_faces]
    return [(box, _align(image, box, detector, landmark_model, size)) for box in boxes]


def labelled_face(
    image: NDArray[np.uint8],
    box: Box,
    *,
    detector: str = DEFAULT_DETECTOR,
    detector_options: Mapping[str, Any] | None = None,
    landmark_model: Any = None,
    size: int = ALIGNED_SIZE,
) -> tuple[Box, AlignedFace]:
    """The face a dataset labels with ``box``, framed as :func:`faces_in_photo` frames it.

    A dataset's boxes come from its own detector and frame faces their own way, so the
    box the chosen detector gives the same face (IoU >= :data:`MATCH_IOU`) is used when
    it finds one: the crop is then the one ``fer8 predict`` would classify. A face the
    detector misses is still framed, from the labelled box itself.
    """
    found = match(box, detect(image, detector, **(detector_options or {})))
    if found is None:
        return box, _align(image, box, None, landmark_model, size)
    return found, _align(image, found, detector, landmark_model, size)


def match(box: Box, candidates: list[Box], min_iou: float = MATCH_IOU) -> Box | None:
    """The candidate overlapping ``box`` most, if by at least ``min_iou``."""
    best = max(candidates, key=box.iou, default=None)
    return best if best is not None and box.iou(best) >= min_iou else None


def _align(
    image: NDArray[np.uint8], box: Box, detector: str | None, landmark_model: Any, size: int
) -> AlignedFace:
    points = fit_landmarks(image, box, detector=detector, predictor=landmark_model)
    return align(image, box, points, size)


def face_from_crop(
    image: NDArray[np.uint8], *, landmark_model: Any = None, size: int = ALIGNED_SIZE
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
        points = fit_landmarks(image, box, detector=None, predictor=landmark_model)
        if landmarks_fit(points, box):
            return box, align(image, box, points, size)
    return box, crop_square(image, box, size, margin=0.0)


def framing(spec: ModelSpec) -> dict[str, str]:
    """How fer8 frames a face for the model ``spec`` describes, as ONNX metadata, so
    that another runtime can feed an exported network (``fer8 export``) the crops it
    was trained on: ``fer8.framing`` in words, ``fer8.framing_json`` in numbers.

    The crop is aligned at :data:`ALIGNED_SIZE`, masked there when the model masks,
    then shrunk to the model's input with area averaging: aligning straight at the
    input size blurs and places the face differently, and costs accuracy.
    """
    size, side = ALIGNED_SIZE, spec.input_size
    left = (round(EYE_X * size, 2), round(EYE_Y * size, 2))
    right = (round((1 - EYE_X) * size, 2), round(EYE_Y * size, 2))
    mask = spec.preprocessing.mask
    words = [
        f"Detect the face ({DEFAULT_DETECTOR}) and fit dlib's 68 landmarks (iBUG 300-W). "
        "Warp the photo with the similarity transform that puts the eye centres (the "
        f"means of points {_span(LEFT_EYE)} and {_span(RIGHT_EYE)}) at {left} and "
        f"{right} of a {size}x{size} crop: bilinear, black beyond the photo (a face "
        "over twice the crop's size is first shrunk by a whole factor with area "
        "averaging)."
    ]
    if mask == "contour":
        words.append(
            "Black out everything outside the convex hull of the jaw (points "
            f"{_span(JAW)}) and the eyebrows ({_span(BROWS)}) raised by {FOREHEAD} of "
            f"the distance from the brows' middle to the chin (point {CHIN})."
        )
    interpolation = "area" if side < size else "bilinear" if side > size else None
    if interpolation is not None:
        words.append(
            f"Resize the {size}x{size} crop to {side}x{side} "
            + (
                "with area averaging (OpenCV INTER_AREA). Aligning straight at "
                f"{side} frames faces otherwise and costs accuracy."
                if interpolation == "area"
                else "bilinearly (OpenCV INTER_LINEAR)."
            )
        )
    words.append(
        "Then preprocess as fer8.preprocessing says. (A face whose landmarks do not fit "
        f"is cropped square around its box, {1 + FALLBACK_MARGIN:g} times its longer "
        "side, unmasked.)"
    )
    numbers: dict[str, Any] = {
        "detector": DEFAULT_DETECTOR,
        "landmarks": "dlib 68 (iBUG 300-W)",
        "aligned_size": size,
        "left_eye": {"points": _indices(LEFT_EYE), "at": left},
        "right_eye": {"points": _indices(RIGHT_EYE), "at": right},
        "mask": mask,
        "resize": {"to": side, "interpolation": interpolation},
    }
    if mask == "contour":
        numbers["contour"] = {
            "jaw": _indices(JAW),
            "brows": _indices(BROWS),
            "chin": CHIN,
            "forehead": FOREHEAD,
        }
    return {"fer8.framing": " ".join(words), "fer8.framing_json": json.dumps(numbers)}


def _indices(points: slice) -> list[int]:
    return list(range(points.start, points.stop))


def _span(points: slice) -> str:
    return f"{points.start}-{points.stop - 1}"
