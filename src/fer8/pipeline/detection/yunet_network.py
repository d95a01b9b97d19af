"""YuNet's network on ONNX Runtime, its outputs decoded as ``cv2.FaceDetectorYN`` does.

OpenCV's ``FaceDetectorYN`` runs YuNet on OpenCV's DNN module, which on two cores took
2-5 times the CPU time ONNX Runtime takes for the same graph (the astronaut 11.2 against
3.3 CPU ms, Grace Hopper 31 against 6.4, a 1280x720 frame 41 against 12;
docs/benchmarks.md, "Face detection"), and re-plans its memory at every new input size.
fer8 already runs its expression network on ONNX Runtime, so YuNet runs there too, and
this module does the rest of what ``FaceDetectorYN.detect`` does (OpenCV's
``modules/objdetect/src/face_detect.cpp``): pad the picture to a multiple of 32, decode
each stride's scores, boxes and keypoints, and drop overlapping boxes with OpenCV's own
``NMSBoxes``. The graph and the decoding are the same, so the faces are too: the same
boxes on 994 ExpW, SFEW and JAFFE photos at their size and at three times it, scores
within 2e-6 (``scripts/bench_detect.py --compare-opencv``).

YuNet's file was exported for 640x640 pictures; with the shapes it records dropped
(:func:`fer8.models.onnx_wire.with_shapes_dropped`), ONNX Runtime runs it at any size.
One session serves every thread, each run on its caller's thread alone: detection runs
in fer8's preparing threads, beside the expression network's own threads.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

#: The strides of YuNet's three heads, finest first, as its outputs are named.
STRIDES = (8, 16, 32)
#: Pictures are padded (right and bottom, with black) to a multiple of this.
_DIVISOR = 32
#: At most this many faces enter the overlap check (``FaceDetectorYN``'s ``top_k``).
_TOP_K = 5000

_sessions: dict[Path, object] = {}
_lock = threading.Lock()


def session(model: Path):
    """The ONNX Runtime session of the YuNet file ``model`` (checked by the caller),
    made on the first call (about 10 ms), then shared."""
    with _lock:
        if model not in _sessions:
            _sessions[model] = _load(model)
        return _sessions[model]


def detect_rows(
    picture: NDArray[np.uint8], model: Path, score_threshold: float, nms_threshold: float
) -> NDArray[np.float32]:
    """YuNet's faces in an RGB picture, searched at its size.

    Returns:
        (N, 15) float32 rows, ``FaceDetectorYN.detect``'s: the box's corner and size
        (x, y, w, h), five keypoints (x, y) as :class:`~fer8.pipeline.detection.yunet.Detection`
        lists them, and the score; in the order OpenCV gives them.
    """
    import cv2

    height, width = picture.shape[:2]
    padded_h, padded_w = _padded(height), _padded(width)
    blob = np.zeros((1, 3, padded_h, padded_w), np.float32)
    # YuNet reads BGR planes. OpenCV's split into contiguous planes, then one converting
    # copy each, takes 60% of the time of numpy's copy of the strided channels.
    for channel, plane in enumerate(cv2.split(picture)):
        blob[0, 2 - channel, :height, :width] = plane
    outputs = session(model).run(None, {"input": blob})
    heads = len(STRIDES)
    found = [
        _decode(
            outputs[i][0, :, 0],
            outputs[i + heads][0, :, 0],
            outputs[i + 2 * heads][0],
            outputs[i + 3 * heads][0],
            stride,
            padded_w // stride,
            score_threshold,
        )
        for i, stride in enumerate(STRIDES)
    ]
    faces = np.concatenate(found)
    if len(faces) > 1:
        faces = faces[_kept(faces, score_threshold, nms_threshold)]
    return faces


def _decode(
    cls: NDArray[np.float32],
    obj: NDArray[np.float32],
    bbox: NDArray[np.float32],
    kps: NDArray[np.float32],
    stride: int,
    columns: int,
    score_threshold: float,
) -> NDArray[np.float32]:
    """One head's faces scored at least ``score_threshold``, as rows (see
    :func:`detect_rows`): each anchor's offsets are in strides from its cell."""
    score = np.sqrt(np.clip(cls, 0.0, 1.0) * np.clip(obj, 0.0, 1.0))
    (cells,) = np.nonzero(score >= score_threshold)
    column = (cells % columns).astype(np.float32)[:, None]
    row = (cells // columns).astype(np.float32)[:, None]
    box = bbox[cells]
    centre = (np.hstack([column, row]) + box[:, :2]) * stride
    size = np.exp(box[:, 2:]) * stride
    points = kps[cells].reshape(-1, 5, 2) + np.stack([column, row], axis=2)
    return np.hstack(
        [centre - size / 2, size, points.reshape(-1, 10) * stride, score[cells][:, None]]
    ).astype(np.float32)


def _kept(faces: NDArray[np.float32], score_threshold: float, nms_threshold: float) -> NDArray:
    """The rows OpenCV's ``NMSBoxes`` keeps, best first, on the boxes truncated to whole
    pixels as ``FaceDetectorYN`` gives them to it."""
    import cv2

    boxes = faces[:, :4].astype(np.int32).tolist()
    scores = faces[:, 14].tolist()
    kept = cv2.dnn.NMSBoxes(boxes, scores, score_threshold, nms_threshold, 1.0, _TOP_K)
    return np.asarray(kept, np.intp).reshape(-1)


def _padded(side: int) -> int:
    return ((side - 1) // _DIVISOR + 1) * _DIVISOR


def _load(model: Path):
    import onnxruntime as ort

    from fer8.models import onnx_wire
    from fer8.models.runtime import session_options

    data = model.read_bytes()
    index = onnx_wire.read_graph_index(data)
    tensors = {"input", *index.outputs, *(name for node in index.nodes for name in node.outputs)}
    # One thread: each caller's thread runs its own picture; no memory pattern: each
    # picture has its own size.
    options = session_options(1, memory_pattern=False)
    # The CPU: a GPU provider would tune its convolutions again for every new size.
    return ort.InferenceSession(
        onnx_wire.with_shapes_dropped(data, tensors), options, providers=["CPUExecutionProvider"]
    )
