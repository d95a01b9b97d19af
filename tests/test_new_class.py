"""``fer8 train --keep-classes``: a model gains a class from a handful of photos and keeps
its own.

The start model is the tiny random-weight CNN of the shared fixtures, given a feature
bank made from variants of Grace Hopper's portrait (every old class: faces that are not
the new class); the new class, *worry*, is learnt from variants of the astronaut's
portrait, and a ninth, *pain*, from variants of scikit-image's cat (face-free: the
whole picture is the crop).
"""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import LABELS, save

import fer8
from fer8.cli import cli
from fer8.errors import ModelFormatError
from fer8.models.classifier_head import add_classes as widen_graph
from fer8.models.classifier_head import head_weights
from fer8.models.feature_bank import FeatureBank, pooled_features, read_feature_bank
from fer8.models.modelfile import BANK_MEMBER, read_graph, read_network_config
from fer8.models.writer import with_member
from fer8.training.bank import build_bank
from fer8.training.new_class import NoFeatureBankError, add_classes
from fer8.training.new_columns import choose_offset, guarded_offset


def variants(image: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    """``count`` variants of a photo: mirrored, lighter or darker, slightly cropped."""
    random = np.random.default_rng(seed)
    h, w = image.shape[:2]
    out = []
    for i in range(count):
        top, left = random.integers(0, h // 12, 2)
        part = image[top : h - h // 12 + top, left : w - w // 12 + left]
        part = part[:, ::-1] if i % 2 else part
        gain = random.uniform(0.6, 1.2)
        out.append(np.ascontiguousarray(np.clip(part * gain, 0, 255).astype(np.uint8)))
    return out


@pytest.fixture(scope="module")
def banked_model(tiny_model_path, hopper, tmp_path_factory):
    """The tiny model with a bank of 5 Hopper variants per class (2 held out)."""
    root = tmp_path_factory.mktemp("old")
    for index, label in enumerate(LABELS):
        for i, image in enumerate(variants(hopper, 5, seed=index)):
            save(image, root / label / f"{i}.png")
    path = tmp_path_factory.mktemp("banked") / "tiny.fer8"
    bank = build_bank(tiny_model_path, [str(root)], per_class=5, held_out=0.4, cache="")
    return with_member(tiny_model_path, BANK_MEMBER, bank.to_bytes(), path)


@pytest.fixture(scope="module")
def worry_data(astronaut, tmp_path_factory):
    root = tmp_path_factory.mktemp("worry")
    for i, image in enumerate(variants(astronaut, 12, seed=1)):
        save(image, root / "worry" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def worry_run(banked_model, worry_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "worry"
    args = ["train", "--data", worry_data, "--keep-classes", "--out", run]
    args += ["--init-model", banked_model, "--cache", tmp_path_factory.mktemp("crops")]
    result = CliRunner().invoke(cli, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return run, result


def test_bank_round_trips_within_a_quantisation_step(banked_model, tiny_model_path):
    bank = read_feature_bank(banked_model)
    assert bank is not None and bank.labels == LABELS
    assert bank.counts == dict.fromkeys(LABELS, 5)
    assert bank.held_out.sum() == 2 * len(LABELS)
    assert read_feature_bank(tiny_model_path) is None
    again = FeatureBank.from_bytes(bank.to_bytes())
    step = (bank.features.max(0) - bank.features.min(0)) / 255
    assert np.all(np.abs(again.features - bank.features) <= step / 2 + 1e-6)


def test_new_class_keeps_old_labels_and_answers(worry_run, banked_model, hopper, astronaut):
    run, result = worry_run
    assert "worry: precision" in result.output and "accuracy" in result.output
    old, new = fer8.load_model(banked_model), fer8.load_model(run / "model.fer8")
    assert new.labels == (*LABELS, "worry")

    before = fer8.Predictor(old).predict(hopper).faces[0]
    after = fer8.Predictor(new).predict(hopper).faces[0]
    assert after.label == before.label
    # The old outputs are untouched: renormalised without worry, they are what they were.
    kept = np.array([after.probabilities[label] for label in LABELS])
    was = np.array([before.probabilities[label] for label in LABELS])
    assert np.allclose(kept / kept.sum(), was, atol=1e-5)
    assert fer8.Predictor(new).predict(astronaut).faces[0].label == "worry"

    report = json.loads((run / "report.json").read_text())
    assert report["new_labels"] == ["worry"]
    assert report["old_accuracy"]["held-out bank"]["faces"] == 2 * len(LABELS)
    spec = json.loads(zipfile.ZipFile(run / "model.fer8").read("fer8.json"))
    assert spec["metadata"]["keep_classes"][0]["new_labels"] == ["worry"]
    # The new model's bank has the old rows and worry's photos.
    bank = read_feature_bank(run / "model.fer8")
    assert bank is not None and bank.counts["worry"] >= 10


def test_new_model_runs_everywhere(worry_run, astronaut_path, tmp_path):
    run, _ = worry_run
    model = run / "model.fer8"
    runner = CliRunner()
    result = runner.invoke(cli, ["predict", str(astronaut_path), "--model", str(model)])
    assert result.exit_code == 0 and "worry" in result.output, result.output

    onnx_path = tmp_path / "model.onnx"
    result = runner.invoke(
        cli, ["export", "--model", str(model), "--format", "onnx", "--out", str(onnx_path)]
    )
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 48, 48, 3), np.float32)})
    assert out[0].shape == (1, 8)

    data = tmp_path / "eval"
    save(fer8.load_image(astronaut_path), data / "happy" / "a.png")
    result = runner.invoke(cli, ["evaluate", "--model", str(model), "--data", str(data)])
    assert result.exit_code == 0, result.output

    calibrated = tmp_path / "calibrated.fer8"
    args = ["calibrate", "--model", model, "--data", data, "--out", calibrated]
    result = runner.invoke(cli, list(map(str, args)))
    assert result.exit_code == 0, result.output
    assert fer8.load_model(calibrated).labels[-1] == "worry"
    assert read_feature_bank(calibrated) is not None  # a ninth class can follow


def test_the_new_model_gets_an_int8_network(worry_run, astronaut):
    """fer8 quantize takes a model made by --keep-classes, and the int8 network it adds
    reads the new class too."""
    pytest.importorskip("onnx")
    import cv2

    from fer8.models.quantize import quantize_model_file

    model = worry_run[0] / "model.fer8"
    out = worry_run[0].parent / "worry-int8.fer8"
    crops = np.stack([cv2.resize(v, (48, 48)) for v in variants(astronaut, 16, seed=5)])
    summary = quantize_model_file(model, out, crops, float_first=0, float_last=False)
    assert summary["faces"] == 16
    int8 = fer8.load_model(out)
    assert int8.runtime == "onnxruntime (int8)" and int8.labels == fer8.load_model(model).labels
    face = fer8.Predictor(out).predict(astronaut).faces[0]
    assert list(face.probabilities)[-1] == "worry"
    assert math.isclose(sum(face.probabilities.values()), 1.0, abs_tol=1e-4)


@pytest.mark.parametrize("float_last", [True, False])
def test_an_int8_start_model_keeps_its_int8_network(
    banked_model, worry_data, astronaut, tmp_path, caplog, float_last
):
    """The columns were fitted on the int8 network's features, so its int8 network gains
    them too: the new model runs int8, its old classes' probabilities keep their ratios,
    and no shape recorded in the graph says the old number of classes. An int8 network
    whose classifier is quantized too cannot be widened: it is left out, with a warning."""
    onnx = pytest.importorskip("onnx")
    import cv2

    from fer8.models.modelfile import INT8_MEMBER
    from fer8.models.quantize import quantize_model_file

    start = tmp_path / "start-int8.fer8"
    crops = np.stack([cv2.resize(v, (48, 48)) for v in variants(astronaut, 16, seed=5)])
    quantize_model_file(banked_model, start, crops, float_first=0, float_last=float_last)
    path, _ = add_classes(worry_data, tmp_path / "run", init_model=start, cache="")
    new, old = fer8.load_model(path), fer8.load_model(start)
    if not float_last:
        assert new.runtime == "onnxruntime" and "int8 network is not carried over" in caplog.text
        return
    assert INT8_MEMBER in zipfile.ZipFile(path).namelist()
    assert new.runtime == "onnxruntime (int8)" and new.labels[-1] == "worry"
    batch = new.spec.preprocessing.apply(crops)
    after, before = new(batch), old(batch)
    assert np.allclose(after[:, :-1] / after[:, :-1].sum(1, keepdims=True), before, atol=1e-5)
    graph = onnx.load_from_string(read_graph(path, precision="int8")).graph
    for value in [*graph.output, *graph.value_info]:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims[1:2] != [len(LABELS)], value.name


@pytest.mark.slow
def test_keras_reads_the_widened_network(worry_run):
    from fer8.training.keras_models import load_keras_model

    keras_model, spec = load_keras_model(worry_run[0] / "model.fer8")
    assert keras_model.output_shape == (None, 8) and spec.labels[-1] == "worry"
    crops = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype(np.float32)
    onnx_model = fer8.load_model(worry_run[0] / "model.fer8")
    by_keras = np.asarray(keras_model(spec.preprocessing.apply(crops.astype(np.uint8))))
    by_onnx = onnx_model(spec.preprocessing.apply(crops.astype(np.uint8)))
    assert np.allclose(by_keras, by_onnx, atol=1e-3)


def test_a_ninth_class(worry_run, tmp_path, astronaut, hopper):
    from skimage import data as samples

    root = tmp_path / "pain"
    for i, image in enumerate(variants(samples.chelsea(), 10, seed=2)):
        save(image[:, 100:400], root / "pain" / f"{i}.png")
    first = worry_run[0] / "model.fer8"
    path, report = add_classes(root, tmp_path / "run", init_model=first, cache="")
    model = fer8.load_model(path)
    assert model.labels == (*LABELS, "worry", "pain") and report.new_labels == ("pain",)
    # worry's column is kept as it was.
    old_w, old_b = head_weights(read_graph(first), read_network_config(first) or {})
    new_w, new_b = head_weights(read_graph(path), read_network_config(path) or {})
    assert np.array_equal(new_w[:, :8], old_w) and np.array_equal(new_b[:8], old_b)
    assert fer8.Predictor(model).predict(astronaut).faces[0].label == "worry"


def test_pooled_features_give_the_logits(banked_model, hopper):
    model = fer8.load_model(banked_model)
    crops = np.stack([np.asarray(v[:48, :48]) for v in variants(hopper, 3, seed=0)])
    features = pooled_features(model, crops)
    kernel, bias = head_weights(read_graph(banked_model), read_network_config(banked_model) or {})
    logits = features @ kernel + bias
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert np.allclose(
        model.with_temperature(1.0)(model.spec.preprocessing.apply(crops)), expected, atol=1e-4
    )


def test_offset_costs_at_most_the_allowed_drop():
    random = np.random.default_rng(0)
    old = random.normal(size=(1000, 7))
    new = random.normal(size=(1000, 1))
    classes = old.argmax(1)  # all right before
    offset = choose_offset(old, new, classes, 1.0)
    after = np.concatenate([old, new + offset], 1).argmax(1)
    assert (after != classes).sum() == 10
    assert choose_offset(old, new, classes, 0.0) < choose_offset(old, new, classes, 1.0)


def test_too_few_faces_to_see_the_rate_keep_the_offset_below_the_normal_tail():
    """40 faces cannot show 0.5 points: besides no face changing, the offset stays
    under their gaps' mean less 2.58 deviations, so that of 20,000 more faces like
    them about 0.5% or fewer change."""
    random = np.random.default_rng(1)
    old = np.zeros((20040, 2))
    old[:, 0] = 5.0
    new = random.normal(0.0, 1.0, (20040, 1))
    classes = np.zeros(20040, np.int64)
    offset = choose_offset(old[:40], new[:40], classes[:40], 0.5)
    gaps = 5.0 - new[:40, 0]
    assert offset < gaps.min()
    assert offset <= gaps.mean() - 2.57 * gaps.std(ddof=1)
    lost = (np.concatenate([old, new + offset], 1)[40:].argmax(1) != 0).mean()
    assert lost < 0.01
    # Enough faces to see the rate: the empirical guard alone, as before.
    many = choose_offset(old, new, classes, 0.5)
    changed = (np.concatenate([old, new + many], 1).argmax(1) != 0).sum()
    assert 95 <= changed <= 100  # just under the 101st gap (a gap within 0.001 may go too)


def test_each_class_and_kind_of_face_is_guarded_on_its_own():
    """900 faces of class 0 and 100 of class 1, all read right; the new logit comes
    closest on class 1's gray faces. Guarded as one set, 1 point would let 10 faces go,
    all of class 1; guarded apart, class 1's gray faces may lose 1 point of their own."""
    random = np.random.default_rng(0)
    classes = np.repeat([0, 1], [900, 100])
    gray = np.arange(1000) % 2 == 0
    old = np.zeros((1000, 2))
    old[np.arange(1000), classes] = 5.0
    new = random.uniform(-5, 0, (1000, 1))
    new[(classes == 1) & gray] += 4.0
    pooled = choose_offset(old, new, classes, 1.0)
    apart = guarded_offset(old, new, classes, gray, 1.0)
    assert apart < pooled
    after = np.concatenate([old, new + apart], 1).argmax(1)
    assert (after != classes).sum() == 0  # 1% of 50 gray faces of class 1 is no face
    assert ((np.concatenate([old, new + pooled], 1).argmax(1) != classes) & (classes == 1)).sum()


def test_a_class_never_read_right_limits_nothing():
    """Faces read wrong stay wrong whatever the offset: a group with no face read right
    does not hold the offset down; with none anywhere, there is no offset."""
    old = np.array([[5.0, 0.0], [5.0, 0.0], [5.0, 0.0]])
    new = np.full((3, 1), -5.0)
    classes, gray = np.array([0, 0, 1]), np.zeros(3, bool)
    assert choose_offset(old[2:], new[2:], classes[2:], 0.5) == np.inf
    assert guarded_offset(old, new, classes, gray, 100.0) == 11.0  # class 0's: all may go
    assert guarded_offset(old[2:], new[2:], classes[2:], gray[2:], 0.5) == 0.0


def test_errors_are_one_clear_line(tiny_model_path, banked_model, worry_data, tmp_path):
    with pytest.raises(NoFeatureBankError, match="no feature bank"):
        add_classes(worry_data, tmp_path / "a", init_model=tiny_model_path, cache="")
    only_old = tmp_path / "old"
    save(np.zeros((64, 64, 3), np.uint8), only_old / "happy" / "0.png")
    result = CliRunner().invoke(
        cli,
        ["train", "--data", str(only_old), "--keep-classes", "--out", str(tmp_path / "b")]
        + ["--init-model", str(banked_model)],
    )
    assert result.exit_code != 0
    assert "every class in it (happy) is one the model has" in result.output
    # A run folder is never overwritten.
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "model.fer8").write_bytes(b"mine")
    result = CliRunner().invoke(
        cli,
        ["train", "--data", str(worry_data), "--keep-classes", "--out", str(tmp_path / "c")]
        + ["--init-model", str(banked_model)],
    )
    assert result.exit_code == 2 and "not empty" in result.output
    assert (tmp_path / "c" / "model.fer8").read_bytes() == b"mine"


def test_max_old_drop_lets_the_new_class_take_more(worry_run, banked_model, worry_data, tmp_path):
    """--max-old-drop reaches the offset: allowing every old face to go gives a larger
    offset than the default half point; a negative allowance is a usage error."""
    base = ["train", "--data", worry_data, "--keep-classes", "--init-model", banked_model]
    base += ["--cache", tmp_path / "crops"]
    loose = tmp_path / "loose"
    result = CliRunner().invoke(
        cli, list(map(str, [*base, "--out", loose, "--max-old-drop", "100"]))
    )
    assert result.exit_code == 0, result.output
    assert "may lose 100 points" in result.output
    strict = json.loads((worry_run[0] / "report.json").read_text())
    report = json.loads((loose / "report.json").read_text())
    assert (strict["max_old_drop"], report["max_old_drop"]) == (0.5, 100.0)
    assert report["offset"] > strict["offset"]
    result = CliRunner().invoke(
        cli, list(map(str, [*base, "--out", tmp_path / "bad", "--max-old-drop", "-1"]))
    )
    assert result.exit_code == 2 and "max-old-drop" in result.output
    # Without --keep-classes it would do nothing: said, not ignored.
    args = ["train", "--data", worry_data, "--out", tmp_path / "full", "--max-old-drop", "2"]
    result = CliRunner().invoke(cli, list(map(str, args)))
    assert result.exit_code == 2
    assert "--max-old-drop applies to --keep-classes only" in result.output


def test_widening_refuses_a_head_it_cannot_extend(banked_model):
    config = read_network_config(banked_model) or {}
    graph = read_graph(banked_model)
    with pytest.raises(ModelFormatError, match="do not fit"):
        widen_graph(graph, config, np.zeros((3, 1)), np.zeros(1))


def test_keep_classes_runs_without_the_train_extra(banked_model, worry_data, tmp_path):
    """The light install: TensorFlow, Keras, onnx and h5py are absent."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'onnx', 'h5py'):\n"
        "    sys.modules[name] = None  # not installed\n"
        "from fer8.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    args = ["train", "--data", worry_data, "--keep-classes", "--out", tmp_path / "run"]
    args += ["--init-model", banked_model, "--cache", tmp_path / "crops"]
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert fer8.load_model(tmp_path / "run" / "model.fer8").labels[-1] == "worry"


def test_the_server_answers_with_the_new_class(worry_run, astronaut_path):
    from fastapi.testclient import TestClient

    from fer8.serving.server import create_app

    app = create_app(fer8.Predictor(worry_run[0] / "model.fer8"))
    with TestClient(app) as client, astronaut_path.open("rb") as file:
        response = client.post(
            "/v1/predict?explain=true", files={"file": ("a.png", file, "image/png")}
        )
    assert response.status_code == 200, response.text
    face = response.json()["faces"][0]
    assert face["label"] == "worry" and len(face["probabilities"]) == 8


def test_members_made_from_the_old_network_are_left_out(banked_model, worry_data, tmp_path, caplog):
    """An int8 copy of the graph, say: it would still give the old classes only."""
    start = with_member(banked_model, "model_int8.onnx", b"old graph", tmp_path / "start.fer8")
    path, _ = add_classes(worry_data, tmp_path / "run", init_model=start, cache="")
    assert "model_int8.onnx not carried over" in caplog.text
    assert "model_int8.onnx" not in zipfile.ZipFile(path).namelist()
