"""``fer8 export``: a model's network as a standalone ONNX file, or a model file
rewritten in the current format."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from fer8.models.modelfile import (
    ONNX_MEMBER,
    WEIGHTS_MEMBER,
    read_graph,
    replaced_atomically,
)


def export_onnx(model_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the network of ``model_path`` as an ONNX file with the model's labels,
    input size and preprocessing in its metadata (``fer8.*`` keys).

    The graph is the one ONNX Runtime runs in fer8: input ``input``, a float32 (N, S, S,
    3) batch preprocessed as ``fer8.preprocessing`` says; output ``probabilities``, and
    ``features`` (N, K, h, w), the feature map before global average pooling, for a
    network whose head is pooling and dense layers (older graphs gain it here).
    """
    return _write_atomically(Path(out), read_graph(model_path))


def export_fer8(model_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Rewrite a model file in the current format (an older file gains its ONNX graph;
    a compact file stays compact). Needs the ``train`` extra for older files.

    Raises:
        ImportError: An older file and no TensorFlow, Keras or onnx to read it.
    """
    model_path, out = Path(model_path), Path(out)
    with zipfile.ZipFile(model_path) as archive:
        members = set(archive.namelist())
    if ONNX_MEMBER in members:  # already current
        return _write_atomically(out, model_path.read_bytes())
    from fer8.training.keras_models import load_keras_model, save_model

    keras_model, spec = load_keras_model(model_path)
    return save_model(keras_model, spec, out, compact=WEIGHTS_MEMBER in members)


def _write_atomically(path: Path, data: bytes) -> Path:
    with replaced_atomically(path) as partial:
        partial.write_bytes(data)
    return path
