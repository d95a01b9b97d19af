"""Running a trained network as fast as this machine allows, with the same results.

Two things make a ResNet50 cheaper to run than Keras's training-time graph:

* **BatchNorm folded into its convolution.** At inference a BatchNormalization layer is
  a fixed per-channel scale and shift, so it can be multiplied into the kernel and bias
  of the convolution before it. A ResNet50 loses 53 layers of element-wise work; at 112
  pixels and batch 1 that saves 3-4 ms of 23-26 on 2 CPU cores
  (``scripts/bench_predict.py``). Outputs agree to about 1e-6.
* **One traced function.** On TensorFlow a ``tf.function`` with a free batch dimension
  is about 20% faster per call than ``predict_on_batch``.

The stored model is never changed: :func:`fold_batch_norms` returns a copy that is only
used to predict (training and saving keep the original layers).

This module imports Keras, so it is imported only where a model is built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fer8.training.backend import import_keras

if TYPE_CHECKING:
    import keras  # untyped: Any to mypy; the names in annotations need a module
else:
    keras = import_keras()
logger = logging.getLogger(__name__)


def fold_batch_norms(keras_model: keras.Model) -> keras.Model:
    """A copy of ``keras_model`` in which each BatchNormalization that directly follows a
    Conv2D is merged into that convolution (for inference only: it computes the same
    function with frozen statistics, and cannot be trained further).

    A pair is folded only when it is safe: the convolution has no activation, feeds
    nothing but the BatchNormalization, and neither layer is shared; BatchNorm normalises
    the channel axis. Other layers are copied unchanged. A model without such pairs is
    returned as is.
    """
    pairs = _conv_bn_pairs(keras_model)
    if not pairs:
        return keras_model
    folded_norms = {norm.name for norm in pairs.values()}

    def clone(layer):
        if layer.name in folded_norms:
            return _FoldedNorm(name=layer.name, dtype=layer.dtype_policy)
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(keras_model, clone_function=clone)
    for layer in keras_model.layers:
        if layer.name in folded_norms or not layer.weights:
            continue  # (the input layer's name is not kept by clone_model)
        target = copy.get_layer(layer.name)
        if layer.name in pairs:
            target.set_weights(_folded_weights(layer, pairs[layer.name]))
        else:
            target.set_weights(layer.get_weights())
    logger.debug("folded %d BatchNormalization layers into their convolutions", len(pairs))
    return copy


def inference_function(
    keras_model: keras.Model, input_size: int, *, fold: bool = True
) -> Callable[[NDArray[np.float32]], NDArray[np.float32]]:
    """A callable from a preprocessed batch (N, S, S, 3) to float32 probabilities (N, C),
    running ``keras_model`` (a folded copy unless ``fold`` is False, which
    ``scripts/bench_predict.py`` uses to measure the difference) the fastest way this
    backend offers."""
    network = fold_batch_norms(keras_model) if fold else keras_model
    if keras.backend.backend() != "tensorflow":
        return lambda batch: np.asarray(network.predict_on_batch(batch), np.float32)
    import tensorflow as tf

    @tf.function(
        input_signature=[tf.TensorSpec([None, input_size, input_size, 3], tf.float32)],
        autograph=False,
    )
    def run(batch):
        return tf.cast(network(batch, training=False), tf.float32)

    return lambda batch: run(batch).numpy()


def _conv_bn_pairs(keras_model: keras.Model) -> dict[str, Any]:
    """Convolution name -> the BatchNormalization layer that may be folded into it."""
    consumers: dict[str, int] = {}
    for layer in keras_model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                source = tensor._keras_history.operation
                consumers[source.name] = consumers.get(source.name, 0) + 1
    pairs = {}
    for layer in keras_model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        if len(layer._inbound_nodes) != 1 or layer.axis not in (-1, 3):
            continue
        (tensor,) = layer._inbound_nodes[0].input_tensors
        conv = tensor._keras_history.operation
        if (
            type(conv) is keras.layers.Conv2D
            and len(conv._inbound_nodes) == 1
            and conv.get_config()["activation"] == "linear"
            and consumers.get(conv.name) == 1
        ):
            pairs[conv.name] = layer
    return pairs


def _folded_weights(conv: Any, norm: Any) -> list[NDArray[np.float32]]:
    """Kernel and bias of ``conv`` followed by ``norm``, as one convolution.

    y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta
      = conv_{k * s}(x) + (b - mean) * s + beta,   with s = gamma / sqrt(var + eps).
    """
    weights = [np.asarray(w, np.float64) for w in conv.get_weights()]
    kernel = weights[0]
    bias = weights[1] if conv.use_bias else np.zeros(kernel.shape[-1])
    norm_weights = {w.name: np.asarray(w.numpy(), np.float64) for w in norm.weights}
    gamma = norm_weights.get("gamma", np.ones_like(bias))
    beta = norm_weights.get("beta", np.zeros_like(bias))
    scale = gamma / np.sqrt(norm_weights["moving_variance"] + norm.epsilon)
    return [
        (kernel * scale).astype(np.float32),
        ((bias - norm_weights["moving_mean"]) * scale + beta).astype(np.float32),
    ]


class _FoldedNorm(keras.layers.Layer):
    """Where a folded BatchNormalization was: passes its input through unchanged (keeps
    the layer name, so the copy's other layers line up with the original's)."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape
