"""Calibration: the expected calibration error by hand, a temperature fitted back from
synthetic data, and a model file's temperature applied alike by ONNX Runtime, Keras and
the exported ONNX file, while a file without one predicts exactly as before."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import save

import fer8
from fer8.cli import cli
from fer8.models.calibration import (
    Reliability,
    apply_temperature,
    fit_temperature,
    negative_log_likelihood,
)
from fer8.models.modelfile import (
    ONNX_MEMBER,
    SPEC_MEMBER,
    ModelSpec,
    read_graph,
    read_model_file,
    read_spec,
)
from fer8.models.onnx_wire import with_metadata
from fer8.models.preprocessing import IMAGENET_CAFFE
from fer8.models.runtime import OnnxNetwork
from fer8.models.writer import rewrite_spec


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _batch(seed: int = 0, n: int = 6) -> np.ndarray:
    """Random crops, preprocessed as the tiny model's spec says."""
    crops = np.random.default_rng(seed).integers(0, 256, (n, 48, 48, 3), dtype=np.uint8)
    return IMAGENET_CAFFE.apply(crops)


@pytest.fixture(scope="module")
def calibrated_path(tiny_model_path, tmp_path_factory):
    """The tiny model with a temperature of 2.5 in its spec, network untouched."""
    spec = read_spec(tiny_model_path)
    return rewrite_spec(
        tiny_model_path,
        replace(spec, temperature=2.5),
        tmp_path_factory.mktemp("calibrated") / "tiny-t.fer8",
    )


def test_ece_of_a_hand_computed_case():
    # Bins of width 1/15: 0.95 -> bin 14, 0.9 -> bin 13, 0.55 -> bin 8, 1.0 -> bin 14.
    confidences = [0.95, 0.95, 0.9, 0.55, 0.55, 1.0]
    correct = [True, False, True, False, True, True]
    reliability = Reliability.from_predictions(confidences, correct)
    assert reliability.bins == 15 and reliability.n == 6
    assert reliability.counts[14] == 3 and reliability.counts[13] == 1
    assert reliability.counts[8] == 2 and sum(reliability.counts) == 6
    # bin 14: 2 right, confidences 2.9 -> 0.9; bin 13: 1 right of 0.9 -> 0.1;
    # bin 8: 1 right of 1.1 -> 0.1. ECE = (0.9 + 0.1 + 0.1) / 6.
    assert reliability.ece == pytest.approx(1.1 / 6)
    assert reliability.accuracy()[14] == pytest.approx(2 / 3)
    assert reliability.confidence()[8] == pytest.approx(0.55)
    assert reliability.accuracy()[0] is None
    # The same from probabilities: confidence is the row maximum, right is its argmax.
    probabilities = np.array(
        [[0.95, 0.05], [0.05, 0.95], [0.9, 0.1], [0.45, 0.55], [0.55, 0.45], [1.0, 0.0]]
    )
    truth = [0, 0, 0, 0, 0, 0]
    assert Reliability.from_probabilities(probabilities, truth) == reliability
    # A perfectly calibrated bin has no error; bins add up.
    assert Reliability.from_predictions([0.5, 0.5], [True, False]).ece == 0.0
    assert (reliability + reliability).ece == pytest.approx(reliability.ece)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fitted_temperature_recovers_a_known_one(true_temperature):
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (20000, 7))
    # Labels drawn from softmax(z / T): the model's softmax(z) is off by exactly T.
    calibrated = _softmax(logits / true_temperature)
    truth = (calibrated.cumsum(axis=1) > rng.random((len(logits), 1))).argmax(axis=1)
    probabilities = _softmax(logits)
    fitted = fit_temperature(probabilities, truth)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    # It is the minimum of the likelihood, and it lowers the calibration error.
    nll = negative_log_likelihood(probabilities, truth, fitted)
    assert nll < negative_log_likelihood(probabilities, truth, fitted * 1.1)
    assert nll < negative_log_likelihood(probabilities, truth, fitted / 1.1)
    before = Reliability.from_probabilities(probabilities, truth).ece
    after = Reliability.from_probabilities(apply_temperature(probabilities, fitted), truth).ece
    assert after < 0.02 < before


def test_apply_temperature_is_softmax_of_scaled_logits():
    logits = np.random.default_rng(1).normal(0, 2, (5, 7))
    np.testing.assert_allclose(
        apply_temperature(_softmax(logits), 1.7), _softmax(logits / 1.7), atol=1e-6
    )
    # A probability of 0 (float32 underflow) does not give NaN.
    assert np.isfinite(apply_temperature(np.array([[1.0, 0.0, 0.0]]), 2.0)).all()


@pytest.mark.slow
def test_a_temperature_is_applied_by_onnx_runtime_and_keras(tiny_model_path, calibrated_path):
    from fer8.training.keras_models import keras_expression_model, load_keras_model

    batch = _batch()
    raw = OnnxNetwork(read_graph(tiny_model_path))(batch)
    expected = _softmax(np.log(raw.astype(np.float64)) / 2.5)
    model = read_model_file(calibrated_path)
    assert model.spec.temperature == 2.5
    np.testing.assert_allclose(model(batch), expected, atol=1e-6)
    assert not np.allclose(model(batch), raw, atol=1e-3)  # it did change the confidences
    assert (model(batch).argmax(1) == raw.argmax(1)).all()  # and no label
    keras_model, spec = load_keras_model(calibrated_path)
    assert spec.temperature == 2.5
    np.testing.assert_allclose(
        keras_expression_model(keras_model, spec)(batch), expected, atol=1e-5
    )
    # with_temperature(1) gives the network's own probabilities back.
    np.testing.assert_array_equal(model.with_temperature(1.0)(batch), raw)


def test_the_exported_onnx_file_has_the_temperature_built_in(calibrated_path, tmp_path):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "tiny-t.onnx"
    result = CliRunner().invoke(
        cli, ["export", "--model", str(calibrated_path), "--format", "onnx", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    batch = _batch(5)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "features"]
    (exported,) = session.run(["probabilities"], {"input": batch})
    np.testing.assert_allclose(exported, read_model_file(calibrated_path)(batch), atol=1e-6)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert float(props["fer8.temperature"]) == 2.5
    assert json.loads(props["fer8.spec"])["temperature"] == 2.5


def test_a_file_without_a_temperature_predicts_exactly_as_before(tiny_model_path, tmp_path):
    with zipfile.ZipFile(tiny_model_path) as archive:
        stored = json.loads(archive.read(SPEC_MEMBER))
        graph = archive.read(ONNX_MEMBER)
    assert "temperature" not in stored
    assert ModelSpec.from_dict(stored).temperature == 1.0
    batch = _batch(2)
    np.testing.assert_array_equal(
        read_model_file(tiny_model_path)(batch), OnnxNetwork(graph)(batch)
    )
    # Its spec is written back unchanged (no temperature key), so are its file's bytes,
    # and its exported graph is the stored one (its metadata aside).
    copy = rewrite_spec(tiny_model_path, read_spec(tiny_model_path), tmp_path / "copy.fer8")
    assert copy.read_bytes() == tiny_model_path.read_bytes()
    out = tmp_path / "tiny.onnx"
    assert (
        CliRunner()
        .invoke(cli, ["export", "--model", str(tiny_model_path), "--out", str(out)])
        .exit_code
        == 0
    )
    assert with_metadata(out.read_bytes(), {}) == with_metadata(graph, {})


def test_a_temperature_must_be_positive(tiny_model_path):
    spec = read_spec(tiny_model_path)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            replace(spec, temperature=bad)


@pytest.fixture()
def labelled_crops(tmp_path):
    """Class folders of 48x48 random-noise crops: the tiny model gives them varied,
    unconfident answers."""
    rng = np.random.default_rng(11)
    for label in ("happy", "sad", "angry"):
        for i in range(12):
            save(
                rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
                tmp_path / "faces" / label / f"{i}.png",
            )
    return tmp_path / "faces"


def test_calibrate_writes_a_fitted_temperature(tiny_model_path, labelled_crops, tmp_path):
    out = tmp_path / "calibrated.fer8"
    args = [
        "calibrate",
        "--model",
        str(tiny_model_path),
        "--data",
        str(labelled_crops),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "ECE before" in result.stdout and "temperature" in result.stderr
    spec = read_spec(out)
    calibration = spec.metadata["calibration"]
    assert spec.temperature == calibration["temperature"] != 1.0
    assert calibration["fitted_on"] == "faces" and calibration["n"] == 36
    assert calibration["nll_after"] <= calibration["nll_before"]
    assert set(calibration["per_dataset"]) == {"faces"}
    # The temperature is the one that fits the model's own probabilities of these faces.
    from fer8.training.datasets import read_dataset
    from fer8.training.evaluation import predicted_probabilities

    predictor = fer8.Predictor(tiny_model_path)
    probabilities, truth = predicted_probabilities(predictor, read_dataset(labelled_crops))
    assert spec.temperature == pytest.approx(fit_temperature(probabilities, truth), rel=1e-3)
    # The network is copied as it was.
    with zipfile.ZipFile(out) as new, zipfile.ZipFile(tiny_model_path) as old:
        assert new.read(ONNX_MEMBER) == old.read(ONNX_MEMBER)

    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert CliRunner().invoke(cli, [*args, "--force"]).exit_code == 0


def test_evaluate_reports_ece_and_draws_a_reliability_diagram(
    tiny_model_path, labelled_crops, tmp_path
):
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--model",
            str(tiny_model_path),
            "--data",
            str(labelled_crops),
            "--format",
            "json",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    from fer8.training.datasets import read_dataset
    from fer8.training.evaluation import predicted_probabilities

    probabilities, truth = predicted_probabilities(
        fer8.Predictor(tiny_model_path), read_dataset(labelled_crops)
    )
    expected = Reliability.from_probabilities(probabilities, truth).ece
    assert report["ece"] == pytest.approx(expected, abs=1e-6) and report["ece"] > 0
    assert report["reliability"]["bins"] == 15 and sum(report["reliability"]["counts"]) == 36
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_with_temperature_keeps_the_model_file_it_came_from(calibrated_path):
    model = read_model_file(calibrated_path)
    raw = model.with_temperature(1.0)
    assert raw.source == model.source == calibrated_path
    assert raw.spec.temperature == 1.0 and model.spec.temperature == 2.5


def test_calibrate_reports_the_given_models_error_before(calibrated_path, labelled_crops, tmp_path):
    """ "ECE before" is the model as given (its temperature of 2.5), the figure fer8
    evaluate gives, not its network's at temperature 1."""
    from fer8.training.datasets import read_dataset
    from fer8.training.evaluation import predicted_probabilities

    out = tmp_path / "again.fer8"
    result = CliRunner().invoke(
        cli,
        [
            "calibrate",
            "--model",
            str(calibrated_path),
            "--data",
            str(labelled_crops),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    probabilities, truth = predicted_probabilities(
        fer8.Predictor(calibrated_path), read_dataset(labelled_crops)
    )
    given = Reliability.from_probabilities(probabilities, truth).ece
    raw = Reliability.from_probabilities(apply_temperature(probabilities, 1 / 2.5), truth).ece
    assert f"{given:.1%}" != f"{raw:.1%}"  # the two figures tell apart
    calibration = read_spec(out).metadata["calibration"]
    assert calibration["ece_before"] == pytest.approx(given, abs=1e-6)
    assert calibration["temperature_before"] == 2.5
    pooled = result.stdout.splitlines()[-1].split()
    assert pooled[:4] == ["all", "(pooled)", "36", f"{given:.1%}"]
    nll = negative_log_likelihood(probabilities, truth)
    assert calibration["nll_before"] == pytest.approx(nll, rel=1e-5)
    assert calibration["ece_after"] <= calibration["ece_before"]


def test_a_fitted_temperature_that_raises_the_error_is_not_kept(tiny_model_path, tmp_path, caplog):
    """Every face 75% sure and right three times in four: calibrated already (ECE 0). The
    wrong answers put 1% on the truth, so the likelihood wants a softer temperature,
    which would make the model underconfident: the model's own temperature is kept, and
    one warning line gives both errors."""
    import logging

    from fer8.models.calibration import calibrate_model_file

    row = [0.75, 0.19, 0.01, 0.01, 0.01, 0.02, 0.01]
    probabilities = np.array([row] * 40)
    truth = np.array([0, 0, 0, 2] * 10)
    assert Reliability.from_probabilities(probabilities, truth).ece == pytest.approx(0)
    fitted = fit_temperature(probabilities, truth)
    assert fitted > 1.2
    out = tmp_path / "kept.fer8"
    with caplog.at_level(logging.WARNING, logger="fer8.models.calibration"):
        summary = calibrate_model_file(
            tiny_model_path, out, probabilities, truth, ["faces"] * 40, fitted_on="faces"
        )
    spec = read_spec(out)
    assert spec.temperature == summary["temperature"] == 1.0
    assert summary["fitted_temperature"] == pytest.approx(fitted)
    assert summary["ece_after"] == summary["ece_before"] == pytest.approx(0)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "kept temperature 1.000 (ECE 0.0% on faces)" in warning
    assert f"the fitted {fitted:.3f} would raise it to" in warning and "\n" not in warning


def test_pooled_answers_name_each_face_s_dataset_and_refuse_one_without_faces(
    tiny_model_path, labelled_crops, tmp_path
):
    """fer8 calibrate's faces come from the library (training.evaluation.pooled_answers):
    every dataset's faces pooled, each named by its dataset, progress per dataset, and a
    dataset with no face of the model's classes an error naming it."""
    from fer8.errors import Fer8Error
    from fer8.training.datasets import read_dataset
    from fer8.training.evaluation import pooled_answers

    predictor = fer8.Predictor(tiny_model_path)
    faces = read_dataset(labelled_crops)
    counted: dict[str, list[int]] = {}

    def on_progress(name: str, total: int):
        counted[name] = [total, 0]
        return lambda steps: counted[name].__setitem__(1, counted[name][1] + steps)

    answers = pooled_answers(predictor, [("a", faces), ("b", faces)], on_progress=on_progress)
    assert answers.groups == ["a"] * 36 + ["b"] * 36
    assert answers.probabilities.shape == (72, len(predictor.labels))
    assert len(answers.truth) == len(answers.measures) == 72
    assert counted == {"a": [36, 36], "b": [36, 36]}
    (tmp_path / "broken" / "happy").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "broken" / "happy" / f"{i}.png").write_bytes(b"\x89PNG\r\n broken")
    with pytest.raises(Fer8Error, match="^none: no face of a class the model has"):
        pooled_answers(predictor, [("a", faces), ("none", read_dataset(tmp_path / "broken"))])
