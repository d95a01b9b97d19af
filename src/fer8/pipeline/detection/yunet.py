"""Face detection with YuNet, fer8's default detector.

YuNet is a small CNN (Wu, Peng & Yu, 2023; 0.2 MB) that finds frontal, turned, tilted,
dark and partly covered faces that Haar cascades miss: on ExpW's web photos it finds
the labelled face in 97.5% of them, against 43% for the Haar cascade, in
about half the time. Its model file ships inside fer8 (Apache-2.0, licence beside it)
and its SHA-256 is checked before it is read; it runs on ONNX Runtime
(:mod:`fer8.pipeline.detection.yunet_network`: OpenCV's ``FaceDetectorYN``'s faces, for
a third of its CPU time).

YuNet frames a face from the hairline to the chin, taller and higher than the boxes
dlib's 68-point landmark model was fitted on; :func:`landmark_box` maps one to the other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ChecksumMismatchError, ModelNotFoundError
from fer8.pipeline.detection import yunet_network
from fer8.results import Box

logger = logging.getLogger(__name__)

#: The model file inside ``fer8/models`` and its published SHA-256 (the 2023mar release).
MODEL_FILE = "face_detection_yunet_2023mar.onnx"
MODEL_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"

# dlib's 68-point model was fitted on the boxes of dlib's HOG detector: squares from the
# eyebrows to the chin. The HOG box of a face YuNet framed as (x, y, w, h) is a square of
# side about 1.09 w whose centre lies about 0.05 h below the YuNet box's (medians over
# JAFFE and ExpW faces, scripts/landmark_fit_check.py).
_LANDMARK_SCALE = 1.09
_LANDMARK_SHIFT_X = 0.0
_LANDMARK_SHIFT_Y = 0.05

# Photos are searched at the scale that makes a face of ``min_size`` pixels this wide:
# YuNet finds faces from about 10 pixels but reliably from about 20 (on ExpW, searching
# its 20-pixel faces at 12 pixels lost 4 points of recall), so a larger smallest face
# lets a photo be searched smaller, at a fraction of the cost.
_SEARCH_FACE = 20
# The smallest face YuNet finds at all, in pixels of its input.
_SMALLEST = 10
# The coarse pass (see detect's ``coarse``): photos are first searched at this fraction of
# their search scale, where a face of twice ``min_size`` is still 20 pixels wide; faces
# that pass finds smaller than that, or scores at least _CANDIDATE_SCORE but below the
# threshold, are searched again at the full search scale in a window around them.
_COARSE_SCALE = 0.5
_CANDIDATE_SCORE = 0.3
_CANDIDATE_SIZE = 0.75  # candidates down to this fraction of min_size (coarse boxes are rough)
# Only photos whose coarse copy keeps this many pixels on its shorter side get a coarse
# pass: a smaller photo costs little at full scale.
_COARSE_MIN_SIDE = 160
# refind(): a face is found again where a box overlaps its old one at least this much.
_REFOUND_IOU = 0.3

_verified: set[Path] = set()
_verify_lock = threading.Lock()


@dataclass(frozen=True)
class Detection:
    """One YuNet detection in original-image pixels.

    Attributes:
        box: The face box.
        score: YuNet's confidence, 0-1.
        keypoints: (5, 2) points: the eye on the image's left, the other eye, the nose
            tip, the mouth corner on the image's left, the other mouth corner.
    """

    box: Box
    score: float
    keypoints: NDArray[np.float32]


def detect(
    image: NDArray[np.uint8],
    *,
    score_threshold: float = 0.6,
    nms_threshold: float = 0.3,
    min_size: int = 20,
    max_side: int = 1280,
    coarse: bool = True,
) -> list[Box]:
    """Find every face in an RGB image with YuNet.

    Args:
        image: RGB ``uint8`` array (H, W, 3), as returned by :func:`fer8.load_image`.
        score_threshold: Smallest confidence kept. At 0.6, 97.5% of ExpW's labelled
            faces are found and one of 20 face-free scikit-image pictures gets a false
            face (scored 0.76); raise it for fewer false faces, lower it to find more
            faint ones.
        nms_threshold: Boxes overlapping a better one by more than this IoU are dropped.
        min_size: Faces whose box is narrower than this, in pixels of the original
            image, are left out. YuNet's boxes are narrow (about 0.7 of a Haar box's
            side), so 20 keeps faces about as small as FER2013's 48x48 crops; ExpW's web
            photos have many (at 48, 24% of its labelled faces were lost). The photo is
            searched at the scale that makes such a face 20 pixels wide, since YuNet's
            cost grows with the pixel count: ``min_size=40`` searches at half size, a
            quarter of the time.
        max_side: Longest side of the search copy. Larger photos are shrunk further,
            which raises the smallest face found (in a 4000-pixel photo: about 60
            pixels); raise it to find small faces in large group photos.
        coarse: Search a photo whose search copy is over 320 pixels on its shorter
            side first at half that scale, where faces of twice ``min_size`` are found
            at a quarter of the cost, then each face found again at full scale in a
            window around it (twice its size, or three times for a face that pass is
            unsure of: smaller than twice ``min_size``, or scored between 0.3 and
            ``score_threshold``), on the full search's grid, so that the boxes are the
            full search's. The same faces are found (ExpW's photos at twice their size:
            see docs/benchmarks.md), faster where they are small against the photo.
            False searches the whole photo at full scale.

    Returns:
        Every face box in original-image pixels, largest first; empty when there is none.
    """
    return [
        d.box
        for d in detect_faces(
            image,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            min_size=min_size,
            max_side=max_side,
            coarse=coarse,
        )
    ]


def detect_faces(
    image: NDArray[np.uint8],
    *,
    score_threshold: float = 0.6,
    nms_threshold: float = 0.3,
    min_size: int = 20,
    max_side: int = 1280,
    coarse: bool = True,
) -> list[Detection]:
    """:func:`detect` with YuNet's scores and five keypoints (same arguments)."""
    height, width = image.shape[:2]
    if min(height, width) < min_size:  # no face of min_size fits
        return []
    scale = _search_scale(image, min_size, max_side)
    if min(height, width) * scale < _SMALLEST:
        return []  # a panorama's short side shrunk below any face (or to 0, which OpenCV refuses)
    if coarse and _coarse_first(image, scale):
        detections = _coarse_then_fine(image, scale, score_threshold, nms_threshold, min_size)
    else:
        detections = _search(image, scale, score_threshold, nms_threshold, min_size)
    detections.sort(key=lambda d: d.box.area, reverse=True)
    logger.debug("yunet: %d faces", len(detections))
    return detections


