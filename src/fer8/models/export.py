"""``fer8 export``: a model's network as a standalone ONNX file, or a model file
rewritten in the current format."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from fer8.models.modelfile import (
    ONNX_MEMBER,
    WEIGHTS_MEMBER,
    ModelSpec,
    onnx_metadata,
    read_graph,
    read_spec,
    replaced_atomically,
)


def export_onnx(
    model_path: str | os.PathLike, out: str | os.PathLike, *, precision: str = "auto"
) -> Path:
    """Write the network of ``model_path`` as an ONNX file with the model's labels,
    input size and preprocessing in its metadata (``fer8.*`` keys).

    The network is the one ``fer8 predict`` runs: the int8 one where the file has it
    (``precision``: ``auto``, ``float`` or ``int8``, see
    :func:`fer8.models.modelfile.network_precision`).

    The graph is the one ONNX Runtime runs in fer8: input ``input``, a float32 (N, S, S,
    3) batch preprocessed as ``fer8.preprocessing`` says; output ``probabilities``, and
    ``features`` (N, K, h, w), the feature map before global average pooling, for a
    network whose head is pooling and dense layers (older graphs gain it here).
    A calibrated model (a temperature in its spec) has the temperature built into the
    graph (:func:`calibrated_graph`), so the exported ``probabilities`` are the ones
    fer8 reports; ``fer8.temperature`` in the metadata then says it is applied.

    Raises:
        ImportError: A calibrated model and no ``onnx`` package to edit its graph.
    """
    spec = read_spec(model_path)
    graph = read_graph(model_path, precision=precision)
    if spec.temperature != 1.0:
        graph = calibrated_graph(graph, spec)
    return _write_atomically(Path(out), graph)


def calibrated_graph(graph: bytes, spec: ModelSpec) -> bytes:
    """``graph`` with ``spec.temperature`` applied after its softmax: the old output
    ``probabilities`` p goes through Max(p, tiny) -> Log -> Mul(1 / T) -> Softmax, which
    is softmax(logits / T) (see :mod:`fer8.models.calibration`), and that is the new
    ``probabilities``. The metadata gets the current spec and ``fer8.temperature``.
    Any other output of the graph is left as it is.

    Raises:
        ImportError: The ``onnx`` package (the ``train`` extra) is not installed.
    """
    import onnx
    from onnx import helper, numpy_helper

    from fer8.models.calibration import SMALLEST_PROBABILITY
    from fer8.models.onnx_graph import OUTPUT_NAME

    model = onnx.load_from_string(graph)
    raw = f"{OUTPUT_NAME}_uncalibrated"
    for node in model.graph.node:
        node.output[:] = [raw if name == OUTPUT_NAME else name for name in node.output]
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(SMALLEST_PROBABILITY, np.float32), "calibration_tiny"),
            numpy_helper.from_array(
                np.array(1.0 / spec.temperature, np.float32), "calibration_inverse_temperature"
            ),
        ]
    )
    model.graph.node.extend(
        [
            helper.make_node("Max", [raw, "calibration_tiny"], ["calibration_floored"]),
            helper.make_node("Log", ["calibration_floored"], ["calibration_log"]),
            helper.make_node(
                "Mul",
                ["calibration_log", "calibration_inverse_temperature"],
                ["calibration_logits"],
            ),
            helper.make_node("Softmax", ["calibration_logits"], [OUTPUT_NAME], axis=-1),
        ]
    )
    props = {prop.key: prop.value for prop in model.metadata_props}
    props.update(onnx_metadata(spec), **{"fer8.temperature": repr(spec.temperature)})
    helper.set_model_props(model, props)
    return model.SerializeToString()


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
    from fer8.models.legacy import legacy_reader

    return legacy_reader().rewrite(model_path, out, compact=WEIGHTS_MEMBER in members)


def _write_atomically(path: Path, data: bytes) -> Path:
    with replaced_atomically(path) as partial:
        partial.write_bytes(data)
    return path
