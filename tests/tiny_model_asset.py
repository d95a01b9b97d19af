"""The tests' tiny models in the real ``.fer8`` format: ``tiny``, a small random-weight CNN
(most tests), and ``brightness``, whose answer is known (``test_evaluation.py``).

Built with Keras once and kept in ``tests/assets/`` (9 KB and 2 KB), so that the
inference tests need no TensorFlow. ``python tests/tiny_model_asset.py`` rebuilds them
(with the ``train`` extra); ``test_tiers.py`` checks that they match what :func:`build`
gives today.

The spec's ``fer8.json`` and the graph's metadata carry the fer8 version that wrote them,
so :func:`copy_asset` writes them again with today's: its copy has the bytes that
:func:`build` writes, for every fer8 version.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
LABELS = ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")


def build(name: str, path: Path) -> Path:
    """Build the model ``name`` with Keras and save it to ``path``."""
    return BUILDERS[name](path)


def build_tiny(path: Path) -> Path:
    """The tiny CNN (seeded, so always the same weights)."""
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


def build_brightness(path: Path) -> Path:
    """A model whose answer is known: bright crops are 'happy', dark ones 'sad'."""
    import keras
    import numpy as np

    from fer8.models.modelfile import ModelSpec
    from fer8.models.preprocessing import IMAGENET_CAFFE
    from fer8.training.keras_models import save_model

    inputs = keras.Input((48, 48, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)  # about brightness - 115 per channel
    logits = keras.layers.Dense(2, name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    model = keras.Model(inputs, outputs)
    model.get_layer("logits").set_weights([np.array([[1.0, -1.0]] * 3), np.zeros(2)])
    spec = ModelSpec(("happy", "sad"), 48, IMAGENET_CAFFE, "test-brightness")
    return save_model(model, spec, path)


BUILDERS = {"tiny": build_tiny, "brightness": build_brightness}


def copy_asset(name: str, path: Path) -> Path:
    """Write the kept model ``name`` to ``path`` as today's fer8 writes it (no TensorFlow)."""
    from fer8.models.modelfile import NETWORK_MEMBER, ONNX_MEMBER, read_spec
    from fer8.models.onnx_wire import with_metadata
    from fer8.models.writer import onnx_metadata, write_model_file

    asset = ASSETS / f"{name}.fer8"
    spec = read_spec(asset)
    with zipfile.ZipFile(asset) as archive:
        network_json = archive.read(NETWORK_MEMBER).decode()
        graph = archive.read(ONNX_MEMBER)
    return write_model_file(path, spec, network_json, with_metadata(graph, onnx_metadata(spec)))


if __name__ == "__main__":
    ASSETS.mkdir(exist_ok=True)
    for name in BUILDERS:
        print(build(name, ASSETS / f"{name}.fer8"))
