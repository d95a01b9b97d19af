"""An int8 form of a model's network, for prediction on the CPU.

ONNX Runtime's static quantizer rewrites the float graph in the QDQ form
(QuantizeLinear/DequantizeLinear pairs around each convolution and matrix product),
which every ONNX Runtime build runs, fusing the pairs into integer kernels where the CPU
has them. Weights are int8, one scale per output channel; activations are uint8, their
ranges measured on real faces (calibration). The faces must be framed and preprocessed
exactly as prediction frames them, so the caller passes crops made by fer8's own
pipeline (``fer8 quantize`` uses the training crops, :mod:`fer8.training.crops`).

Weights use all 8 bits by default. On x86 CPUs without VNNI (AVX2 only, or AVX-512
without VNNI) ONNX Runtime multiplies uint8 by int8 with an instruction that adds pairs
of products into 16 bits, which can saturate for full-range weights, so answers there
may differ a little from a VNNI or AMX machine's; ``reduce_range`` (7-bit weights)
makes that impossible, at a cost: on the bundled model 7-bit weights gave the float
network's label on 92.0% of 400 held-out faces, 8-bit ones on 98.3% (docs/experiments.md).

The int8 graph is stored in the model file beside the float one (``model.int8.onnx``,
see :mod:`fer8.models.modelfile`); the float graph stays for training and explanations.
Quantizing needs the ``onnx`` package (the ``train`` extra); running the int8 graph
needs ONNX Runtime only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import Fer8Error

logger = logging.getLogger(__name__)

#: Range-finding methods of ONNX Runtime's calibrator fer8 offers.
METHODS = ("minmax", "percentile", "entropy")
#: Convolutions at the input left in float by default: FaceNet's stem, the six before its
#: first Inception block (docs/experiments.md, 2026-12-04: the float network's label on
#: 98.8% of held-out faces, against 98.3% with the first one alone).
FLOAT_FIRST = 6


def check_int8_layers(int8_layers: Collection[int], float_first: int) -> None:
    """Check that each of ``int8_layers`` (1: the first convolution) is among the first
    ``float_first``, the only ones it can make int8 again; ``fer8 quantize`` checks this
    before it frames any calibration face.

    Raises:
        ValueError: A layer outside them, named in the message.
    """
    outside = sorted(layer for layer in int8_layers if not 1 <= layer <= float_first)
    if outside:
        raise ValueError(
            f"{', '.join(map(str, outside))} {'is' if len(outside) == 1 else 'are'} not "
            f"among the first {float_first} convolutions left in float"
        )


def quantize_graph(
    graph: bytes,
    batches: Sequence[NDArray[np.float32]],
    *,
    method: str = "percentile",
    percentile: float = 99.999,
    float_first: int = FLOAT_FIRST,
    int8_layers: Collection[int] = (),
    float_last: bool = True,
    reduce_range: bool = False,
) -> bytes:
    """The int8 (QDQ) form of a float ONNX graph.

    Args:
        graph: The serialized float graph (as :func:`fer8.models.modelfile.read_graph`
            gives it: float16-stored kernels are fine).
        batches: Preprocessed model input, (N, S, S, 3) each, to measure the
            activations' ranges on.
        method: ``minmax``, ``percentile`` (the ``percentile``-th of the absolute
            values) or ``entropy`` (the range that loses least information).
        percentile: For ``method="percentile"``.
        float_first: Leave this many of the first convolutions in float: the layers
            nearest the pixels, whose errors every later layer carries.
        int8_layers: Among those first ``float_first``, the ones (1: the first) to
            quantize all the same: a float convolution costs several times its int8
            form, and the costliest of them need not be the sensitive ones (the
            bundled FaceNet's sixth, docs/experiments.md).
        float_last: Leave the classifier (the last matrix product) in float too.
        reduce_range: Weights in 7 bits, so that no CPU's int8 kernel saturates (see
            the module's docstring), further from the float network everywhere.

    Raises:
        ImportError: No ``onnx`` package (the ``train`` extra).
        ValueError: An unknown method, or no calibration data.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not batches or not sum(len(b) for b in batches):
        raise ValueError("no calibration faces")
    if float_first < 0:
        raise ValueError(f"float_first must be 0 or more, got {float_first}")
    check_int8_layers(int8_layers, float_first)
    model = onnx.load_from_string(graph)
    input_name = model.graph.input[0].name

    class Faces(CalibrationDataReader):
        """The batches, one range at a time (see ``CalibStridedMinMax`` below)."""

        def __init__(self) -> None:
            self._batches: Iterator[NDArray[np.float32]] = iter(batches)

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._batches = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: np.asarray(batch, np.float32)}

    with tempfile.TemporaryDirectory(prefix="fer8-quantize-") as folder:
        work = Path(folder)
        # Float16-stored kernels are cast by the graph; quantization needs them as
        # weights, and BatchNorm folded into the convolutions before it: ONNX Runtime's
        # own preparation (shape inference and its basic graph optimisations) does both.
        onnx.save(model, work / "float.onnx")
        quant_pre_process(
            str(work / "float.onnx"), str(work / "prepared.onnx"), skip_symbolic_shape=True
        )
        prepared = onnx.load(work / "prepared.onnx")
        # Nodes are excluded by name, and the optimiser leaves fused ones unnamed.
        for number, node in enumerate(prepared.graph.node):
            node.name = node.name or f"{node.op_type}_{number}"
        onnx.save(prepared, work / "prepared.onnx")
        nodes = [n for n in prepared.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
        excluded = [
            node.name
            for number, node in enumerate(nodes[:float_first], 1)
            if number not in int8_layers
        ]
        if float_last and nodes[float_first:]:
            excluded.append(nodes[-1].name)
        calibrate_method = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }[method]
        # The quantizer prints its progress; fer8's stdout is for results only.
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            quantize_static(
                str(work / "prepared.onnx"),
                str(work / "int8.onnx"),
                Faces(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=calibrate_method,
                extra_options={
                    "CalibPercentile": percentile,
                    "CalibTensorRangeSymmetric": False,
                    # One batch at a time: the histogram methods otherwise hold every
                    # layer's output for every face at once (gigabytes for 1,000 faces).
                    "CalibStridedMinMax": 1,
                },
            )
        logger.debug("%s", printed.getvalue())
        int8 = onnx.load(work / "int8.onnx")
    # The float graph's metadata (labels, preprocessing) describes this one too.
    del int8.metadata_props[:]
    int8.metadata_props.extend(model.metadata_props)
    return bytes(int8.SerializeToString())


def quantize_model_file(
    path: str | os.PathLike,
    out: str | os.PathLike,
    faces: NDArray[np.uint8],
    *,
    method: str = "percentile",
    percentile: float = 99.999,
    float_first: int = FLOAT_FIRST,
    int8_layers: Collection[int] = (),
    float_last: bool = True,
    reduce_range: bool = False,
    batch_size: int = 16,
    described_as: str = "",
) -> dict[str, Any]:
    """Write a copy of the model file ``path`` to ``out`` with an int8 network beside the
    float one, calibrated on ``faces``, and say how it compares with the float network.

    Args:
        faces: RGB ``uint8`` crops (N, H, W, 3) framed as prediction frames them
            (``fer8.classify``'s input), masked when the model masks.
        described_as: What the faces are, kept in the file's metadata.

    Returns:
        What was done, also stored under ``metadata["int8"]`` of the new file: the
        number of faces, the method, the layers left in float, and on the calibration
        faces the share whose label the int8 network gives as the float one does and the
        largest probability difference.

    Raises:
        Fer8Error: No faces.
        ModelFormatError: ``path`` is not a model file.
    """
    from dataclasses import replace

    from fer8.models.modelfile import read_graph, read_model_file, read_spec
    from fer8.models.runtime import OnnxNetwork
    from fer8.models.writer import with_int8_network
    from fer8.pipeline.classification import model_batch

    spec = read_spec(path)
    if len(faces) == 0:
        raise Fer8Error("no calibration faces: none of the images gave a face")
    crops = model_batch(faces, read_model_file(path, precision="float"))
    inputs = spec.preprocessing.apply(crops).astype(np.float32)
    batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
    int8 = quantize_graph(
        read_graph(path, precision="float"),
        batches,
        method=method,
        percentile=percentile,
        float_first=float_first,
        int8_layers=int8_layers,
        float_last=float_last,
        reduce_range=reduce_range,
    )
    float_network = OnnxNetwork(read_graph(path, precision="float"), source=str(path))
    int8_network = OnnxNetwork(int8, source="the int8 network")
    expected = np.concatenate([float_network(b) for b in batches])
    got = np.concatenate([int8_network(b) for b in batches])
    summary = {
        "faces": int(len(inputs)),
        "calibrated_on": described_as,
        "method": method if method != "percentile" else f"percentile {percentile}",
        "float_layers": {
            "first": float_first,
            **({"but": sorted(int8_layers)} if int8_layers else {}),
            "last": float_last,
        },
        "weights": f"int8 per channel ({7 if reduce_range else 8} bits), activations uint8",
        "same_label": round(float(np.mean(expected.argmax(1) == got.argmax(1))), 4),
        "largest_difference": round(float(np.abs(expected - got).max()), 4),
    }
    metadata = {**spec.metadata, "int8": summary}
    with_int8_network(path, replace(spec, metadata=metadata), int8, out)
    return summary
