"""Facial landmarks: dlib's 68-point shape predictor (iBUG 300-W layout).

The model file ships in the PyPI package ``face-recognition-models``. Its ``__init__``
imports ``pkg_resources``, which current setuptools no longer provides, so the file is
located through the import system without importing the package.

dlib takes 0.3-0.5 s to load that 99 MB file, in every process. fer8 converts it once to
arrays in its cache (:mod:`fer8.pipeline.shape_cache`) and evaluates dlib's algorithm on
them with numpy (:class:`~fer8.pipeline.shape_predictor.ShapePredictor`: the same
points, mapped in milliseconds). Until that copy exists (a first run), dlib's own
predictor is used, in process or in ``fer8 predict``'s landmark process
(:class:`LandmarkProcess`), and the copy is made in the background.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ModelNotFoundError
from fer8.pipeline import landmark_worker
from fer8.pipeline.detection import DEFAULT_DETECTOR, landmark_box
from fer8.pipeline.landmark_worker import (  # noqa: F401  (landmark_model_path: public here too)
    LANDMARK_MODEL_FILE,
    OK,
    landmark_model_path,
)
from fer8.pipeline.shape_predictor import ShapePredictor
from fer8.results import Box

logger = logging.getLogger(__name__)

# iBUG 300-W indices of the eye contours, as seen in the image (subject's right eye first).
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)

# dlib's predictor is trained on faces of roughly 80-250 pixels; smaller ones (FER2013's
# 48x48 crops) are upscaled to this width first, which fits the points much better.
_MIN_FACE_WIDTH = 128

_lock = threading.Lock()
_predictors: dict[Path, Any] = {}  # dlib.shape_predictor, by path


def load_landmark_model(path: str | os.PathLike | None = None) -> Any:
    """Load (once per process) and return the 68-point shape predictor of ``path`` (the
    default model when None): a :class:`ShapePredictor` on fer8's converted copy when
    it is current; otherwise dlib's own, and the copy is made in the background for
    the processes after this one (:func:`fer8.pipeline.shape_cache.convert_later`).

    Raises:
        ModelNotFoundError: No model file is found.
    """
    from fer8.pipeline import shape_cache

    path = Path(path) if path is not None else landmark_model_path()
    with _lock:
        predictor = _predictors.get(path)
        if predictor is None:
            model = shape_cache.load(path)
            if model is not None:
                predictor = ShapePredictor(model)
            else:
                import dlib

                logger.debug("loading landmark model %s with dlib", path)
                predictor = dlib.shape_predictor(str(path))
                shape_cache.convert_later(path)
            _predictors[path] = predictor
    return predictor


class LandmarkProcess:
    """dlib's shape predictor, loaded and run in a Python process of its own: a first
    run's (before fer8's converted copy of the model exists).

    Loading the 68-point model with dlib takes 0.3-0.5 s, all of it holding the GIL, so
    no thread can overlap it; a process can. ``fer8 predict`` starts one first thing
    when a core is free for it and no converted copy exists
    (:func:`~fer8.pipeline.landmark_worker.wants_process`;
    :mod:`fer8.console` starts it before the command's imports), and the model loads
    on that core while the rest of fer8 is imported, the expression model loads and the
    photo is decoded and searched. When its input ends, the process converts the model
    (:mod:`fer8.pipeline.shape_cache`) for the runs after, which need no process.
    :func:`landmarks` sends it the part of the image around each
    face (the points are the same: dlib's features lie well inside that part) and gets
    the 68 points back. The process ends when this one does, or on :meth:`close`.

    Args:
        path: The model file; the default model (:func:`landmark_model_path`) when None.

    Raises:
        ModelNotFoundError: Here, when no model file is found; from :meth:`fit`, when
            the process could not load it or ended.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else landmark_model_path()
        # One started first thing by the fer8 command (fer8.console), or a new one.
        self._process = landmark_worker.take(self.path) or landmark_worker.start(self.path)
        self._lock = threading.Lock()
        self._ready = False
        # Ended when this object goes (its end of the pipe closed, the child's input ends).
        self._end = weakref.finalize(self, _end_process, self._process)

    def fit(self, image: NDArray[np.uint8], rect: tuple[int, int, int, int]) -> NDArray[np.float32]:
        """The 68 points (x, y) dlib fits to the face in ``rect`` (left, top, right,
        bottom) of an RGB image, in the image's pixels."""
        left, top, right, bottom = rect
        # The face with a margin of its own size each side: dlib's features lie within
        # a fraction of the face around it, so they see the same pixels.
        margin = max(right - left, bottom - top)
        height, width = image.shape[:2]
        x0, y0 = max(0, left - margin), max(0, top - margin)
        x1, y1 = min(width, right + margin), min(height, bottom + margin)
        if x1 <= x0 or y1 <= y0:  # a box outside the image: let dlib see a pixel of it
            x0, y0 = min(max(0, left), width - 1), min(max(0, top), height - 1)
            x1, y1 = x0 + 1, y0 + 1
        part = np.ascontiguousarray(image[y0:y1, x0:x1])
        header = np.array(
            [y1 - y0, x1 - x0, left - x0, top - y0, right - x0, bottom - y0], np.int32
        )
        with self._lock:
            stdin, stdout = self._process.stdin, self._process.stdout
            assert stdin is not None and stdout is not None  # both are pipes
            try:
                if not self._ready:
                    self._check(stdout.read(4))
                    self._ready = True
                stdin.write(header.tobytes() + part.tobytes())
                stdin.flush()
                self._check(stdout.read(4))
                points = np.frombuffer(stdout.read(68 * 2 * 4), np.int32)
            except (OSError, ValueError):
                points = np.zeros(0, np.int32)
            if points.size != 68 * 2:
                self._died()
        return points.reshape(68, 2).astype(np.float32) + np.array([x0, y0], np.float32)

    def close(self) -> None:
        """End the process (it also ends when this process does)."""
        with self._lock:
            self._end()

    def _check(self, status: bytes) -> None:
        if status != OK:
            self._died()

    def _died(self) -> None:
        code = self._process.poll()
        raise ModelNotFoundError(
            f"dlib's landmark model {self.path} could not be loaded or run in its own "
            f"process (it ended{'' if code is None else f' with exit status {code}'}); "
            "check the file, or use the model in process (fer8.Predictor's default)"
        )


def _end_process(process: Any) -> None:
    """Close a landmark process's input, which ends it once it has converted the model
    (see :mod:`fer8.pipeline.landmark_worker`); not waited for, so that a first run
    ends when its own work does (an ended child is reaped by a later ``subprocess``
    call, or by the system when this process ends)."""
    if process.stdin is not None and not process.stdin.closed:
        try:
            process.stdin.close()
        except OSError:  # it ended already, with input still buffered
            pass
    process.poll()


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
        predictor: A loaded shape predictor (:func:`load_landmark_model`'s: a
            :class:`ShapePredictor` or dlib's), or a :class:`LandmarkProcess`; the
            default model when omitted.

    Returns:
        A (68, 2) float32 array of (x, y) points in original-image pixels (each
        dlib's whole pixel in the image it fitted, undone by the upscaling).
    """
    import cv2

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
    rect = (
        int(round(left)),
        int(round(top)),
        int(round(left + box.w * scale)),
        int(round(top + box.h * scale)),
    )
    if isinstance(predictor, LandmarkProcess):
        points = predictor.fit(region, rect)
    elif isinstance(predictor, ShapePredictor):
        points = predictor(np.ascontiguousarray(region), rect)
    else:
        import dlib

        shape = predictor(np.ascontiguousarray(region), dlib.rectangle(*rect))
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
    return points / scale + offset


def eye_centers(points: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Centres of the eye contours, the eye on the image's left first."""
    return points[LEFT_EYE].mean(axis=0), points[RIGHT_EYE].mean(axis=0)
