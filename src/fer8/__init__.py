"""fer8: facial expression recognition.

The pipeline is a chain of plain functions, each usable alone::

    image = fer8.load_image("photo.jpg")
    for box in fer8.detect(image):
        face = fer8.align(image, box, fer8.landmarks(image, box))
        probabilities = fer8.classify([face], model)

and :class:`fer8.Predictor` chains them with the models loaded once.

Importing fer8 is cheap: no model is loaded and neither ONNX Runtime nor OpenCV is
imported until a function that needs them is called. Prediction never imports
TensorFlow; only training (``fer8.training``) does.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# Public name -> module defining it; resolved on first access (PEP 562), so that
# `import fer8` and `fer8 --help` stay instant.
_EXPORTS = {
    "load_image": "fer8.pipeline.images",
    "detect": "fer8.pipeline.detection",
    "landmarks": "fer8.pipeline.landmarking",
    "align": "fer8.pipeline.alignment",
    "crop_square": "fer8.pipeline.alignment",
    "AlignedFace": "fer8.pipeline.alignment",
    "faces_in_photo": "fer8.pipeline.faces",
    "face_from_crop": "fer8.pipeline.faces",
    "classify": "fer8.pipeline.classification",
    "Predictor": "fer8.pipeline.predictor",
    "explain": "fer8.pipeline.explain",
    "Explanation": "fer8.pipeline.explain",
    "head_pose": "fer8.pipeline.pose",
    "HeadPose": "fer8.results",
    "load_model": "fer8.models.registry",
    "ExpressionModel": "fer8.models.modelfile",
    "ModelSpec": "fer8.models.modelfile",
    "save_model": "fer8.training.keras_models",
    "Box": "fer8.results",
    "Face": "fer8.results",
    "ImageResult": "fer8.results",
    "ExplainedResult": "fer8.results",
    "FrameResult": "fer8.results",
    "TrackedFace": "fer8.results",
    "read_frames": "fer8.pipeline.video",
    "EXPRESSIONS": "fer8.labels",
    "Fer8Error": "fer8.errors",
    "InvalidImageError": "fer8.errors",
    "InvalidVideoError": "fer8.errors",
    "ModelNotFoundError": "fer8.errors",
    "ModelFormatError": "fer8.errors",
    "ExplanationError": "fer8.errors",
    "ChecksumMismatchError": "fer8.errors",
    "DownloadError": "fer8.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fer8' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    # ruff: noqa: F401  (re-exports, listed in __all__ through _EXPORTS)
    from fer8.errors import (
        ChecksumMismatchError,
        DownloadError,
        ExplanationError,
        Fer8Error,
        InvalidImageError,
        InvalidVideoError,
        ModelFormatError,
        ModelNotFoundError,
    )
    from fer8.labels import EXPRESSIONS
    from fer8.models.modelfile import ExpressionModel, ModelSpec
    from fer8.models.registry import load_model
    from fer8.pipeline.alignment import AlignedFace, align, crop_square
    from fer8.pipeline.classification import classify
    from fer8.pipeline.detection import detect
    from fer8.pipeline.explain import Explanation, explain
    from fer8.pipeline.faces import face_from_crop, faces_in_photo
    from fer8.pipeline.images import load_image
    from fer8.pipeline.landmarking import landmarks
    from fer8.pipeline.pose import head_pose
    from fer8.pipeline.predictor import Predictor
    from fer8.pipeline.video import read_frames
    from fer8.results import (
        Box,
        ExplainedResult,
        Face,
        FrameResult,
        HeadPose,
        ImageResult,
        TrackedFace,
    )
    from fer8.training.keras_models import save_model
