"""fer8 model files from and to Keras: saving a trained network, loading one to train
further, and the ONNX graph of a Keras network.

The model file (:mod:`fer8.models.modelfile`) stores the network once, as an ONNX graph
whose weights are named by Keras layer; this module is the Keras side of that bridge.
It imports Keras, so only training, conversion and the Keras reference runner in tests
and benchmarks use it.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer8.errors import ModelFormatError
from fer8.models.modelfile import (
    KERAS_MEMBER,
    NETWORK_MEMBER,
    ONNX_MEMBER,
    WEIGHTS_MEMBER,
    ExpressionModel,
    ModelSpec,
    read_spec,
)
from fer8.models.onnx_graph import build_graph, keras_weights, split_weights
from fer8.models.writer import onnx_metadata, write_model_file
from fer8.training.backend import import_keras

if TYPE_CHECKING:
    import keras
    import onnx

PRECISIONS = ("float32", "bfloat16")


def graph_from_keras(
    keras_model: keras.Model, spec: ModelSpec, *, compact: bool = False
) -> onnx.ModelProto:
    """The ONNX graph of ``keras_model`` (inference mode), with ``spec`` in its metadata.

    Args:
        compact: Store kernels as float16 (see :func:`save_model`).
    """
    config = keras_model.get_config()
    weights = split_weights(config, keras_model.get_weights())
    return build_graph(config, weights, name=spec.name, half=compact, metadata=onnx_metadata(spec))


def save_model(
    keras_model: keras.Model, spec: ModelSpec, path: str | os.PathLike, *, compact: bool = False
) -> Path:
    """Write ``keras_model`` and ``spec`` as a ``.fer8`` file.

    Args:
        compact: Store kernels as float16 (half the size; for shipping). Predictions
            change by about 1e-3 in probability. Either way the same network and spec
            always give the same bytes, so repacking a run reproduces its SHA-256.
    """
    _check_compatible(keras_model, spec)
    keras_model = with_precision(keras_model, "float32")
    graph = graph_from_keras(keras_model, spec, compact=compact)
    network = json.loads(keras_model.to_json())
    network.pop("compile_config", None)  # the optimizer is not part of the model
    network_json = json.dumps(network, sort_keys=True)
    return write_model_file(path, spec, network_json, graph.SerializeToString())


def load_keras_model(path: str | os.PathLike) -> tuple[keras.Model, ModelSpec]:
    """The network of a model file as a Keras model (to train it further), and its spec.

    Reads every format version: the ONNX graph's weights (2), or Keras's own members (1).

    Raises:
        ModelFormatError: Not a model file, or its network cannot be rebuilt.
    """
    import onnx

    import fer8.training.layers  # noqa: F401  (registers fer8's layers for the config)

    keras = import_keras()
    path = Path(path)
    spec = read_spec(path)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as archive:
        members = set(archive.namelist())
        try:
            if {ONNX_MEMBER, NETWORK_MEMBER} <= members:
                network = json.loads(archive.read(NETWORK_MEMBER))
                keras_model = keras.models.model_from_json(json.dumps(network))
                graph = onnx.load_from_string(archive.read(ONNX_MEMBER))
                keras_model.set_weights(keras_weights(graph, network["config"]))
            elif KERAS_MEMBER in members:
                inner = archive.extract(KERAS_MEMBER, tmp)
                keras_model = keras.saving.load_model(inner, compile=False)
            elif {NETWORK_MEMBER, WEIGHTS_MEMBER} <= members:
                keras_model = keras.models.model_from_json(archive.read(NETWORK_MEMBER))
                with np.load(archive.open(WEIGHTS_MEMBER)) as stored:
                    keras_model.set_weights(
                        [stored[f"arr_{i}"].astype(np.float32) for i in range(len(stored.files))]
                    )
            else:
                raise ModelFormatError(f"{path}: no network inside")
        except ModelFormatError:
            raise
        except Exception as exc:  # Keras and onnx raise many kinds on a damaged archive
            raise ModelFormatError(f"{path}: cannot load the network ({exc})") from exc
    try:
        _check_compatible(keras_model, spec)
    except ValueError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    return keras_model, spec


def keras_expression_model(
    keras_model: keras.Model, spec: ModelSpec, *, precision: str = "float32"
) -> ExpressionModel:
    """An :class:`ExpressionModel` that runs ``keras_model`` on TensorFlow (BatchNorm
    folded, one traced function): the reference ONNX Runtime is checked against, and
    the old runtime in ``scripts/bench_light.py``."""
    from fer8.training.inference import inference_function

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    _check_compatible(keras_model, spec)
    network = inference_function(with_precision(keras_model, precision), spec.input_size)
    return ExpressionModel(network, spec, runtime=f"tensorflow ({precision})")


def _check_compatible(keras_model: keras.Model, spec: ModelSpec) -> None:
    input_shape = tuple(keras_model.input_shape[1:])
    if input_shape != (spec.input_size, spec.input_size, 3):
        raise ValueError(f"network input {input_shape} does not match input_size {spec.input_size}")
    outputs = keras_model.output_shape[-1]
    if outputs != len(spec.labels):
        raise ValueError(f"network has {outputs} outputs but {len(spec.labels)} labels")


def with_precision(keras_model: keras.Model, precision: str) -> keras.Model:
    """The network computing in ``precision`` (``"float32"`` or ``"bfloat16"``).

    bfloat16 means mixed precision: variables stay float32 and the output layer
    computes in float32. A model already in the wanted precision is returned as is;
    otherwise a copy with the same weights.
    """
    keras = import_keras()
    policy = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    layers = [layer for layer in keras_model.layers if layer.name not in keras_model.output_names]
    if all(layer.dtype_policy.name == policy for layer in layers if layer.weights):
        return keras_model

    def clone(layer):
        config = layer.get_config()
        if layer.name not in keras_model.output_names:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(keras_model, clone_function=clone)
    copy.set_weights(keras_model.get_weights())
    return copy


class _LegacyReader:
    """Format-1 files for :mod:`fer8.models.legacy`: read through Keras."""

    def read_graph(self, path: str | os.PathLike) -> tuple[ModelSpec, bytes]:
        keras_model, spec = load_keras_model(path)
        return spec, graph_from_keras(keras_model, spec).SerializeToString()

    def rewrite(self, path: str | os.PathLike, out: str | os.PathLike, *, compact: bool) -> Path:
        keras_model, spec = load_keras_model(path)
        return save_model(keras_model, spec, out, compact=compact)


LEGACY_READER = _LegacyReader()
