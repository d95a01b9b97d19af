"""``fer8 train`` on a tiny dataset made from the fixture photos: artifacts, resume, Ctrl-C,
no overwriting, augmentation, compact model files.

These tests are about what a run does (files, resuming, seeding, averaging), not about
how well it learns, so the runs here train a stand-in backbone of a few layers named
like ResNet50's (:func:`small_backbone`), at 32x32: a ResNet50 run holds 1.5-2.5 GB
of memory in the test process and takes minutes on 2 cores. The real networks are
trained by the README's training example (the bundled FaceNet, in tests/test_readme.py,
in its own process), started from the bundled model below, and built and checked in
test_facenet.py and test_models.py.
"""

from __future__ import annotations

import csv
import gc
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import save

import fer8
from fer8.cli import cli
from fer8.training import backbones
from fer8.training.keras_models import load_keras_model

pytestmark = pytest.mark.slow  # trains with TensorFlow

TRAIN_ARGS = [
    "--image-size",
    "32",
    "--batch-size",
    "2",
    "--backbone-weights",
    "none",
    "--val-fraction",
    "0.25",
    "--warmup-epochs",
    "0",
    "--precision",
    "float32",
]
RESNET50 = backbones.build_backbone


def small_backbone(name: str, input_size: int, weights=None):
    """Two convolutions with BatchNorm, named like ResNet50's stages 1 and 2 (so that
    --freeze-stages, BatchNorm folding and compact files see what they expect)."""
    import keras

    assert name == "resnet50" and weights is None
    inputs = keras.Input((input_size, input_size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, name="conv2_block1_1_conv")(x)
    x = keras.layers.BatchNormalization(name="conv2_block1_1_bn")(x)
    x = keras.layers.Activation("relu", name="conv2_block1_1_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name="resnet50")


@pytest.fixture(scope="module", autouse=True)
def small_backbones():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backbones, "build_backbone", small_backbone)
        yield


@pytest.fixture(autouse=True)
def release_models():
    """Each run's graphs and models go when its test ends, not when the process does."""
    yield
    import keras

    keras.backend.clear_session()
    gc.collect()


def variants(image: np.ndarray) -> list[np.ndarray]:
    """Four training images from one photo: as is, mirrored, darker, cropped closer."""
    h, w = image.shape[:2]
    return [
        image,
        image[:, ::-1],
        (image * 0.7).astype(np.uint8),
        image[h // 10 : h - h // 10, w // 10 : w - w // 10],
    ]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, astronaut, hopper):
    root = tmp_path_factory.mktemp("data")
    for folder, photo in (("happy", astronaut), ("Sadness", hopper)):
        for i, image in enumerate(variants(photo)):
            save(np.ascontiguousarray(image), root / folder / f"{i}.png")
    save(astronaut[::4, ::4], root / "contempt" / "0.png")  # no fer8 class: reported
    return root


@pytest.fixture(scope="module")
def first_run(tiny_data, tmp_path_factory):
    """One epoch through the command line, as a user would run it (keeping the
    checkpoint, which the tests of resuming continue from)."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    cache = tmp_path_factory.mktemp("cache")
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(run_dir),
            "--epochs",
            "1",
            "--cache",
            str(cache),
            "--keep-checkpoint",
            *TRAIN_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    return run_dir, cache, result


def test_train_writes_every_artifact(first_run, tiny_data, astronaut_path):
    run_dir, _, result = first_run
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.json",
        "state.json",
        "checkpoint.keras",
        "model.fer8",
        "history.csv",
        "curves.png",
    }
    assert "best val_accuracy" in result.stderr

    model = fer8.load_model(run_dir / "model.fer8")
    spec = model.spec
    assert spec.labels == ("happy", "sad") and spec.input_size == 32
    assert spec.backbone == "resnet50" and spec.preprocessing.channel_order == "BGR"
    assert not spec.preprocessing.grayscale  # colour photos: colour stays
    meta = spec.metadata
    assert meta["epoch"] == 1 and 0 <= meta["validation"]["accuracy"] <= 1
    assert meta["data"]["train"]["per_class"] == {"happy": 3, "sad": 3}
    assert meta["data"]["val"]["per_class"] == {"happy": 1, "sad": 1}
    assert meta["data"]["train"]["skipped"] == {"folder 'contempt' is no class": 1}
    assert meta["training"]["image_size"] == 32
    # The finished run fitted a temperature on its validation crops and recorded it.
    calibration = meta["calibration"]
    assert spec.temperature == calibration["temperature"] > 0
    assert calibration["fitted_on"] == "validation" and calibration["n"] == 2
    assert 0 <= calibration["ece_after"] <= 1 and 0 <= calibration["ece_before"] <= 1
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9

    with open(run_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:6] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert [row["epoch"] for row in rows] == ["1"]
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"

    # `fer8 predict --model RUN_DIR/model.fer8` uses it as is.
    predicted = CliRunner().invoke(
        cli,
        [
            "predict",
            str(astronaut_path),
            "--model",
            str(run_dir / "model.fer8"),
            "--format",
            "json",
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.stdout)[0]["faces"][0]["label"] in ("happy", "sad")


def test_the_data_is_a_table_and_few_images_are_counted_as_trained(tiny_data, tmp_path, caplog):
    """4 images a class, of which a quarter is held out for validation: 3 are trained on
    (the warning said 4, the summary 3), and the summary is a table, not a dict."""
    import logging

    caplog.set_level(logging.INFO, logger="fer8.training.loop")
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--cache",
            str(tmp_path / "cache"),
            *TRAIN_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    messages = [record.getMessage() for record in caplog.records]
    few = [m for m in messages if "poorly learnt" in m]  # one line for all such classes
    assert few == [
        "classes with fewer than 50 training images will be poorly learnt: happy 3, sad 3"
    ]
    (train,) = [m.splitlines() for m in messages if m.startswith("train data")]
    assert [line.split() for line in train] == [
        ["train", "data", "images", "Happy", "Sad", "weight"],
        [tiny_data.name, "6", "3", "3", "1"],
    ]
    (val,) = [m.splitlines() for m in messages if m.startswith("val data")]
    assert [line.split() for line in val] == [
        ["val", "data", "images", "Happy", "Sad"],
        [tiny_data.name, "2", "1", "1"],
    ]
    assert not any("{" in m for m in messages if m.startswith(("train", "val")))


def test_an_existing_run_folder_is_never_overwritten(first_run, tiny_data):
    run_dir, cache, _ = first_run
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(run_dir),
            "--cache",
            str(cache),
            *TRAIN_ARGS,
        ],
    )
    assert result.exit_code == 2
    assert "not empty" in result.stderr and "--resume" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_a_run_that_cannot_start_leaves_out_as_it_was(tmp_path, tiny_data):
    from fer8.training.datasets import DatasetError
    from fer8.training.loop import TrainConfig, train

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError):
        train(TrainConfig(data=str(empty)), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (tmp_path / "given").mkdir()
    result = CliRunner().invoke(
        cli, ["train", "--data", str(empty), "--out", str(tmp_path / "given"), *TRAIN_ARGS]
    )
    assert result.exit_code == 1 and "no labelled images" in result.stderr
    assert list((tmp_path / "given").iterdir()) == []
    # What an older fer8 left after a failed start does not block a new run.
    (tmp_path / "given" / "config.json").write_text("{}")
    (tmp_path / "given" / "state.json").write_text('{"epochs_done": 0}')
    result = CliRunner().invoke(
        cli, ["train", "--data", str(empty), "--out", str(tmp_path / "given"), *TRAIN_ARGS]
    )
    assert result.exit_code == 1 and "no labelled images" in result.stderr


def test_without_the_network_imagenet_weights_fail_in_one_line(tmp_path, tiny_data, monkeypatch):
    """`--backbone-weights imagenet` offline: one line that says what to pass instead,
    before any crop is prepared, and --out as it was."""
    from fer8.training import backbones

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # nothing cached there
    monkeypatch.setattr(backbones, "IMAGENET_RESNET50_URL", "http://127.0.0.1:9/resnet50.h5")
    args = [
        "train",
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "run"),
        "--backbone-weights",
        "imagenet",
        "--cache",
        str(tmp_path / "crops"),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("fer8: error: could not download ImageNet weights (")
    assert "pass --backbone-weights PATH to a local resnet50 .h5, or --init-model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "crops").exists()
    # A download that does not match Keras's checksum is refused the same way.
    fake = tmp_path / "fake.h5"
    fake.write_bytes(b"not the ImageNet weights")
    monkeypatch.setattr(backbones, "IMAGENET_RESNET50_URL", fake.as_uri())
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "could not download ImageNet weights" in result.stderr
    assert "hash does not match" in result.stderr and not (tmp_path / "run").exists()


def test_by_default_training_starts_from_the_bundled_model(tmp_path, tiny_data, monkeypatch):
    """No download: a run of the bundled model's backbone starts from its weights; on
    other classes the shared ones keep their outputs and new ones start fresh."""
    from fer8.training.loop import TrainConfig, build_model, starting_weights

    monkeypatch.setattr(backbones, "build_backbone", RESNET50)
    from fer8.models.registry import resolve_model
    from fer8.training.keras_models import load_keras_model

    bundled, bundled_spec = load_keras_model(resolve_model(None))
    labels = bundled_spec.labels
    config = TrainConfig(data="faces", image_size=96)
    assert config.init_model == "default" and config.backbone_weights == "none"
    assert config.backbone == bundled_spec.backbone
    assert TrainConfig(data="faces", backbone="vggface-resnet50").init_model is None
    assert starting_weights(config, labels) is None
    network = build_model(config, labels, steps_per_epoch=1)
    weighted = [layer.name for layer in bundled.layers if layer.weights]
    for layer in (weighted[0], weighted[len(weighted) // 2], "logits"):
        for ours, theirs in zip(
            network.get_layer(layer).get_weights(), bundled.get_layer(layer).get_weights()
        ):
            np.testing.assert_array_equal(ours, theirs)

    network = build_model(config, ("happy", "sad", "worry"), steps_per_epoch=1)
    kernel, bias = network.get_layer("logits").get_weights()
    old_kernel, old_bias = bundled.get_layer("logits").get_weights()
    for new, old in ((0, labels.index("happy")), (1, labels.index("sad"))):
        np.testing.assert_array_equal(kernel[:, new], old_kernel[:, old])
        assert bias[new] == old_bias[old]
    assert bias[2] == 0  # worry: fresh


def test_a_finished_run_keeps_one_copy_of_the_weights(tiny_data, tmp_path):
    """A run that ended keeps model.fer8 and not the checkpoint (weights and optimizer
    moments, three times the model) unless --keep-checkpoint asks for it."""
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(run_dir),
            "--epochs",
            "1",
            "--cache",
            str(tmp_path / "cache"),
            *TRAIN_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    names = {p.name for p in run_dir.iterdir()}
    assert names == {"config.json", "state.json", "model.fer8", "history.csv", "curves.png"}
    resumed = CliRunner().invoke(
        cli, ["train", "--data", str(tiny_data), "--out", str(run_dir), "--resume", "--epochs", "2"]
    )
    assert resumed.exit_code == 2 and "checkpoint.keras was not kept" in resumed.stderr
    assert "--init-model" in resumed.stderr


def test_resume_needs_a_checkpoint(tmp_path, tiny_data):
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "new"),
            "--resume",
            *TRAIN_ARGS,
        ],
    )
    assert result.exit_code == 2 and "nothing to resume" in result.stderr


def test_ctrl_c_keeps_a_checkpoint_and_resume_continues_at_the_next_epoch(
    first_run, tmp_path, monkeypatch, caplog
):
    import keras

    from fer8.training import loop as training

    run_dir = tmp_path / "run"
    shutil.copytree(first_run[0], run_dir)
    cache = first_run[1]

    # Continue to 3 epochs, but press Ctrl-C as epoch 3 starts.
    real_begin = training.RunRecorder.on_epoch_begin

    def interrupt_third(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt
        real_begin(self, epoch, logs)

    monkeypatch.setattr(training.RunRecorder, "on_epoch_begin", interrupt_third)
    config = training.TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    progress: dict[str, list[int]] = {}  # one progress display per epoch, step by step

    def on_epoch(title, steps):
        progress[title] = []
        return lambda step: progress[title].append(step)

    result = training.train(
        training.TrainConfig(**{**config.__dict__, "epochs": 3}),
        run_dir,
        resume=True,
        cache=cache,
        on_epoch=on_epoch,
    )
    assert result.interrupted and result.epochs_done == 2
    assert progress == {"epoch 2/3": [1, 1, 1], "epoch 3/3": []}  # 6 images, batch 2
    assert json.loads((run_dir / "state.json").read_text())["epochs_done"] == 2
    monkeypatch.undo()

    cli_result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(first_run[0].parent.parent),
            "--out",
            str(run_dir),
            "--resume",
            "--epochs",
            "3",
        ],
    )
    assert cli_result.exit_code == 2 and "was trained on data=" in cli_result.stderr

    (data,) = config.data
    caplog.clear()
    cli_result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            data,
            "--out",
            str(run_dir),
            "--resume",
            "--epochs",
            "3",
            "--cache",
            str(cache),
            "--keep-checkpoint",
        ],
    )
    assert cli_result.exit_code == 0, cli_result.output
    assert "epoch 3/3" in caplog.text and "epoch 2/3" not in caplog.text
    with open(run_dir / "history.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3"]
    # The optimizer state came back: its step counter covers all three epochs.
    checkpoint = keras.saving.load_model(run_dir / "checkpoint.keras")
    assert int(checkpoint.optimizer.iterations) == 3 * 3  # 6 images / batch 2


@pytest.mark.parametrize("recipe", [[], ["--ema-momentum", "0.9"]], ids=["plain", "ema"])
def test_a_resumed_run_ends_bit_for_bit_where_an_uninterrupted_one_does(
    tiny_data, tmp_path, monkeypatch, recipe
):
    """Data order, augmentation and dropout are seeded by step, not by process state, so
    a run stopped after epoch 1 and resumed equals the same run in one go, weight for
    weight and optimizer state for state (moments, and the moving average of the
    weights where there is one); so does a rerun of the same command."""
    import keras

    from fer8.training import loop as training

    def run(out: str, *extra: str, exit_code: int = 0):
        result = CliRunner().invoke(
            cli,
            [
                "train",
                "--data",
                str(tiny_data),
                "--out",
                str(tmp_path / out),
                "--epochs",
                "2",
                "--cache",
                str(tmp_path / "cache"),
                "--keep-checkpoint",
                *extra,
            ],
        )
        assert result.exit_code == exit_code, result.output
        model = keras.saving.load_model(tmp_path / out / "checkpoint.keras")
        return model.get_weights() + [v.numpy() for v in model.optimizer.variables]

    straight = run("straight", *TRAIN_ARGS, *recipe)

    real_begin = training.RunRecorder.on_epoch_begin

    def stop_before_second(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        real_begin(self, epoch, logs)

    with monkeypatch.context() as patch:
        patch.setattr(training.RunRecorder, "on_epoch_begin", stop_before_second)
        run("resumed", *TRAIN_ARGS, *recipe, exit_code=130)
    assert json.loads((tmp_path / "resumed" / "state.json").read_text())["epochs_done"] == 1
    resumed = run("resumed", "--resume")

    assert len(resumed) == len(straight)
    for resumed_array, straight_array in zip(resumed, straight):
        np.testing.assert_array_equal(resumed_array, straight_array)


def test_with_ema_the_saved_model_is_the_moving_average_of_the_weights(tiny_data, tmp_path):
    """--ema-momentum: validation and the saved model use the optimizer's average of the
    weights, while the checkpoint keeps training the weights themselves."""
    import keras

    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(run_dir),
            "--epochs",
            "1",
            "--ema-momentum",
            "0.5",
            "--cache",
            str(tmp_path / "cache"),
            "--keep-checkpoint",
            *TRAIN_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output

    checkpoint = keras.saving.load_model(run_dir / "checkpoint.keras")
    averages = [v.numpy() for v in checkpoint.optimizer._model_variables_moving_average]
    trained = [v.numpy() for v in checkpoint.trainable_variables]
    saved = [v.numpy() for v in load_keras_model(run_dir / "model.fer8")[0].trainable_variables]
    assert len(saved) == len(averages) == len(trained)
    for saved_array, average in zip(saved, averages):
        np.testing.assert_array_equal(saved_array, average)
    assert any(not np.array_equal(a, t) for a, t in zip(averages, trained))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["ema_momentum"] == 0.5


def test_training_runs_on_deterministic_kernels(first_run):
    """Seeds fix every random draw but not the order in which TensorFlow's multi-threaded
    CPU kernels add partial sums: two same-seed runs from ImageNet weights drifted apart
    within 15 steps until training switched to deterministic kernels."""
    # TensorFlow's public API has the switch but not its state, which lives here.
    from tensorflow.python.framework import config as tf_config

    assert tf_config.is_op_determinism_enabled()


def test_augmentation_keeps_shape_and_range():
    import tensorflow as tf

    from fer8.training.augment import Augmentation, augment_batch

    images = tf.random.uniform([8, 32, 32, 3], 0, 255)
    seed = tf.constant([0, 5], tf.int64)
    out = augment_batch(images, Augmentation(), seed).numpy()
    assert out.shape == (8, 32, 32, 3) and out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, images.numpy())
    # Stateless: the same seed gives the same batch, another seed another one.
    np.testing.assert_array_equal(augment_batch(images, Augmentation(), seed).numpy(), out)
    assert not np.allclose(augment_batch(images, Augmentation(), seed + 1).numpy(), out)

    flip_only = Augmentation(
        flip=1.0,
        rotation=0,
        scale=0,
        shift=0,
        brightness=0,
        contrast=0,
        grayscale=0,
        low_resolution=0,
        blur=0,
    )
    flipped = augment_batch(images, flip_only, seed).numpy()
    np.testing.assert_allclose(flipped, images.numpy()[:, :, ::-1], atol=1e-3)


def test_class_weights_soften_imbalance():
    from fer8.training.loop.splits import class_weights

    counts = np.array([100, 25, 1])
    sqrt = class_weights(counts, "sqrt")
    assert sqrt[2] / sqrt[0] == pytest.approx(10.0)
    assert (sqrt * counts).sum() / counts.sum() == pytest.approx(1.0)
    assert class_weights(counts, "balanced")[1] / class_weights(counts, "balanced")[
        0
    ] == pytest.approx(4.0)
    assert (class_weights(counts, "none") == 1).all()


def test_the_training_step_is_compiled_on_jax_but_not_on_tensorflow(monkeypatch):
    import keras

    from fer8.training import loop as training

    assert training.jit_compile() is False  # XLA makes CPU training slower on TensorFlow
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert training.jit_compile() == "auto"  # uncompiled JAX runs op by op


def test_compact_model_file_is_smaller_and_predicts_the_same(first_run, tmp_path):
    from fer8.models.modelfile import read_model_file
    from fer8.training.keras_models import keras_expression_model, save_model

    network, spec = load_keras_model(first_run[0] / "model.fer8")
    # BatchNorm variances beyond float16's range must survive.
    bn = next(layer for layer in network.layers if "bn" in layer.name)
    gamma, beta, mean, variance = bn.get_weights()
    bn.set_weights([gamma, beta, mean, variance + 1e6])
    compact = save_model(network, spec, tmp_path / "compact.fer8", compact=True)
    full = save_model(network, spec, tmp_path / "full.fer8")
    assert _weight_bytes(compact) < 0.6 * _weight_bytes(full)  # float16 kernels
    # Packing is reproducible: the same network and spec give the same bytes.
    twice = save_model(network, spec, tmp_path / "twice.fer8", compact=True)
    assert twice.read_bytes() == compact.read_bytes()
    again = read_model_file(compact)
    assert again.spec == spec
    np.testing.assert_array_equal(
        load_keras_model(compact)[0].get_layer(bn.name).get_weights()[3], variance + 1e6
    )
    crops = np.random.default_rng(1).uniform(-100, 100, (4, 32, 32, 3)).astype(np.float32)
    modified = keras_expression_model(network, spec)  # predicts with the new variance
    np.testing.assert_allclose(again(crops), modified(crops), atol=2e-2)


def _weight_bytes(model_path) -> int:
    """The bytes of all weights in a model file's ONNX graph."""
    import zipfile

    import onnx

    with zipfile.ZipFile(model_path) as archive:
        graph = onnx.load_from_string(archive.read("model.onnx")).graph
    return sum(len(tensor.raw_data) for tensor in graph.initializer)


def test_tf_data_preprocessing_matches_prediction_preprocessing():
    import tensorflow as tf

    from fer8.models.preprocessing import IMAGENET_CAFFE, VGGFACE2
    from fer8.training.loop.inputs import preprocess_tensor

    crops = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    for preprocessing in (IMAGENET_CAFFE, VGGFACE2, replace(IMAGENET_CAFFE, grayscale=True)):
        in_graph = preprocess_tensor(preprocessing, tf.constant(crops, tf.float32)).numpy()
        np.testing.assert_allclose(in_graph, preprocessing.apply(crops), atol=1e-4)


def test_a_model_trained_on_gray_faces_sees_colour_faces_in_gray():
    import cv2

    from fer8.models.preprocessing import IMAGENET_CAFFE
    from fer8.training.loop.inputs import preprocessing_for

    assert preprocessing_for("resnet50", gray=False) == IMAGENET_CAFFE
    gray_model = preprocessing_for("resnet50", gray=True)
    assert gray_model.grayscale and gray_model.mean == IMAGENET_CAFFE.mean
    colour = np.random.default_rng(4).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    gray = np.stack(
        [cv2.cvtColor(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) for c in colour]
    )
    # The same input as the gray version of the face (up to OpenCV's rounding to uint8).
    np.testing.assert_allclose(gray_model.apply(colour), gray_model.apply(gray), atol=0.51)
    # A gray face (FER2013's) is unchanged by the gray step.
    np.testing.assert_allclose(gray_model.apply(gray), IMAGENET_CAFFE.apply(gray), atol=1e-3)


@pytest.fixture(scope="module")
def gray_data(tmp_path_factory, astronaut, hopper):
    """A second source: the same two people, gray and smaller."""
    import cv2

    root = tmp_path_factory.mktemp("gray")
    for folder, photo in (("happy", astronaut), ("sad", hopper)):
        gray = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        for i, image in enumerate(variants(gray[::2, ::2])):
            save(np.ascontiguousarray(image), root / folder / f"{i}.png")
    return root


def test_several_sources_with_weights_validated_each(tiny_data, gray_data, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="fer8.training.loop")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            f"{tiny_data}:2",
            "--data",
            f"{gray_data}:0.5",
            "--val",
            str(tiny_data),
            "--val",
            str(gray_data),
            "--out",
            str(run_dir),
            "--epochs",
            "1",
            "--cache",
            str(tmp_path / "cache"),
            "--keep-checkpoint",
            *[a for a in TRAIN_ARGS if a not in ("--val-fraction", "0.25")],
        ],
    )
    assert result.exit_code == 0, result.output
    # 8 + 8 images drawn 2 and 0.5 times per pass: 20 a pass, 10 steps of 2.
    assert "10/10" in result.stderr or "epoch 1/1" in caplog.text
    checkpoint = __import__("keras").saving.load_model(run_dir / "checkpoint.keras")
    assert int(checkpoint.optimizer.iterations) == 10
    with open(run_dir / "history.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    names = (f"val_accuracy_{tiny_data.name}", f"val_accuracy_{gray_data.name}")
    assert set(names) <= set(row)
    # The run is selected on the mean of the sources' accuracies.
    assert float(row["val_accuracy"]) == pytest.approx(
        (float(row[names[0]]) + float(row[names[1]])) / 2, abs=1e-5
    )
    meta = fer8.load_model(run_dir / "model.fer8").spec.metadata
    assert meta["validation"][names[0][4:]] == pytest.approx(float(row[names[0]]), abs=1e-5)
    sources = meta["data"]["train"]["sources"]
    assert {s["weight"] for s in sources.values()} == {2.0, 0.5}
    assert meta["training"]["data"] == [f"{tiny_data}:2", f"{gray_data}:0.5"]
    assert meta["training"]["detector"] == "yunet"


def test_an_added_class_starts_fresh_and_shared_classes_keep_their_outputs(
    first_run, tiny_data, tmp_path, hopper
):
    """How a user adds *worry* to a model: --init-model with data that has the class."""
    from fer8.training import loop as training

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for i, image in enumerate(variants(hopper[::-1])):  # a new class, from flipped photos
        save(np.ascontiguousarray(image), data / "worried" / f"{i}.png")
    old, _ = load_keras_model(first_run[0] / "model.fer8")
    config = training.TrainConfig(
        data=str(data), image_size=32, init_model=str(first_run[0] / "model.fer8")
    )
    model = training.model_from_file(config, ("happy", "sad", "worry"))
    kernel, bias = model.get_layer("logits").get_weights()
    old_kernel, old_bias = old.get_layer("logits").get_weights()
    np.testing.assert_array_equal(kernel[:, :2], old_kernel)
    np.testing.assert_array_equal(bias[:2], old_bias)
    assert not np.allclose(kernel[:, 2], old_kernel[:, 0]) and bias[2] == 0
    for new, kept in zip(model.get_weights()[:-2], old.get_weights()[:-2]):
        np.testing.assert_array_equal(new, kept)

    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--init-model",
            str(first_run[0] / "model.fer8"),
            "--cache",
            str(first_run[1]),
            *TRAIN_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    assert fer8.load_model(tmp_path / "run" / "model.fer8").labels == ("happy", "sad", "worry")


@pytest.mark.parametrize("faces", ["colour", "gray"])
def test_teachers_probabilities_are_blended_into_the_training_targets(
    first_run, tiny_data, gray_data, faces
):
    """--teacher: each training target is (1 - w) * label + w * the teachers' mean
    probabilities on the clean crop."""
    from fer8.pipeline.classification import classify
    from fer8.training import loop as training
    from fer8.training.datasets import parse_source
    from fer8.training.distillation import load_teachers

    run_dir, cache, _ = first_run
    teacher = str(run_dir / "model.fer8")
    # Framed as the teacher frames faces (unmasked; the bundled model the run would
    # start from masks them), so the teachers read the run's own crops.
    config = training.TrainConfig(
        data=str(tiny_data),
        image_size=32,
        teachers=(teacher,) * 2,
        teacher_weight=0.75,
        mask="none",
    )
    source = parse_source(str(tiny_data if faces == "colour" else gray_data))
    sources = [(source, source.read())]
    labels = ("happy", "sad")
    teachers = load_teachers(config.teachers, labels)
    taught = training.prepare_split(
        sources, labels, config, cache, 1, None, "train", teachers=teachers
    )
    plain = training.prepare_split(
        sources, labels, replace(config, teachers=()), cache, 1, None, "train"
    )
    assert plain.images.shape[-1] == (3 if faces == "colour" else 1)
    probabilities = classify(
        np.repeat(plain.images, 3 // plain.images.shape[-1], axis=-1), fer8.load_model(teacher)
    )
    np.testing.assert_allclose(
        taught.targets, 0.25 * plain.targets + 0.75 * probabilities, atol=1e-5
    )
    np.testing.assert_array_equal(taught.weights, plain.weights)  # classes from the labels
    agreement = taught.summary["teachers"]["agreement"]
    assert agreement == pytest.approx(
        np.mean(probabilities.argmax(1) == plain.targets.argmax(1)), abs=1e-4
    )


def test_a_teachers_reading_is_kept_in_the_cache_for_a_resumed_run(
    first_run, tiny_data, tmp_path, monkeypatch
):
    """A resumed run reads its teachers' probabilities from the crop cache instead of
    running every teacher over every face again; another teacher file reads afresh."""
    import fer8.pipeline.classification as classification
    from fer8.training.datasets import parse_source
    from fer8.training.distillation import load_teachers, teacher_probabilities

    run_dir, cache, _ = first_run
    copy = tmp_path / "teacher.fer8"
    shutil.copy(run_dir / "model.fer8", copy)
    samples = parse_source(str(tiny_data)).read().samples
    labels = ("happy", "sad")
    teachers = load_teachers([str(copy)], labels)
    options = {"cache_root": tmp_path / "cache", "detector": "yunet", "detector_options": {}}
    first = teacher_probabilities(samples, labels, teachers, **options)
    assert list((tmp_path / "cache" / "teachers").glob("*.npy"))

    def no_reading(*args, **kwargs):
        raise AssertionError("the teacher read the faces again")

    monkeypatch.setattr(classification, "classify", no_reading)
    np.testing.assert_array_equal(
        teacher_probabilities(samples, labels, teachers, **options), first
    )
    with copy.open("ab") as file:  # another file: its reading is not the stored one
        file.write(b"\0")
    with pytest.raises(AssertionError, match="read the faces again"):
        teacher_probabilities(samples, labels, teachers, **options)


def test_a_run_with_a_teacher_records_it_and_a_teacher_lacking_a_class_is_refused(
    first_run, tiny_data, tmp_path, hopper
):
    run_dir, cache, _ = first_run
    teacher = run_dir / "model.fer8"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--teacher",
            str(teacher),
            "--teacher-weight",
            "0.6",
            "--cache",
            str(cache),
            *TRAIN_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["teachers"] == [str(teacher)] and config["teacher_weight"] == 0.6
    meta = fer8.load_model(tmp_path / "run" / "model.fer8").spec.metadata
    assert meta["data"]["train"]["teachers"]["read"] == 6
    assert "teachers" not in meta["data"]["val"]  # validated on the labels

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for i, image in enumerate(variants(hopper[::-1])):
        save(np.ascontiguousarray(image), data / "worried" / f"{i}.png")
    refused = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run2"),
            "--epochs",
            "1",
            "--teacher",
            str(teacher),
            "--cache",
            str(tmp_path / "crops"),
            *TRAIN_ARGS,
        ],
    )
    assert refused.exit_code == 1
    assert f"{teacher}: teacher has no class worry" in refused.stderr
    assert not (tmp_path / "run2").exists()
    assert not any((tmp_path / "crops").rglob("*.*"))  # refused before framing any face
    missing = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run3"),
            "--teacher",
            str(tmp_path / "nope.fer8"),
            *TRAIN_ARGS,
        ],
    )
    assert missing.exit_code == 2 and "nope.fer8: no such model file" in missing.output


