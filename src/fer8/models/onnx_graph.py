"""The ONNX graph of a Keras network, built from its functional config and weights
without Keras.

When fer8 saves a model (:func:`fer8.training.keras_models.save_model`) this module
reads the network's config layer by layer and emits the same computation as ONNX
operators; the graph is stored in the ``.fer8`` file (``model.onnx``) and is what ONNX
Runtime runs to predict (:mod:`fer8.models.runtime`) and what ``fer8 export`` writes.
The weights live only in the graph: :func:`keras_weights` reads them back in Keras's
layout when Keras trains the network further, so there is no second copy to keep in
step. The graph also outputs the feature map of a network whose head is global average
pooling and dense layers (:mod:`fer8.models.classifier_head`), which explanations use.

Only the layers fer8's networks are made of are translated (FaceNet's
Inception-ResNet-v1, the two ResNet50 layouts, the classifier head, the small CNNs of the
tests); any other layer is a :class:`~fer8.errors.ModelFormatError` naming it, never a
silently different network.

Layout: Keras computes channels-last (NHWC), ONNX's convolutions channels-first (NCHW).
The graph takes the same NHWC batch as the Keras model, transposes it once, and
transposes kernels here; a Flatten of a feature map transposes back first, so that the
features reach a Dense layer in Keras's order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ExplanationError, ModelFormatError
from fer8.models.classifier_head import classifier_head
from fer8.models.keras_config import (
    config_layers,
    inbound_tensors,
    tensor_key,
    tensor_refs,
    weight_names,
)

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

#: ONNX operator set used (ONNX Runtime 1.16 and later run it).
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
#: The second output: the feature map global average pooling reduces before the
#: classifier, (N, K, h, w) channels-first, which class activation maps weight
#: (:mod:`fer8.pipeline.explain`). Only networks with such a head have it.
FEATURES_NAME = "features"

_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "linear": None}


def split_weights(
    config: Mapping[str, Any], weights: Sequence[NDArray]
) -> dict[str, dict[str, NDArray]]:
    """Assign a flat weight list (``keras_model.get_weights()`` order) to its layers.

    Raises:
        ModelFormatError: The number of arrays does not match the layers.
    """
    by_layer: dict[str, dict[str, NDArray]] = {}
    index = 0
    for layer in config_layers(config):
        _check_supported(layer)
        names = weight_names(layer)
        if index + len(names) > len(weights):
            raise ModelFormatError(f"too few weight arrays for layer {layer['name']!r}")
        by_layer[layer["name"]] = dict(zip(names, weights[index : index + len(names)]))
        index += len(names)
    if index != len(weights):
        raise ModelFormatError(f"{len(weights)} weight arrays for a network that has {index}")
    return by_layer


def build_graph(
    config: Mapping[str, Any],
    weights: Mapping[str, Mapping[str, NDArray]],
    *,
    name: str = "fer8",
    half: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> onnx.ModelProto:
    """The ONNX model computing the same function as the Keras network in inference mode.

    Args:
        config: The Keras functional model config (``model.get_config()``, or the
            ``config`` of ``model.to_json()``).
        weights: Layer name -> weight name -> array (see :func:`split_weights`).
        name: The graph's name.
        half: Store kernels (2-D and up) as float16, each cast to float32 by the graph
            (ONNX Runtime folds the casts when it loads the graph). This halves a
            ResNet50 (95 -> 47 MB) so it can ship in the package; biases and BatchNorm
            statistics stay float32 (float16 would overflow moving variances).
        metadata: Stored as the model's ``metadata_props``.

    Returns:
        A model with one input ``input`` (N, S, S, 3) float32, preprocessed as the
        model file says, and the output ``probabilities`` (N, C); a network whose head is
        global average pooling and dense layers (:func:`classifier_head`) also has the
        output ``features`` (N, K, h, w), the feature map that the pooling averages.

    Raises:
        ModelFormatError: A layer, setting or wiring this translator does not handle.
    """
    from onnx import TensorProto, helper

    graph = _Graph(weights, half=half)
    inputs, outputs = tensor_refs(config["input_layers"]), tensor_refs(config["output_layers"])
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelFormatError("only networks with one input and one output are supported")
    for layer in config_layers(config):
        graph.add_layer(layer)
    output = graph.to_matrix(graph.tensor(tensor_key(outputs[0])))
    graph.nodes.append(helper.make_node("Identity", [output], [OUTPUT_NAME]))
    graph_outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", None])]
    try:
        head = classifier_head(config)
    except ExplanationError:
        head = None  # a network that cannot be explained has no feature-map output
    if head is not None:
        graph.nodes.append(
            helper.make_node("Identity", [graph.tensor(head.features)], [FEATURES_NAME])
        )
        graph_outputs.append(
            helper.make_tensor_value_info(
                FEATURES_NAME, TensorProto.FLOAT, ["batch", None, None, None]
            )
        )

    size = graph.input_shape
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", *size])],
            graph_outputs,
            initializer=graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="fer8",
    )
    model.ir_version = 8  # what ONNX Runtime 1.16+ reads, whatever onnx version built it
    helper.set_model_props(model, dict(metadata or {}))
    return model


class _Graph:
    """The ONNX nodes and initializers under construction, and which tensor is which."""

    def __init__(self, weights: Mapping[str, Mapping[str, NDArray]], *, half: bool):
        self.weights = weights
        self.half = half
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.tensors: dict[str, str] = {}  # Keras tensor key -> ONNX tensor name
        self.spatial: set[str] = set()  # ONNX tensors that are NCHW feature maps
        self.input_shape: list[int | None] = []

    def tensor(self, key: str) -> str:
        try:
            return self.tensors[key]
        except KeyError:
            raise ModelFormatError(f"tensor {key} is used before it is computed") from None

    def node(self, op: str, inputs: list[str], outputs: list[str], **attributes: Any) -> str:
        """Add a node; returns its (first) output's name. A layer named like the graph's
        input or output (``input``, ``probabilities``) gets ``/layer`` added."""
        from onnx import helper

        outputs = [
            f"{name}/layer" if name in (INPUT_NAME, OUTPUT_NAME) else name for name in outputs
        ]
        self.nodes.append(helper.make_node(op, inputs, outputs, **attributes))
        return outputs[0]

    def constant(self, name: str, array: NDArray) -> str:
        """An initializer; a kernel is stored as float16 when ``half``, behind a cast."""
        from onnx import TensorProto, numpy_helper

        if self.half and array.ndim >= 2 and array.dtype == np.float32:
            stored = numpy_helper.from_array(np.ascontiguousarray(array, np.float16), name)
            self.initializers.append(stored)
            return self.node("Cast", [name], [f"{name}/float"], to=TensorProto.FLOAT)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def to_matrix(self, tensor: str) -> str:
        """A feature map flattened in Keras's (channels-last) order; other tensors as they are."""
        if tensor not in self.spatial:
            return tensor
        nhwc = self.node("Transpose", [tensor], [tensor + "/nhwc"], perm=[0, 2, 3, 1])
        return self.node("Flatten", [nhwc], [tensor + "/flat"], axis=1)

    def add_layer(self, layer: Mapping[str, Any]) -> None:
        kind, name, config = layer["class_name"], layer["name"], layer["config"]
        inbound = layer.get("inbound_nodes", [])
        inputs = (
            [self.tensor(key) for key in inbound_tensors(inbound[0]["args"])] if inbound else []
        )
        _check_supported(layer)
        output = getattr(self, f"_{kind}")(name, config, inputs)
        self.tensors[f"{name}:0"] = output

    def _weight(self, layer: str, weight: str) -> NDArray[np.float32]:
        return np.asarray(self.weights[layer][weight], np.float32)

    def _activation(self, name: str, activation: str, tensor: str) -> str:
        if activation == "softmax":
            if tensor in self.spatial:
                raise ModelFormatError(f"layer {name!r}: softmax over a feature map")
            return self.node("Softmax", [tensor], [f"{name}/softmax"], axis=-1)
        if activation not in _ACTIVATIONS:
            raise ModelFormatError(f"layer {name!r}: activation {activation!r} not supported")
        op = _ACTIVATIONS[activation]
        if op is None:
            return tensor
        out = self.node(op, [tensor], [f"{name}/{activation}"])
        if tensor in self.spatial:
            self.spatial.add(out)
        return out

    def _spatial(self, tensor: str) -> str:
        self.spatial.add(tensor)
        return tensor

    # One method per Keras layer class: (layer name, config, input tensors) -> output.

    def _InputLayer(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        shape = list(config.get("batch_shape") or config.get("batch_input_shape") or ())[1:]
        if len(shape) != 3 or shape[2] != 3:
            raise ModelFormatError(f"input shape {shape}: expected (size, size, 3)")
        self.input_shape = shape
        return self._spatial(self.node("Transpose", [INPUT_NAME], [name], perm=[0, 3, 1, 2]))

    def _Rescaling(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        (x,) = inputs
        scale = np.asarray(config["scale"], np.float32).reshape(1, -1, 1, 1)
        offset = np.asarray(config["offset"], np.float32).reshape(1, -1, 1, 1)
        x = self.node("Mul", [x, self.constant(f"{name}/scale", scale)], [f"{name}/mul"])
        return self._spatial(self.node("Add", [x, self.constant(f"{name}/offset", offset)], [name]))

    def _ZeroPadding2D(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        (top, bottom), (left, right) = config["padding"]
        pads = np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)
        return self._spatial(
            self.node("Pad", [inputs[0], self.constant(f"{name}/pads", pads)], [name])
        )

    def _Conv2D(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        _channels_last(name, config)
        kernel = self._weight(name, "kernel").transpose(3, 2, 0, 1)  # HWIO -> OIHW
        args = [inputs[0], self.constant(f"{name}/kernel", kernel)]
        if config.get("use_bias", True):
            args.append(self.constant(f"{name}/bias", self._weight(name, "bias")))
        out = self.node(
            "Conv",
            args,
            [name],
            group=int(config.get("groups", 1)),
            strides=list(config["strides"]),
            dilations=list(config["dilation_rate"]),
            kernel_shape=list(config["kernel_size"]),
            **_padding(name, config["padding"]),
        )
        return self._activation(name, config["activation"], self._spatial(out))

    def _BatchNormalization(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        axis = config["axis"]
        if axis not in (-1, 3, [-1], [3]):
            raise ModelFormatError(f"layer {name!r}: BatchNormalization over axis {axis}")
        variance = self._weight(name, "moving_variance")
        ones, zeros = np.ones_like(variance), np.zeros_like(variance)
        stored = self.weights[name]
        args = [
            inputs[0],
            self.constant(f"{name}/gamma", np.asarray(stored.get("gamma", ones), np.float32)),
            self.constant(f"{name}/beta", np.asarray(stored.get("beta", zeros), np.float32)),
            self.constant(f"{name}/moving_mean", self._weight(name, "moving_mean")),
            self.constant(f"{name}/moving_variance", variance),
        ]
        out = self.node("BatchNormalization", args, [name], epsilon=float(config["epsilon"]))
        return out if inputs[0] not in self.spatial else self._spatial(out)

    def _Activation(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        return self._activation(name, config["activation"], inputs[0])

    def _ReLU(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        if (
            config.get("max_value") is not None
            or config.get("negative_slope", 0)
            or config.get("threshold", 0)
        ):
            raise ModelFormatError(f"layer {name!r}: only a plain ReLU is supported")
        return self._activation(name, "relu", inputs[0])

    def _Add(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        total = inputs[0]
        for i, other in enumerate(inputs[1:]):
            total = self.node(
                "Add", [total, other], [f"{name}/{i}" if i < len(inputs) - 2 else name]
            )
        return total if inputs[0] not in self.spatial else self._spatial(total)

    def _Concatenate(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        axis = config.get("axis", -1)
        if any(tensor not in self.spatial for tensor in inputs) or axis not in (-1, 3):
            raise ModelFormatError(
                f"layer {name!r}: only feature maps joined on their channels are supported"
            )
        return self._spatial(self.node("Concat", inputs, [name], axis=1))

    def _ScaleSum(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        """fer8's scaled residual sum (Inception-ResNet): ``x + scale * residual``."""
        shortcut, residual = inputs
        scale = self.constant(f"{name}/scale", np.asarray(config["scale"], np.float32))
        scaled = self.node("Mul", [residual, scale], [f"{name}/scaled"])
        out = self.node("Add", [shortcut, scaled], [name])
        return out if shortcut not in self.spatial else self._spatial(out)

    def _pool(self, op: str, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        _channels_last(name, config)
        strides = config.get("strides") or config["pool_size"]
        return self._spatial(
            self.node(
                op,
                [inputs[0]],
                [name],
                kernel_shape=list(config["pool_size"]),
                strides=list(strides),
                **_padding(name, config["padding"]),
            )
        )

    def _MaxPooling2D(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        return self._pool("MaxPool", name, config, inputs)

    def _AveragePooling2D(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        return self._pool("AveragePool", name, config, inputs)

    def _GlobalAveragePooling2D(
        self, name: str, config: Mapping[str, Any], inputs: list[str]
    ) -> str:
        _channels_last(name, config)
        if config.get("keepdims"):
            raise ModelFormatError(f"layer {name!r}: keepdims is not supported")
        pooled = self.node("GlobalAveragePool", [inputs[0]], [f"{name}/pool"])
        return self.node("Flatten", [pooled], [name], axis=1)

    def _Flatten(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        return self.to_matrix(inputs[0])

    def _Dropout(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        return inputs[0]  # inactive at inference

    def _Dense(self, name: str, config: Mapping[str, Any], inputs: list[str]) -> str:
        x = self.to_matrix(inputs[0])
        out = self.node(
            "MatMul",
            [x, self.constant(f"{name}/kernel", self._weight(name, "kernel"))],
            [f"{name}/matmul" if config.get("use_bias", True) else name],
        )
        if config.get("use_bias", True):
            out = self.node(
                "Add", [out, self.constant(f"{name}/bias", self._weight(name, "bias"))], [name]
            )
        return self._activation(name, config["activation"], out)


def _check_supported(layer: Mapping[str, Any]) -> None:
    if not hasattr(_Graph, f"_{layer['class_name']}"):
        raise ModelFormatError(
            f"layer {layer['name']!r} is a {layer['class_name']}, which "
            "fer8 cannot run without Keras"
        )


def _channels_last(name: str, config: Mapping[str, Any]) -> None:
    if config.get("data_format", "channels_last") != "channels_last":
        raise ModelFormatError(f"layer {name!r}: only channels_last is supported")


def _padding(name: str, padding: str) -> dict[str, Any]:
    """Keras's padding as ONNX attributes. Keras's "same" puts an odd pixel of padding
    at the end (bottom, right), which is ONNX's SAME_UPPER."""
    if padding == "valid":
        return {"auto_pad": "VALID"}
    if padding == "same":
        return {"auto_pad": "SAME_UPPER"}
    raise ModelFormatError(f"layer {name!r}: padding {padding!r} not supported")


def keras_weights(model: onnx.ModelProto, config: Mapping[str, Any]) -> list[NDArray[np.float32]]:
    """The weights of a graph made by :func:`build_graph`, back in Keras's layout and
    order (``keras_model.set_weights``), so that Keras can train the network further.

    Raises:
        ModelFormatError: The graph lacks a weight of one of the config's layers.
    """
    from onnx import numpy_helper

    stored = {tensor.name: tensor for tensor in model.graph.initializer}
    weights = []
    for layer in config_layers(config):
        for weight in weight_names(layer):
            key = f"{layer['name']}/{weight}"
            if key not in stored:
                raise ModelFormatError(f"the graph has no weight {key!r}")
            array = numpy_helper.to_array(stored[key]).astype(np.float32)
            if layer["class_name"] == "Conv2D" and weight == "kernel":
                array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
            weights.append(array)
    return weights
