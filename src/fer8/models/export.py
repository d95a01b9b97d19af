"""``fer8 export``: a model's network as a standalone ONNX file, or a model file
rewritten in the current format."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fer8.models.modelfile import ONNX_MEMBER, WEIGHTS_MEMBER, ModelSpec, read_graph, read_spec
from fer8.models.onnx_wire import (
    Node,
    with_metadata,
    with_nodes_and_outputs,
    with_renamed_outputs,
)
from fer8.models.onnx_wire import metadata as wire_metadata
from fer8.models.writer import onnx_metadata, replaced_atomically


def export_onnx(
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    metadata: Mapping[str, str] | None = None,
    precision: str = "auto",
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
    Nothing here needs the ``onnx`` package: the graph is edited as protobuf bytes
    (:mod:`fer8.models.onnx_wire`), so a light install exports too.

    Args:
        model_path: A model file.
        out: The ONNX file to write; its folder is made if missing.
        metadata: More ``metadata_props``, e.g. how fer8 frames a face for the network
            (:func:`fer8.pipeline.faces.framing`, which ``fer8 export`` adds).
    """
    spec = read_spec(model_path)
    graph = read_graph(model_path, precision=precision)
    if spec.temperature != 1.0:
        graph = calibrated_graph(graph, spec)
    props = wire_metadata(graph)
    props.update(onnx_metadata(spec))
    if spec.temperature != 1.0:
        props["fer8.temperature"] = repr(spec.temperature)
    props.update(metadata or {})
    return _write_atomically(Path(out), with_metadata(graph, props))


def calibrated_graph(graph: bytes, spec: ModelSpec) -> bytes:
    """``graph`` with ``spec.temperature`` applied after its softmax: the old output
    ``probabilities`` p goes through Max(p, tiny) -> Log -> Mul(1 / T) -> Softmax, which
    is softmax(logits / T) (see :mod:`fer8.models.calibration`), and that is the new
    ``probabilities``. Any other output of the graph is left as it is; so is the
    metadata (:func:`export_onnx` writes it)."""
    from fer8.models.calibration import SMALLEST_PROBABILITY
    from fer8.models.onnx_graph import OUTPUT_NAME

    raw = f"{OUTPUT_NAME}_uncalibrated"
    nodes = [
        Node("Max", (raw, "calibration_tiny"), ("calibration_floored",)),
        Node("Log", ("calibration_floored",), ("calibration_log",)),
        Node(
            "Mul",
            ("calibration_log", "calibration_inverse_temperature"),
            ("calibration_logits",),
        ),
        Node("Softmax", ("calibration_logits",), (OUTPUT_NAME,), (("axis", -1),)),
    ]
    weights = {
        "calibration_tiny": np.array(SMALLEST_PROBABILITY, np.float32),
        "calibration_inverse_temperature": np.array(1.0 / spec.temperature, np.float32),
    }
    renamed = with_renamed_outputs(graph, {OUTPUT_NAME: raw})
    return with_nodes_and_outputs(renamed, nodes, [], weights)


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
