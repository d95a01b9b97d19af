"""``fer8 evaluate``: exact confusion matrix on a hand-built case, JSON shape, picture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fer8.cli import cli
from fer8.evaluation import confusion

from conftest import save


@pytest.fixture(scope="module")
def brightness_model(tmp_path_factory):
    """A model whose answer is known: bright crops are 'happy', dark ones 'sad'."""
    import keras

    from fer8.modelfile import ModelSpec, save_model
    from fer8.preprocessing import IMAGENET_CAFFE

    inputs = keras.Input((48, 48, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)  # about brightness - 115 per channel
    logits = keras.layers.Dense(2, name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    model = keras.Model(inputs, outputs)
    model.get_layer("logits").set_weights([np.array([[1.0, -1.0]] * 3), np.zeros(2)])
    spec = ModelSpec(("happy", "sad"), 48, IMAGENET_CAFFE, "test-brightness")
    return save_model(model, spec, tmp_path_factory.mktemp("models") / "brightness.fer8")


@pytest.fixture()
def labelled(tmp_path):
    bright, dark = np.full((48, 48, 3), 220, np.uint8), np.full((48, 48, 3), 20, np.uint8)
    files = {"happy": [bright, bright, dark], "Sadness": [dark, dark, bright], "NE": [bright]}
    for folder, images in files.items():
        for i, image in enumerate(images):
            save(image, tmp_path / folder / f"{i}.png")
    save(np.full((300, 300, 3), 220, np.uint8), tmp_path / "happy" / "no_face.png")  # a photo
    (tmp_path / "happy" / "corrupt.png").write_bytes(b"\x89PNG\r\n broken")
    return tmp_path


def test_confusion_matrix_and_figures_by_hand():
    truth = ["happy", "happy", "happy", "sad", "sad", "neutral", "sad"]
    guess = ["happy", "happy", "sad", "sad", "happy", "happy", None]
    evaluation = confusion(truth, guess, ("happy", "sad"))
    assert evaluation.labels == ("happy", "neutral", "sad")
    assert evaluation.counts.tolist() == [[2, 0, 1], [1, 0, 0], [1, 0, 1]]
    assert evaluation.no_face == 1 and evaluation.n == 7
    assert evaluation.accuracy == pytest.approx(3 / 6)
    assert evaluation.accuracy_all == pytest.approx(3 / 7)
    per_class = evaluation.per_class()
    assert per_class["happy"] == pytest.approx(
        {"precision": 2 / 4, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert per_class["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_class["sad"] == pytest.approx(
        {"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2})
    assert evaluation.macro_f1 == pytest.approx((4 / 7 + 0 + 1 / 2) / 3)


def test_evaluate_gives_the_exact_confusion_matrix(labelled, brightness_model, tmp_path, caplog):
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(labelled), "--model",
                                      str(brightness_model), "--format", "json",
                                      "--out", str(out)])
    assert result.exit_code == 1, result.output  # the corrupt file is an input failure
    report = json.loads(result.stdout)
    assert set(report) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix",
                           "no_face", "n"}
    assert report["confusion_matrix"] == {
        "labels": ["happy", "neutral", "sad"],
        "counts": [[2, 0, 1], [1, 0, 0], [1, 0, 2]],
    }
    assert report["no_face"] == 1 and report["unreadable"] == 1 and report["n"] == 8
    assert report["accuracy"] == pytest.approx(4 / 7)
    assert report["per_class"]["sad"]["support"] == 3
    assert report["per_class"]["happy"]["precision"] == pytest.approx(2 / 4)
    assert "corrupt.png: not an image" in caplog.text
    assert json.loads((out / "evaluation.json").read_text())["confusion_matrix"] == \
        report["confusion_matrix"]
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_table(labelled, brightness_model):
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(labelled), "--model",
                                      str(brightness_model), "--format", "table"])
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
    assert lines[1].split()[0] == "Happy" and lines[-1].startswith("accuracy 0.5714")
