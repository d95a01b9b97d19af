"""Backbones (two ResNet50 weight layouts and FaceNet), and the classifier built on them.

* ``resnet50``: ``keras.applications.ResNet50``, with ImageNet weights from a local
  ``.h5`` file or Keras's own download.
* ``vggface-resnet50``: the RESNET50 of the keras-vggface project (a Caffe ResNet-50
  trained on VGGFace2). keras-vggface itself no longer imports on Keras 3 and its layer
  names contain ``/``, which Keras 3 rejects; this module rebuilds the same network with
  ``/`` replaced by ``_`` and reads keras-vggface's Keras 2 HDF5 weight files by layer name.
* ``facenet``: FaceNet's Inception-ResNet-v1 (:mod:`fer8.training.facenet`), a network
  trained to recognise faces, with the Keras 2 ``facenet_keras.h5`` read by layer name.

Keras and TensorFlow are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer8.errors import DownloadError, ModelFormatError
from fer8.models.preprocessing import FACENET, IMAGENET_CAFFE, VGGFACE2, Preprocessing

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

#: Backbone name -> the preprocessing its pretrained weights expect.
BACKBONES: dict[str, Preprocessing] = {
    "resnet50": IMAGENET_CAFFE,
    "vggface-resnet50": VGGFACE2,
    "facenet": FACENET,
}

#: Backbone name -> the smallest input side it takes, worked out from its layers (the
#: tests build each at this size, and FaceNet and ResNet50 one pixel below, which fail):
#:
#: * ``facenet``: six unpadded 3x3 layers with stride 2 (``Conv2d_1a``, ``MaxPool_3a``,
#:   ``Conv2d_4b``, ``Mixed_6a``, ``Mixed_7a``) or 1 (``Conv2d_2a``, ``Conv2d_4a``) take
#:   75 px down to 37, 35, 17, 15, 7, 3 and 1; 74 leaves ``Mixed_7a`` 2x2, too small for
#:   its 3x3 kernel.
#: * ``resnet50``: its layers are padded and would take less, but
#:   ``keras.applications.ResNet50`` refuses inputs below 32 px.
#: * ``vggface-resnet50``: the network takes 5 px; 32 is fer8's floor for every backbone
#:   (a face at less says little).
MIN_INPUT_SIZE: dict[str, int] = {"resnet50": 32, "vggface-resnet50": 32, "facenet": 75}

#: Name of the classifier's output layer (softmax, kept in float32 under mixed precision).
OUTPUT_LAYER = "probabilities"

#: Keras's ImageNet ResNet50 weights without the top, and the MD5 Keras checks them with
#: (``keras.src.applications.resnet``), so fer8 fetches exactly what Keras would.
IMAGENET_RESNET50_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_RESNET50_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_RESNET50_FILE
)
IMAGENET_RESNET50_MD5 = "4d473c1dd8becc155b73f8504c6f6626"


def build_backbone(
    name: str, input_size: int, weights: str | os.PathLike | None = None
) -> keras.Model:
    """Build a backbone without its top, ending in global average pooling.

    Args:
        name: ``"resnet50"``, ``"vggface-resnet50"`` or ``"facenet"``.
        input_size: Side of the square input.
        weights: ``None`` for random weights; for ``resnet50`` ``"imagenet"`` (see
            :func:`imagenet_weights`) or a local ``.h5`` path; for ``vggface-resnet50``
            the path of a keras-vggface ``rcmalli_vggface_tf_notop_resnet50.h5`` file;
            for ``facenet`` the path of ``facenet_keras.h5`` (see
            :mod:`fer8.training.facenet`).

    Raises:
        ValueError: Unknown backbone name.
        ModelFormatError: A weight file does not fit the backbone.
        DownloadError: The ImageNet weights are not cached and cannot be downloaded.
    """
    if name == "resnet50":
        from fer8.training.backend import import_keras

        keras = import_keras()
        if weights == "imagenet":
            weights = imagenet_weights()
        if weights is not None:
            weights = os.fspath(weights)
            if not Path(weights).is_file():
                raise FileNotFoundError(f"{weights}: no such weights file")
        return keras.applications.ResNet50(
            include_top=False,
            weights=weights,
            input_shape=(input_size, input_size, 3),
            pooling="avg",
        )
    if name == "vggface-resnet50":
        model = vggface_resnet50(input_size)
        if weights is not None:
            load_keras2_weights(model, weights)
        return model
    if name == "facenet":
        from fer8.training.facenet import inception_resnet_v1

        model = inception_resnet_v1(input_size)
        if weights is not None:
            load_keras2_weights(model, weights)
        return model
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def imagenet_weights() -> Path:
    """The local path of Keras's ImageNet ResNet50 weights, downloaded on first use.

    Keras's own cache (``$KERAS_HOME``, else ``~/.keras``, under ``models/``) and
    checksum are used, so a file Keras fetched before is reused. Fetched here rather
    than by ``keras.applications.ResNet50`` so that ``fer8 train`` can fail in one line
    before it prepares any data, and so that Keras's download messages stay off stdout.

    Raises:
        DownloadError: The file is not cached and the download failed or did not
            match its checksum.
    """
    from fer8.training.backend import import_keras

    keras = import_keras()
    logger.info("ImageNet weights: %s (downloaded once)", IMAGENET_RESNET50_URL)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Keras prints its progress bar
            path = keras.utils.get_file(
                IMAGENET_RESNET50_FILE,
                IMAGENET_RESNET50_URL,
                cache_subdir="models",
                file_hash=IMAGENET_RESNET50_MD5,
                cache_dir=os.environ.get("KERAS_HOME"),
            )
    except Exception as exc:  # Keras raises a bare Exception for network failures
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DownloadError(
            f"could not download ImageNet weights ({reason}); pass --backbone-weights PATH "
            "to a local resnet50 .h5, or --init-model"
        ) from None
    return Path(path)


def build_classifier(
    backbone: keras.Model, num_classes: int, *, dropout: float = 0.3
) -> keras.Model:
    """Put a dropout + dense softmax head on a pooled backbone, as one flat functional model."""
    import keras

    x = backbone.output
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    # Softmax in float32 even under mixed precision: bfloat16 keeps only ~3 digits.
    outputs = keras.layers.Activation("softmax", dtype="float32", name=OUTPUT_LAYER)(x)
    return keras.Model(backbone.input, outputs, name=f"fer8_{backbone.name}")


def vggface_resnet50(input_size: int = 224) -> keras.Model:
    """keras-vggface's RESNET50 without its top, layer for layer, names with ``_`` for ``/``.

    Caffe's layout: bias-free convolutions, the stride on the first 1x1 convolution of each
    projection block, Keras 2's BatchNormalization defaults (epsilon 1e-3).
    """
    from fer8.training.backend import import_keras

    keras = import_keras()
    from keras import layers

    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = layers.Conv2D(
        64, 7, strides=2, padding="same", use_bias=False, name=_keras_name("conv1/7x7_s2")
    )(inputs)
    x = layers.BatchNormalization(name=_keras_name("conv1/7x7_s2/bn"))(x)
    x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    stages = [
        (2, 3, (64, 64, 256)),
        (3, 4, (128, 128, 512)),
        (4, 6, (256, 256, 1024)),
        (5, 3, (512, 512, 2048)),
    ]
    for stage, blocks, filters in stages:
        for block in range(1, blocks + 1):
            strides = 1 if stage == 2 or block > 1 else 2
            x = _vggface_block(x, filters, stage, block, strides, project=block == 1)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name="vggface_resnet50")


def _vggface_block(x, filters: Sequence[int], stage: int, block: int, strides: int, project: bool):
    from keras import layers

    prefix = f"conv{stage}_{block}"
    f1, f2, f3 = filters
    shortcut = x
    y = layers.Conv2D(f1, 1, strides=strides, use_bias=False, name=f"{prefix}_1x1_reduce")(x)
    y = layers.BatchNormalization(name=f"{prefix}_1x1_reduce_bn")(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f2, 3, padding="same", use_bias=False, name=f"{prefix}_3x3")(y)
    y = layers.BatchNormalization(name=f"{prefix}_3x3_bn")(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f3, 1, use_bias=False, name=f"{prefix}_1x1_increase")(y)
    y = layers.BatchNormalization(name=f"{prefix}_1x1_increase_bn")(y)
    if project:
        shortcut = layers.Conv2D(f3, 1, strides=strides, use_bias=False, name=f"{prefix}_1x1_proj")(
            x
        )
        shortcut = layers.BatchNormalization(name=f"{prefix}_1x1_proj_bn")(shortcut)
    y = layers.Add()([y, shortcut])
    return layers.Activation("relu")(y)


def load_keras2_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Load a Keras 2 ``.h5`` file (keras-vggface's RESNET50, FaceNet's whole model or
    its weights) into ``model`` by layer name.

    Layers of the file that the model lacks (a ``classifier`` top, FaceNet's
    ``Bottleneck`` embedding) are skipped; a weighted layer of the model that the file
    lacks is an error, since a half-loaded backbone would silently predict nonsense.

    Raises:
        ModelFormatError: The file is not a Keras 2 weight file for this network.
    """
    import h5py

    path = Path(path)
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise ModelFormatError(f"{path}: not an HDF5 weight file ({exc})") from None
    with file:
        root = file["model_weights"] if "model_weights" in file else file
        if "layer_names" not in root.attrs:
            raise ModelFormatError(f"{path}: no 'layer_names' attribute; not a Keras 2 weight file")
        stored = {}
        for raw_name in root.attrs["layer_names"]:
            name = _decode(raw_name)
            group = root[name]
            names = [_decode(w) for w in group.attrs.get("weight_names", [])]
            if names:
                stored[_keras_name(name)] = [np.asarray(group[w]) for w in names]
    loaded = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        arrays = stored.pop(layer.name, None)
        if arrays is None:
            raise ModelFormatError(f"{path}: no weights for layer {layer.name!r}")
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise ModelFormatError(
                f"{path}: layer {layer.name!r} has weights of shapes "
                f"{[a.shape for a in arrays]}, the model needs {expected}"
            )
        layer.set_weights(arrays)
        loaded += 1
    logger.info(
        "loaded %d layers from %s (%d unused: %s)",
        loaded,
        path,
        len(stored),
        ", ".join(sorted(stored)) or "none",
    )


def _keras_name(vggface_name: str) -> str:
    return vggface_name.replace("/", "_")


def _decode(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)
