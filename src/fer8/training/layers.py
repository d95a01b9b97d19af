"""Keras layers of fer8's own, registered so that a saved network config rebuilds.

Importing this module registers them with Keras; :mod:`fer8.training.keras_models`
imports it before it rebuilds any network from a model file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fer8.training.backend import import_keras

if TYPE_CHECKING:
    import keras
else:  # quietly: a command that reads a FaceNet file may import Keras here first
    keras = import_keras()


@keras.saving.register_keras_serializable(package="fer8")
class ScaleSum(keras.layers.Layer):
    """``inputs[0] + scale * inputs[1]``: the scaled residual sum of Inception-ResNet.

    It replaces the ``Lambda`` layers of FaceNet's Keras 2 file, which Keras 3 refuses
    to deserialise (arbitrary Python code), and it is a layer the ONNX writer knows
    (:mod:`fer8.models.onnx_graph`).
    """

    def __init__(self, scale: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        shortcut, residual = inputs
        return shortcut + self.scale * residual

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale}