def refind(
    image: NDArray[np.uint8],
    boxes: Sequence[Box],
    *,
    score_threshold: float = 0.6,
    nms_threshold: float = 0.3,
    min_size: int = 20,
    max_side: int = 1280,
    coarse: bool = True,
) -> list[Detection] | None:
    """The faces of ``boxes`` (a video's previous frame) found again in ``image``, each
    searched in a window of twice its size around its old box, at the scale at which
    :func:`detect_faces` gives its final boxes, so its box is the one a search of the
    whole frame gives. ``coarse`` is accepted with the other settings of
    :func:`detect_faces` and changes nothing here.

    Returns:
        One detection per box, in their order, or None when a face was not found near
        its old box (it left, turned away, or two merged): then the whole frame is to be
        searched. A face that entered the picture is not looked for.
    """
    height, width = image.shape[:2]
    scale = _search_scale(image, min_size, max_side)
    found: list[Detection] = []
    for box in boxes:
        side = max(box.w, box.h)
        x0, y0 = _on_grid(box.x - side // 2, scale), _on_grid(box.y - side // 2, scale)
        x1, y1 = min(width, box.x + box.w + side // 2), min(height, box.y + box.h + side // 2)
        near = [
            _shifted(d, x0, y0)
            for d in _search(image[y0:y1, x0:x1], scale, score_threshold, nms_threshold, min_size)
        ]
        best = max(near, key=lambda d: d.box.iou(box), default=None)
        if best is None or best.box.iou(box) < _REFOUND_IOU:
            return None
        if any(best.box.iou(d.box) > nms_threshold for d in found):
            return None  # two faces became one
        found.append(best)
    return found


def _on_grid(start: int, scale: float) -> int:
    """A window's first column (or row) moved back onto YuNet's coarsest grid (32 pixels
    of the search copy), so that the window is searched on the same grid as the whole
    photo, which gives the same boxes."""
    step = 32 / scale
    return max(0, int(int(max(0, start) / step) * step))


def _search_scale(image: NDArray[np.uint8], min_size: int, max_side: int) -> float:
    """The scale a photo is searched at: a face of ``min_size`` 20 pixels wide."""
    height, width = image.shape[:2]
    return min(1.0, _SEARCH_FACE / max(min_size, 1), max_side / max(height, width))


def _coarse_first(image: NDArray[np.uint8], scale: float) -> bool:
    """Whether a photo searched at ``scale`` gets a coarse pass first."""
    return min(image.shape[:2]) * scale * _COARSE_SCALE >= _COARSE_MIN_SIDE


def _shifted(detection: Detection, x: int, y: int) -> Detection:
    """A detection in a window at (x, y), in the whole image's pixels."""
    box = detection.box
    return Detection(
        Box(box.x + x, box.y + y, box.w, box.h),
        detection.score,
        detection.keypoints + np.array([x, y], np.float32),
    )


def _coarse_then_fine(
    image: NDArray[np.uint8],
    scale: float,
    score_threshold: float,
    nms_threshold: float,
    min_size: int,
) -> list[Detection]:
    """The photo searched at :data:`_COARSE_SCALE` of ``scale``, then each face that pass
    found searched again at ``scale`` in a window around it: a window of twice its size
    for a face the pass is sure of, which gives the box a search of the whole photo would
    give (YuNet's boxes depend on the scale: at half scale they are a few pixels off,
    enough to move the landmarks fitted on them), and of three times its size for one it
    is unsure of (small, or scored low)."""
    candidates = _search(
        image,
        scale * _COARSE_SCALE,
        min(score_threshold, _CANDIDATE_SCORE),
        nms_threshold,
        int(min_size * _CANDIDATE_SIZE),
    )
    height, width = image.shape[:2]
    found = []
    for candidate in candidates:
        box = candidate.box
        sure = candidate.score >= score_threshold and box.w * scale * _COARSE_SCALE >= _SEARCH_FACE
        side = max(box.w, box.h)
        margin = side // 2 if sure else side
        x0, y0 = _on_grid(box.x - margin, scale), _on_grid(box.y - margin, scale)
        x1, y1 = min(width, box.x + box.w + margin), min(height, box.y + box.h + margin)
        near = []
        for d in _search(image[y0:y1, x0:x1], scale, score_threshold, nms_threshold, min_size):
            d = _shifted(d, x0, y0)
            # Only the face the window was opened for: a face cut by the window's edge
            # is found whole by its own window.
            cx, cy = d.box.x + d.box.w / 2, d.box.y + d.box.h / 2
            if box.x - box.w / 2 <= cx <= box.x + 1.5 * box.w and (
                box.y - box.h / 2 <= cy <= box.y + 1.5 * box.h
            ):
                near.append(d)
        if not sure:
            found.extend(near)
            continue
        best = max(near, key=lambda d: d.box.iou(box), default=None)
        found.append(best if best is not None and best.box.iou(box) >= _REFOUND_IOU else candidate)
    # A face found both by the coarse pass and in a window (or in two windows) once:
    # the best-scored box stays.
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: d.score, reverse=True):
        if all(d.box.iou(k.box) <= nms_threshold for k in kept):
            kept.append(d)
    return kept


def _search(
    image: NDArray[np.uint8],
    scale: float,
    score_threshold: float,
    nms_threshold: float,
    min_size: int,
) -> list[Detection]:
    """One YuNet pass over ``image`` shrunk by ``scale``; boxes in ``image``'s pixels."""
    import cv2

    height, width = image.shape[:2]
    if min(height, width) * scale < _SMALLEST:
        return []
    search = image
    if scale < 1.0:
        search = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    found = yunet_network.detect_rows(search, model_path(), score_threshold, nms_threshold)
    detections = []
    for row in found:
        x0, y0, x1, y1 = (
            int(round(float(v) / scale)) for v in (row[0], row[1], row[0] + row[2], row[1] + row[3])
        )
        box = Box(x0, y0, x1 - x0, y1 - y0).clip(width, height)
        if box.w < min_size or box.h <= 0:
            continue
        points = np.asarray(row[4:14], np.float32).reshape(5, 2) / scale
        detections.append(Detection(box, float(row[14]), points))
    return detections


def landmark_box(box: Box) -> Box:
    """The box dlib's 68-point model expects for the face YuNet framed as ``box``."""
    side = _LANDMARK_SCALE * box.w
    cx = box.x + box.w / 2.0 + _LANDMARK_SHIFT_X * box.w
    cy = box.y + box.h / 2.0 + _LANDMARK_SHIFT_Y * box.h
    return Box(
        int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side)), int(round(side))
    )


def model_path() -> Path:
    """The bundled YuNet model, checked against its SHA-256 (once per process).

    Raises:
        ModelNotFoundError: The file is missing from the package.
        ChecksumMismatchError: The file is not the published model.
    """
    path = Path(str(resources.files("fer8") / "models" / MODEL_FILE))
    with _verify_lock:
        if path in _verified:
            return path
        if not path.is_file():
            raise ModelNotFoundError(
                f"YuNet face detector {path} is missing from the package; reinstall fer8"
            )
        from fer8.models.registry import sha256_file

        actual = sha256_file(path)
        if actual != MODEL_SHA256:
            raise ChecksumMismatchError(
                f"YuNet face detector at {path} has SHA-256 {actual}, "
                f"expected {MODEL_SHA256}; reinstall fer8"
            )
        _verified.add(path)
    return path


def load_detector() -> None:
    """Load YuNet's network now rather than on first use (one session serves every
    thread)."""
    yunet_network.session(model_path())
