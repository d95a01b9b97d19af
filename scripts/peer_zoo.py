"""OpenCV Zoo's expression model, framed as OpenCV Zoo frames it; used by bench_accuracy.py.

The model (``facial_expression_recognition_mobilefacenet_2022july_int8.onnx`` of
opencv/opencv_zoo: MobileFaceNet, int8, trained on RAF-DB, Apache-2.0) is what a user of
OpenCV would pick instead of fer8. It is not part of fer8 and must not be committed;
get it from https://github.com/opencv/opencv_zoo (``models/facial_expression_recognition/``),
or in this project's environment from ``../shared/weights/``.

Its framing, as in OpenCV Zoo's demo: YuNet finds the face and its five keypoints (eyes,
nose tip, mouth corners); a similarity transform (least squares, Umeyama) puts them on
the ArcFace 112x112 template; the warped face is RGB, scaled ``(x / 255 - 0.5) / 0.5``,
NCHW, batch 1. The output is 7 logits in the order below.

fer8's own YuNet, with fer8's default settings, finds the faces, so both tools judge the
same faces of a photo. Where YuNet finds no keypoints (a pre-cropped face too small or
too masked for it, a labelled box no detector finds), the crop itself is resized to
112x112: OpenCV Zoo has no framing of its own for such faces, and counting them as
missed would measure YuNet, not the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: The model's outputs, in order, as fer8's labels.
LABELS = ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
#: Where ArcFace (and OpenCV Zoo's face models) put the five keypoints in a 112x112 crop.
TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)
SIZE = 112
# Pre-cropped faces are enlarged to this side before YuNet looks for their keypoints
# (FER+'s 48-pixel faces are at the edge of what it finds).
_SEARCH_SIDE = 160


@dataclass(frozen=True)
class Answer:
    """The model's answer for one face: its label and the softmax of its logits, in
    :data:`LABELS` order; ``aligned`` says whether keypoints framed it."""

    label: str
    probabilities: NDArray[np.float32]
    aligned: bool


def similarity(points: NDArray, template: NDArray = TEMPLATE) -> NDArray[np.float64]:
    """The 2x3 similarity transform (rotation, uniform scale, shift) that maps ``points``
    onto ``template`` with the least squared error (Umeyama, 1991), without reflection."""
    src, dst = np.asarray(points, np.float64), np.asarray(template, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(axis=0).sum()
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


class ZooModel:
    """OpenCV Zoo's expression model on ONNX Runtime.

    Args:
        path: The ONNX file.
    """

    def __init__(self, path: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def classify(self, face: NDArray[np.uint8], aligned: bool) -> Answer:
        """Classify a 112x112 RGB face crop."""
        x = (face.astype(np.float32) / 255.0 - 0.5) / 0.5
        (logits,) = self._session.run(None, {self._input: x.transpose(2, 0, 1)[None]})
        logits = np.asarray(logits, np.float64).reshape(-1)
        exp = np.exp(logits - logits.max())
        probabilities = (exp / exp.sum()).astype(np.float32)
        return Answer(LABELS[int(probabilities.argmax())], probabilities, aligned)

    def on_keypoints(self, image: NDArray[np.uint8], keypoints: NDArray) -> Answer:
        """The face whose five YuNet keypoints are ``keypoints``, warped as OpenCV Zoo warps it."""
        import cv2

        face = cv2.warpAffine(image, similarity(keypoints), (SIZE, SIZE), flags=cv2.INTER_LINEAR)
        return self.classify(face, True)

    def on_crop(self, crop: NDArray[np.uint8]) -> Answer:
        """A picture that is one face (a pre-cropped face, or a labelled box): framed
        from YuNet's keypoints where it finds the face, else resized whole."""
        import cv2

        from fer8.pipeline.detection.yunet import detect_faces

        height, width = crop.shape[:2]
        scale = _SEARCH_SIDE / max(height, width)
        search = (
            crop
            if scale <= 1
            else cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        )
        found = detect_faces(np.ascontiguousarray(search))
        if found:
            return self.on_keypoints(search, found[0].keypoints)
        resized = cv2.resize(
            crop,
            (SIZE, SIZE),
            interpolation=cv2.INTER_AREA if min(height, width) > SIZE else cv2.INTER_LINEAR,
        )
        return self.classify(resized, False)
