"""Face detection: OpenCV's Haar cascade, with each candidate confirmed by dlib.

Haar cascades are fast and find faces at any scale, but they also fire on textures (a
second "face" on the astronaut's suit). Each Haar box is therefore confirmed by dlib's HOG
face detector on a small crop around it. That is the detector dlib's 68-point landmark
model was trained with, so a box it confirms is one the landmarks will fit.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from numpy.typing import NDArray

from fer8.results import Box

logger = logging.getLogger(__name__)

#: The cascade file inside OpenCV's own data folder (``cv2.data.haarcascades``).
CASCADE_FILE = "haarcascade_frontalface_default.xml"

# Face width (pixels) that crops are rescaled to before the HOG check: the HOG detector's
# window is 80 pixels, and faces near that size are found without upsampling.
_VERIFY_FACE_SIZE = 120

# The frontal-face cascade's own window size, in pixels: the smallest face it can find.
_WINDOW = 24

_local = threading.local()  # OpenCV and dlib detectors are not shared across threads


def detect(
    image: NDArray[np.uint8],
    *,
    scale_factor: float = 1.2,
    min_neighbors: int = 5,
    min_size: int = 48,
    max_side: int = 1280,
    verify: bool = True,
    verify_threshold: float = 0.0,
) -> list[Box]:
    """Find every face in an RGB image.

    The search runs on a grayscale copy scaled so that a face of ``min_size`` pixels
    fills the cascade's 24-pixel window: smaller faces are not searched for, and a
    portrait is searched at half resolution, a quarter of the cost.

    Args:
        image: RGB ``uint8`` array (H, W, 3), as returned by :func:`fer8.load_image`.
        scale_factor: How much the Haar search window grows per step; smaller finds
            more faces and is slower (1.1 costs about twice 1.2's time; with the HOG
            check both found every face of the test photos and of JAFFE).
        min_neighbors: How many overlapping Haar hits make a face; higher gives fewer
            false positives.
        min_size: Smallest face searched for, in pixels of the original image. The
            default is FER2013's 48x48, below which expressions are hardly legible.
        max_side: Longest side of the search copy. Very large photos are shrunk further
            to fit, which raises the smallest face found (a 4000-pixel photo: 150 pixels);
            raise it to find small faces in large group photos, at a cost in time.
        verify: Confirm each Haar box with dlib's HOG detector, dropping false positives.
        verify_threshold: The HOG score a confirmation needs (dlib's own default is 0).

    Returns:
        Every face box in original-image pixels, largest first. An empty list when
        there is no face.
    """
    import cv2

    height, width = image.shape[:2]
    scale = min(1.0, _WINDOW / min_size, max_side / max(height, width))
    if min(height, width) * scale < _WINDOW:
        return []  # no face fits; and a 1-pixel side would shrink to 0, which OpenCV refuses
    gray = _gray(image)
    search = gray
    if scale < 1.0:
        search = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    found = _cascade().detectMultiScale(
        search,
        scaleFactor=scale_factor,
        minNeighbors=min_neighbors,
        minSize=(_WINDOW, _WINDOW),
    )
    boxes = [_unscale(b, scale).clip(width, height) for b in found]
    if verify:
        boxes = [b for b in boxes if _confirmed(gray, b, verify_threshold)]
    boxes.sort(key=lambda b: b.area, reverse=True)
    logger.debug("detect: %d Haar candidates, %d faces", len(found), len(boxes))
    return boxes


def load_detectors() -> None:
    """Load this thread's Haar cascade and HOG detector now rather than on first use.

    Each thread keeps its own (neither object is documented as thread-safe), and the HOG
    detector takes about half a second to build, so threads that will detect faces
    should call this once when they start.
    """
    _cascade()
    _hog()


def _cascade():
    cascade = getattr(_local, "cascade", None)
    if cascade is None:
        import cv2

        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE_FILE)
        if cascade.empty():  # pragma: no cover - only with a broken OpenCV install
            raise RuntimeError(f"OpenCV could not load {CASCADE_FILE} from {cv2.data.haarcascades}")
        _local.cascade = cascade
    return cascade


def _hog():
    detector = getattr(_local, "hog", None)
    if detector is None:
        import dlib

        detector = _local.hog = dlib.get_frontal_face_detector()
    return detector


def verify_face(image: NDArray[np.uint8], box: Box, threshold: float = 0.0) -> bool:
    """True when dlib's HOG detector finds a face centred inside ``box``.

    Used by :func:`detect` to drop Haar's false positives, and by the predictor to
    decide whether a pre-cropped image holds a face that landmarks can align.
    """
    gray = image if image.ndim == 2 else _gray(image)
    return _confirmed(gray, box, threshold)


def _gray(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _confirmed(gray: NDArray[np.uint8], box: Box, threshold: float) -> bool:
    import cv2

    # The face and half its width around it; parts beyond the photo (a face that fills
    # a pre-cropped image) are filled by repeating the edge, as HOG needs some context.
    margin = box.w // 2
    x0, y0, x1, y1 = box.x - margin, box.y - margin, box.x + box.w + margin, box.y + box.h + margin
    height, width = gray.shape
    crop = gray[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]
    crop = cv2.copyMakeBorder(
        crop,
        max(0, -y0),
        max(0, y1 - height),
        max(0, -x0),
        max(0, x1 - width),
        cv2.BORDER_REPLICATE,
    )
    scale = _VERIFY_FACE_SIZE / box.w
    crop = cv2.resize(
        crop,
        None,
        fx=scale,
        fy=scale,
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    detections, scores, _ = _hog().run(np.ascontiguousarray(crop), 0, threshold)
    for rect, score in zip(detections, scores):
        cx = x0 + (rect.left() + rect.right()) / 2 / scale
        cy = y0 + (rect.top() + rect.bottom()) / 2 / scale
        if score >= threshold and box.x <= cx <= box.x + box.w and box.y <= cy <= box.y + box.h:
            return True
    return False


def _unscale(raw, scale: float) -> Box:
    x, y, w, h = (int(round(float(v) / scale)) for v in raw)
    return Box(x, y, w, h)
