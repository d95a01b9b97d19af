"""The tests' tiny random-weight model: a small CNN in the real ``.fer8`` format.

Built with Keras once and kept as ``tests/assets/tiny.fer8`` (about 10 KB), so that the
inference tests need no TensorFlow. ``python tests/tiny_model_asset.py`` rebuilds the asset
(with the ``train`` extra); ``test_tiers.py`` checks that it matches what :func:`build`
gives today.

The spec's ``fer8.json`` and the graph's metadata carry the fer8 version that wrote them,
so :func:`copy_asset` writes them again with today's: its copy has the bytes that
:func:`build` writes, for every fer8 version.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

ASSET = Path(__file__).resolve().parent / "assets" / "tiny.fer8"
LABELS = ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")


def build(path: Path) -> Path:
    """Build the tiny model with Keras (seeded, so always the same weights) and save it
    to ``path``."""
    import keras

    from fer8.models.modelfile import ModelSpec
    from fer8.models.preprocessing import IMAGENET_CAFFE
    from fer8.training.keras_models import save_model

    keras.utils.set_random_seed(7)
    inputs = keras.Input((48, 48, 3))
    x = keras.layers.Rescaling(1 / 64.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(len(LABELS), name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, outputs)
    spec = ModelSpec(
        LABELS, 48, IMAGENET_CAFFE, "test-cnn", name="tiny", metadata={"purpose": "tests"}
    )
    return save_model(model, spec, path)


def copy_asset(path: Path) -> Path:
    """Write the kept model to ``path`` as today's fer8 writes it (no TensorFlow)."""
    from fer8.models.modelfile import (
        NETWORK_MEMBER,
        ONNX_MEMBER,
        onnx_metadata,
        read_spec,
        write_model_file,
    )
    from fer8.models.onnx_wire import with_metadata

    spec = read_spec(ASSET)
    with zipfile.ZipFile(ASSET) as archive:
        network_json = archive.read(NETWORK_MEMBER).decode()
        graph = archive.read(ONNX_MEMBER)
    return write_model_file(path, spec, network_json, with_metadata(graph, onnx_metadata(spec)))


if __name__ == "__main__":
    ASSET.parent.mkdir(exist_ok=True)
    print(build(ASSET))