def _train_masked(tiny_data, tmp_path, cache, mask: str):
    """A one-epoch CLI run on ``tiny_data`` with ``--mask MASK``; its model."""
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--cache",
            str(cache),
            "--mask",
            mask,
            *TRAIN_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    return fer8.load_model(tmp_path / "run" / "model.fer8")


def _predicted_and_aligned(model, photo):
    """The model's prediction for the photo's face, and that face as aligned (unmasked)."""
    image = fer8.load_image(photo)
    box = fer8.detect(image)[0]
    face = fer8.align(image, box, fer8.landmarks(image, box), size=224)
    return fer8.Predictor(model).predict(image).faces[0], face


def test_a_masked_run_trains_on_cut_out_faces_and_its_model_masks_at_prediction(
    tiny_data, tmp_path, astronaut_path
):
    from PIL import Image

    from fer8.pipeline.masking import mask_face

    cache = tmp_path / "cache"
    model = _train_masked(tiny_data, tmp_path, cache, "contour")
    assert model.spec.preprocessing.mask == "contour"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["mask"] == "contour"
    # Every cached training crop is a cut-out face: black corners, a face in the middle.
    crops = [np.asarray(Image.open(p)) for p in cache.rglob("*.png")]
    assert len(crops) == 8
    for crop in crops:
        assert crop[:8, :8].max() == 0 and crop[-8:, -8:].max() == 0 and crop[112, 112].any()
    # Prediction cuts the face out the same way (the unmasked crop would read otherwise).
    predicted, face = _predicted_and_aligned(model, astronaut_path)
    expected = fer8.classify([mask_face(face).image], model)[0]
    np.testing.assert_allclose(
        [predicted.probabilities[label] for label in model.labels], expected, atol=1e-6
    )


