"""The classifier head of a stored network: global average pooling followed by dense
layers, found in its Keras config and composed into one affine map.

Class activation maps (:mod:`fer8.pipeline.explain`) need that map and the feature map
the pooling averages (the graph's ``features`` output, added here to graphs written
before it existed); adding classes to a trained model (:mod:`fer8.training.new_class`)
widens the head's dense layer. Both work on the stored graph and config, without Keras.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ExplanationError, ModelFormatError
from fer8.models.keras_config import inbound_tensors, tensor_refs

logger = logging.getLogger(__name__)


#: Layers that may lie between global average pooling and the output for the head to be
#: affine (so that a class activation map sums exactly to the class's logit).
_HEAD_LAYERS = ("Dense", "Dropout", "BatchNormalization", "Activation")


@dataclass(frozen=True)
class ClassifierHead:
    """The head of a network ending in global average pooling and dense layers.

    Attributes:
        pool: The GlobalAveragePooling2D layer's name.
        features: The Keras tensor key of its input, the last feature map.
        layers: The layers from the pooling to the output, in order (Dense,
            BatchNormalization, Dropout, and linear or a final softmax Activation).
    """

    pool: str
    features: str
    layers: tuple[Mapping[str, Any], ...]


def classifier_head(config: Mapping[str, Any]) -> ClassifierHead:
    """Find the global average pooling that feeds the output through dense layers only.

    The class activation map (Zhou et al., 2016) of such a network is exact: every layer
    after the pooling is affine (a softmax at the end only turns logits into
    probabilities), so weighting the feature map's channels by the head's composed
    weights gives a map whose mean, plus a bias, is the class's logit. Any other layer
    there (a ReLU, a Flatten of the map, a second branch) would make that map a
    different function from the network's, so it is refused.

    Raises:
        ExplanationError: The head is not of that form; the message names the layer.
    """
    by_name = {layer["name"]: layer for layer in config["layers"]}
    outputs = tensor_refs(config["output_layers"])
    if len(outputs) != 1:
        raise ExplanationError("class activation maps need a network with one output")
    name = outputs[0][0]
    layers: list[Mapping[str, Any]] = []
    while True:
        layer = by_name.get(name)
        if layer is None:
            raise ExplanationError(f"the network's config has no layer {name!r}")
        kind, settings = layer["class_name"], layer["config"]
        inbound = (
            inbound_tensors(layer["inbound_nodes"][0]["args"]) if layer.get("inbound_nodes") else []
        )
        if kind == "GlobalAveragePooling2D" and not settings.get("keepdims") and layers:
            if not any(item["class_name"] == "Dense" for item in layers):
                break  # no dense layer: refused below
            return ClassifierHead(name, inbound[0], tuple(reversed(layers)))
        activation = settings.get("activation", "linear")
        final = not layers  # the output layer itself may end in a softmax
        if (
            kind not in _HEAD_LAYERS
            or len(inbound) != 1
            or activation not in (("linear", "softmax") if final else ("linear",))
        ):
            what = (
                kind
                if activation in ("linear", None) or kind not in _HEAD_LAYERS
                else f"{kind} with {activation}"
            )
            raise ExplanationError(
                f"layer {name!r} ({what}) lies between the network's last feature map and "
                "its output; class activation maps are exact only for global average "
                "pooling followed by dense layers"
            )
        layers.append(layer)
        name = inbound[0].rsplit(":", 1)[0]
    raise ExplanationError(
        "the network has no dense layer after its global average "
        "pooling; class activation maps need one"
    )


def add_feature_output(data: bytes, config: Mapping[str, Any]) -> bytes:
    """A stored graph with the ``features`` output, for graphs written before fer8 gave
    them one (the bundled model's among them). The output is taken from the stored graph
    itself: the input of the GlobalAveragePool node that :func:`build_graph` made for
    the head's pooling layer. A graph that has the output already, or whose network has
    no such head, is returned as it is.
    """
    from fer8.models.onnx_graph import FEATURES_NAME
    from fer8.models.onnx_wire import Node, read_graph_index, with_nodes_and_outputs

    index = read_graph_index(data)
    if FEATURES_NAME in index.outputs:
        return data
    try:
        head = classifier_head(config)
    except ExplanationError:
        return data
    pool = index.producer(f"{head.pool}/pool")
    if pool is None or pool.op_type != "GlobalAveragePool":
        # Not a graph fer8 built: it still predicts; explaining it says it cannot.
        logger.debug("no pooling node for layer %r: no feature-map output", head.pool)
        return data
    return with_nodes_and_outputs(
        data, [Node("Identity", (pool.inputs[0],), (FEATURES_NAME,))], [FEATURES_NAME]
    )


def head_weights(
    data: bytes, config: Mapping[str, Any]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The head after the pooling as one affine map: ``logits = pooled @ W + b``.

    Args:
        data: The serialized graph (weights are read from its initializers).
        config: The Keras config of the network.

    Returns:
        ``W`` (K, C) and ``b`` (C,), in float64.

    Raises:
        ExplanationError: The head is not global average pooling and dense layers.
    """
    from fer8.models.onnx_wire import read_graph_index

    head = classifier_head(config)
    index = read_graph_index(data)
    matrix: NDArray[np.float64] | None = None
    bias: NDArray[np.float64] | None = None

    def weight(layer: str, name: str) -> NDArray[np.float64]:
        return index.array(f"{layer}/{name}").astype(np.float64)

    for layer in head.layers:
        kind, name, settings = layer["class_name"], layer["name"], layer["config"]
        if kind == "Dense":
            scale = weight(name, "kernel")
            shift = (
                weight(name, "bias") if settings.get("use_bias", True) else np.zeros(scale.shape[1])
            )
        elif kind == "BatchNormalization":
            variance = weight(name, "moving_variance")
            gamma = weight(name, "gamma") if settings.get("scale", True) else np.ones_like(variance)
            beta = weight(name, "beta") if settings.get("center", True) else np.zeros_like(variance)
            factor = gamma / np.sqrt(variance + float(settings["epsilon"]))
            scale = np.diag(factor)
            shift = beta - weight(name, "moving_mean") * factor
        else:  # Dropout, a linear or the final softmax Activation
            continue
        matrix = scale if matrix is None else matrix @ scale
        bias = shift if bias is None else bias @ scale + shift
    assert matrix is not None and bias is not None  # classifier_head found a Dense
    return matrix, bias


def add_classes(
    data: bytes,
    config: Mapping[str, Any],
    kernel: NDArray[np.floating],
    bias: NDArray[np.floating],
) -> tuple[bytes, dict[str, Any]]:
    """The graph and Keras config of the network with more classes: its classifier's
    dense layer gains the columns ``kernel`` (K, M) and ``bias`` (M,) after its own, so
    the old classes keep their outputs, in their order, and the new ones follow.

    The weights change in the graph itself (stored in the type the layer's are, float16
    in a compact file), and the config's layer gets the new number of units, so that
    ONNX Runtime, Keras (``fer8 train --init-model``) and anything made from the graph
    (an exported or quantised copy) all compute the new network. A quantized graph
    (:mod:`fer8.models.quantize`, its classifier left in float) is widened the same way:
    its kernel is stored under its cast's name, and the shapes recorded after it for
    the old number of classes are dropped.

    Raises:
        ModelFormatError: The head is not global average pooling, dropout and one dense
            layer (a softmax after it allowed), or the shapes do not fit it.
    """
    import copy

    from fer8.models.onnx_wire import read_graph_index, with_initializers, with_shapes_dropped

    try:
        head = classifier_head(config)
    except ExplanationError as exc:
        raise ModelFormatError(f"cannot add a class to this network: {exc}") from None
    dense = [layer for layer in head.layers if layer["class_name"] == "Dense"]
    if len(dense) != 1 or head.layers[-1]["class_name"] not in ("Dense", "Activation"):
        raise ModelFormatError(
            "cannot add a class to this network: its head after the pooling is not "
            "one dense layer (with dropout before it and a softmax after it)"
        )
    name = dense[0]["name"]
    if any(
        layer["class_name"] not in ("Dense", "Dropout", "Activation") for layer in head.layers
    ) or not dense[0]["config"].get("use_bias", True):
        raise ModelFormatError(
            f"cannot add a class to this network: layer {name!r} is not the only affine "
            "layer after the pooling, or has no bias"
        )
    index = read_graph_index(data)
    kernel_name = f"{name}/kernel"
    if kernel_name not in index.initializers:  # a quantized graph's: the cast folded in
        kernel_name = f"{name}/kernel/float"
    old_kernel, old_bias = index.array(kernel_name), index.array(f"{name}/bias")
    kernel, bias = np.atleast_2d(kernel), np.atleast_1d(bias)
    if kernel.shape[0] != old_kernel.shape[0] or kernel.shape[1] != len(bias):
        raise ModelFormatError(
            f"new columns {kernel.shape} and bias {bias.shape} do not fit the layer "
            f"{name!r}'s kernel {old_kernel.shape}"
        )
    graph = with_initializers(
        data,
        {
            kernel_name: np.concatenate([old_kernel, kernel.astype(old_kernel.dtype)], 1),
            f"{name}/bias": np.concatenate([old_bias, bias.astype(old_bias.dtype)]),
        },
    )
    first = next(i for i, node in enumerate(index.nodes) if kernel_name in node.inputs)
    graph = with_shapes_dropped(
        graph, {tensor for node in index.nodes[first:] for tensor in node.outputs}
    )
    units = old_kernel.shape[1] + kernel.shape[1]
    widened = copy.deepcopy(dict(config))
    for layer in widened["layers"]:
        if layer["name"] == name:
            layer["config"]["units"] = units
        for node in layer.get("inbound_nodes", []):
            _set_last_dim(node, name, units)
    return graph, widened


def _set_last_dim(value: Any, layer: str, size: int) -> None:
    """Give Keras tensors that ``layer`` outputs, in an inbound node, ``size`` as their
    last dimension (Keras checks a config's recorded shapes when it rebuilds it)."""
    if isinstance(value, dict):
        settings = value.get("config")
        if value.get("class_name") == "__keras_tensor__" and isinstance(settings, dict):
            if settings.get("keras_history", [None])[0] == layer and settings.get("shape"):
                settings["shape"] = [*settings["shape"][:-1], size]
            return
        for item in value.values():
            _set_last_dim(item, layer, size)
    elif isinstance(value, list):
        for item in value:
            _set_last_dim(item, layer, size)
