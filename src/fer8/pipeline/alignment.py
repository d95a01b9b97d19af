"""Face alignment: rotate and scale each face so the eyes sit level at fixed positions.

Every crop the classifier sees, at training and at prediction time, comes from
:func:`align`, so a face is framed the same way whichever path it took. When landmarks
cannot be fitted the face is still classified, from a square crop of its box, and the
result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fer8.pipeline.landmarking import eye_centers
from fer8.pipeline.landmarking import landmarks as fit_landmarks
from fer8.results import Box

#: Where the eye centres land in the aligned crop, as fractions of its side: the left eye
#: at (EYE_X, EYE_Y), the right one at (1 - EYE_X, EYE_Y). This frames the face from the
#: eyebrows to the chin, about as tightly as FER2013's 48x48 crops.
EYE_X = 0.30
EYE_Y = 0.38

#: Fallback crops are squares this much wider than the detector's box (Haar boxes put
#: the eyes about 0.4 box widths apart, close to the aligned framing above).
FALLBACK_MARGIN = 0.1

# Landmarks whose eyes are closer than this fraction of the box width, further apart
# than the upper one, or tilted more than _MAX_ROLL degrees are a failed fit, not a face.
_EYE_DISTANCE_RANGE = (0.2, 0.8)
_MAX_ROLL = 45.0


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """A face crop ready for the classifier.

    Attributes:
        image: RGB ``uint8`` array (size, size, 3).
        aligned: True when it was aligned from landmarks, False for a square box crop.
        matrix: The 2x3 affine matrix mapping original-image pixels to crop pixels.
        landmarks: The (68, 2) points used, or ``None`` for a box crop.
    """

    image: NDArray[np.uint8]
    aligned: bool
    matrix: NDArray[np.float64]
    landmarks: NDArray[np.float32] | None = None


def align(
    image: NDArray[np.uint8],
    box: Box,
    landmarks: NDArray[np.float32] | None = None,
    size: int = 224,
) -> AlignedFace:
    """Crop the face in ``box`` with the eyes level at fixed positions.

    Args:
        image: RGB ``uint8`` array (H, W, 3).
        box: The face box, in original-image pixels.
        landmarks: dlib's 68 points for this face; fitted here when omitted (taking
            ``box`` as a box of the default detector, see :func:`fer8.landmarks`).
        size: Side of the square output, in pixels.

    Returns:
        An :class:`AlignedFace`; its ``aligned`` is False when the landmarks were
        implausible for the box and a square crop of the box was taken instead.
        Parts of the crop outside the photo are black.
    """
    if landmarks is None:
        landmarks = fit_landmarks(image, box)
    if landmarks_fit(landmarks, box):
        matrix = _eye_matrix(landmarks, size)
        return AlignedFace(_warp(image, matrix, size), True, matrix, landmarks)
    return crop_square(image, box, size)


def crop_square(
    image: NDArray[np.uint8], box: Box, size: int = 224, margin: float = FALLBACK_MARGIN
) -> AlignedFace:
    """A square crop centred on ``box``, ``margin`` wider than its longer side."""
    side = max(box.w, box.h) * (1.0 + margin)
    scale = size / side
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    matrix = np.array(
        [[scale, 0.0, size / 2.0 - scale * cx], [0.0, scale, size / 2.0 - scale * cy]]
    )
    return AlignedFace(_warp(image, matrix, size), False, matrix, None)


def landmarks_fit(points: NDArray[np.float32], box: Box) -> bool:
    """True when the fitted points look like a face in this box (eyes inside it, level enough)."""
    left, right = eye_centers(points)
    distance = float(np.linalg.norm(right - left))
    roll = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    inside = all(
        box.x <= p[0] <= box.x + box.w and box.y <= p[1] <= box.y + box.h for p in (left, right)
    )
    low, high = _EYE_DISTANCE_RANGE
    return inside and low * box.w <= distance <= high * box.w and abs(roll) <= _MAX_ROLL


def _eye_matrix(points: NDArray[np.float32], size: int) -> NDArray[np.float64]:
    """Similarity transform taking the eye centres to their fixed crop positions."""
    left, right = (np.asarray(p, np.float64) for p in eye_centers(points))
    dx, dy = right - left
    angle = math.atan2(dy, dx)
    scale = (1.0 - 2.0 * EYE_X) * size / math.hypot(dx, dy)
    cos, sin = scale * math.cos(-angle), scale * math.sin(-angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    middle = (left + right) / 2.0
    target = np.array([size / 2.0, EYE_Y * size])
    return np.hstack([rotation, (target - rotation @ middle)[:, None]])


def _warp(image: NDArray[np.uint8], matrix: NDArray[np.float64], size: int) -> NDArray[np.uint8]:
    import cv2

    zoom = math.hypot(matrix[0, 0], matrix[1, 0])
    # Shrinking a large face by bilinear sampling aliases; pre-shrink by an integer step
    # with area averaging.
    step = math.floor(1.0 / zoom) if zoom < 0.5 else 1
    # Only the part of the image that the crop shows is warped (with a margin for the
    # interpolation): OpenCV's warpAffine refuses images with a side of 32,767 pixels or
    # more, a panorama's face included, and a small part is less work. The part starts
    # on a multiple of the step, so area averaging sees the pixel blocks it would see
    # on the whole image.
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    height, width = image.shape[:2]
    margin = 2 * step
    x0 = max(0, (math.floor(points[:, 0].min()) - margin) // step * step)
    y0 = max(0, (math.floor(points[:, 1].min()) - margin) // step * step)
    x1 = min(width, math.ceil(points[:, 0].max()) + margin)
    y1 = min(height, math.ceil(points[:, 1].max()) + margin)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), np.uint8)  # the crop lies outside the image
    image = image[y0:y1, x0:x1]
    matrix = matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    if step > 1:
        part_height, part_width = image.shape[:2]
        if round(part_width / step) >= 1 and round(part_height / step) >= 1:
            image = cv2.resize(
                image, None, fx=1.0 / step, fy=1.0 / step, interpolation=cv2.INTER_AREA
            )
            matrix[:, :2] *= step
        else:  # a strip (a 65535 x 30 picture) would shrink to nothing on one side
            shrunk = (max(1, round(part_width / step)), max(1, round(part_height / step)))
            image = cv2.resize(image, shrunk, interpolation=cv2.INTER_AREA)
            matrix[:, 0] *= part_width / shrunk[0]
            matrix[:, 1] *= part_height / shrunk[1]
    return cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