def test_a_random_masked_run_masks_training_faces_only_and_its_model_does_not_mask(
    tiny_data, tmp_path, monkeypatch, astronaut_path
):
    """--mask random: the training split carries contour masks (its crops unmasked), the
    validation split none, and the model file records no mask: prediction unmasked."""
    from PIL import Image

    from fer8.training import loop
    from fer8.training.crops import unpack_masks

    splits = {}
    dataset = loop.make_dataset

    def recording(split, config, preprocessing, *, training, **kwargs):
        splits["train" if training else "val"] = split
        return dataset(split, config, preprocessing, training=training, **kwargs)

    monkeypatch.setattr(loop, "make_dataset", recording)
    cache = tmp_path / "cache"
    model = _train_masked(tiny_data, tmp_path, cache, "random")
    assert model.spec.preprocessing.mask is None
    assert json.loads((tmp_path / "run" / "config.json").read_text())["mask"] == "random"
    train, val = splits["train"], splits["val"]
    assert val.masks is None and train.masks is not None
    inside = unpack_masks(train.masks, 32)
    assert inside.shape == (len(train.images), 32, 32)
    # The crops are kept as aligned (background in the corners); their masks cut it off.
    for crops in (train.images, val.images):
        assert all(crop[:3, :3].any() and crop[-3:, -3:].any() for crop in crops)
    assert not inside[:, :3, :3].any() and inside[:, 16, 16].all()
    # The training crops are cached with their masks (RGBA); the validation crops are
    # the unmasked run's, under its key.
    modes = sorted(Image.open(p).mode for p in cache.rglob("*.png"))
    assert modes == ["RGB"] * len(val.images) + ["RGBA"] * len(train.images)
    # Prediction frames the face as aligned, unmasked.
    predicted, face = _predicted_and_aligned(model, astronaut_path)
    np.testing.assert_allclose(
        [predicted.probabilities[label] for label in model.labels],
        fer8.classify([face.image], model)[0],
        atol=1e-6,
    )


def test_a_run_reads_its_data_from_an_archive(tiny_data, tmp_path):
    """--data DATA.tar.gz, as ../shared ships every dataset: trained on what it holds,
    and recorded as the archive."""
    import tarfile

    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_data, arcname="tiny")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(archive),
            "--out",
            str(run_dir),
            "--epochs",
            "1",
            "--cache",
            str(tmp_path / "cache"),
            *TRAIN_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    data = fer8.load_model(run_dir / "model.fer8").spec.metadata["data"]["train"]
    assert data["per_class"] == {"happy": 3, "sad": 3}
    assert data["path"] == str(archive)
