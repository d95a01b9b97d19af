"""Reading a Keras functional config as a model file stores it (``network.json``),
without Keras: its layers in order, the tensors wired between them, and each layer's
weights by name, in the order Keras keeps them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fer8.errors import ModelFormatError

#: Weights per layer class, in the order Keras stores them (``layer.weights``).
_WEIGHT_NAMES = {
    "Conv2D": ("kernel", "bias"),
    "Dense": ("kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}


def weight_names(layer: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of one layer's stored weights, in Keras's order (empty for layers
    without weights). Optional weights (a bias, BatchNorm's scale and centre) are left
    out when the layer's config switches them off."""
    names = _WEIGHT_NAMES.get(layer["class_name"], ())
    config = layer["config"]
    if "bias" in names and not config.get("use_bias", True):
        names = tuple(n for n in names if n != "bias")
    if layer["class_name"] == "BatchNormalization":
        names = tuple(
            n
            for n in names
            if (n != "gamma" or config.get("scale", True))
            and (n != "beta" or config.get("center", True))
        )
    return names


def config_layers(config: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The config's layers in order.

    Raises:
        ModelFormatError: A layer is shared (called on more than one input).
    """
    for layer in config["layers"]:
        if len(layer.get("inbound_nodes", [])) > 1:
            raise ModelFormatError(f"layer {layer['name']!r} is shared; not supported")
        yield layer


def tensor_refs(refs: Sequence[Any]) -> list[Sequence[Any]]:
    """A model's input or output references: Keras writes one as a bare
    ``[layer, node, index]`` and several as a list of them."""
    return [refs] if refs and isinstance(refs[0], str) else list(refs)


def tensor_key(ref: Sequence[Any]) -> str:
    """A tensor's key: ``(layer, node, index)`` as in Keras's ``keras_history``."""
    layer, node, index = ref
    if node != 0:
        raise ModelFormatError(f"layer {layer!r} is called more than once; not supported")
    return f"{layer}:{index}"


def inbound_tensors(args: Any) -> list[str]:
    """The input tensors of an inbound node, in order (they may be nested in lists)."""
    if isinstance(args, dict):
        if args.get("class_name") == "__keras_tensor__":
            return [tensor_key(args["config"]["keras_history"])]
        return [key for value in args.values() for key in inbound_tensors(value)]
    if isinstance(args, (list, tuple)):
        return [key for value in args for key in inbound_tensors(value)]
    return []
