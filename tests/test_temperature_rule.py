"""A temperature per crop (issue 42): the crop measures, a rule fitted back from
synthetic data, stored in a model file and applied per crop, while a file without one
reads and predicts exactly as before."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import save

from fer8.cli import cli
from fer8.models.calibration import apply_temperature, calibrate_model_file
from fer8.models.modelfile import SPEC_MEMBER, ModelSpec, read_graph, read_model_file, read_spec
from fer8.models.preprocessing import IMAGENET_CAFFE
from fer8.models.runtime import OnnxNetwork
from fer8.models.temperature_rule import (
    CROP_MEASURES,
    TemperatureRule,
    crop_measures,
    fit_temperature_rule,
)
from fer8.models.writer import rewrite_spec

RULE = TemperatureRule(("colour", "detail"), intercept=1.4, weights=(-0.3, 0.25))


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _faces(n: int = 4, side: int = 48) -> np.ndarray:
    """Smooth colour crops with some fine texture: (n, side, side, 3) uint8."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:side, 0:side] / side
    base = 120 + 60 * np.sin(3 * x + 2 * y)[None, ..., None] * [1.0, 0.7, 0.5]
    return np.clip(base + rng.normal(0, 12, (n, side, side, 3)), 0, 255).astype(np.uint8)


def test_crop_measures_tell_gray_from_colour_and_sharp_from_enlarged():
    import cv2

    faces = _faces()
    gray = np.repeat(faces.mean(axis=-1, keepdims=True), 3, axis=-1).astype(np.uint8)
    small = np.stack(
        [cv2.resize(cv2.resize(f, (12, 12), interpolation=cv2.INTER_AREA), (48, 48)) for f in faces]
    )
    small_gray = np.repeat(small.mean(axis=-1, keepdims=True), 3, axis=-1).astype(np.uint8)
    colour, sharp, enlarged, enlarged_gray = (
        crop_measures(IMAGENET_CAFFE.apply(crops)) for crops in (faces, gray, small, small_gray)
    )
    assert colour.shape == (4, len(CROP_MEASURES)) == (4, 3)
    assert (colour[:, 0] > 0.1).all() and (sharp[:, 0] < 1e-6).all()
    assert (enlarged[:, 1] < sharp[:, 1] - 0.5).all()
    # Only a gray crop with little detail is a small gray one.
    assert (enlarged_gray[:, 2] == 1).all()
    assert (colour[:, 2] == 0).all() and (sharp[:, 2] == 0).all() and (enlarged[:, 2] == 0).all()
    # Mirroring a crop (flip) does not change them, nor does brightness or contrast.
    np.testing.assert_allclose(crop_measures(IMAGENET_CAFFE.apply(faces[:, :, ::-1])), colour)
    np.testing.assert_allclose(
        crop_measures(IMAGENET_CAFFE.apply(faces) * 2 + 5), colour, rtol=1e-4, atol=1e-5
    )


def test_a_fitted_rule_recovers_a_known_one():
    rng = np.random.default_rng(7)
    n = 30000
    logits = rng.normal(0, 3, (n, 7))
    measures = np.stack(
        [rng.choice([0.0, 1.3], n), rng.uniform(-3, -0.5, n), rng.choice([0.0, 1.0], n)], axis=1
    )
    # Labels drawn from softmax(z / T_i), each row's T given by the rule.
    calibrated = _softmax(logits / RULE.temperatures_of(measures)[:, None])
    truth = (calibrated.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    fitted = fit_temperature_rule(_softmax(logits), truth, measures, names=RULE.measures)
    assert fitted.measures == RULE.measures
    assert fitted.intercept == pytest.approx(RULE.intercept, abs=0.06)
    np.testing.assert_allclose(fitted.weights, RULE.weights, atol=0.03)
    # A rule on one measure only: by default, small gray crops or not.
    only = fit_temperature_rule(_softmax(logits), truth, measures)
    assert only.measures == ("small_gray",) and len(only.weights) == 1


def test_a_rule_round_trips_and_a_spec_without_one_is_written_as_before(tiny_model_path):
    spec = read_spec(tiny_model_path)
    with_rule = replace(spec, temperature=1.2, temperature_rule=RULE)
    assert ModelSpec.from_dict(json.loads(json.dumps(with_rule.to_dict()))) == with_rule
    assert "temperature_rule" not in spec.to_dict()
    with pytest.raises(ValueError, match="one weight per measure"):
        TemperatureRule(("colour", "blur"), 1.0, (0.1, 0.2))
    with pytest.raises(ValueError, match="one weight per measure"):
        TemperatureRule(("colour",), 1.0, (0.1, 0.2))


@pytest.mark.slow
def test_a_rule_is_applied_per_crop(tiny_model_path, tmp_path):
    from fer8.training.keras_models import keras_expression_model, load_keras_model

    path = rewrite_spec(
        tiny_model_path,
        replace(read_spec(tiny_model_path), temperature=1.5, temperature_rule=RULE),
        tmp_path / "rule.fer8",
    )
    faces = _faces()
    gray = np.repeat(faces.mean(axis=-1, keepdims=True), 3, axis=-1).astype(np.uint8)
    batch = IMAGENET_CAFFE.apply(np.concatenate([faces, gray]))
    temperatures = RULE.temperatures(batch)
    assert temperatures[:4].min() > temperatures[4:].max()  # gray crops get another
    raw = OnnxNetwork(read_graph(tiny_model_path))(batch)
    expected = _softmax(np.log(raw.astype(np.float64)) / temperatures[:, None])
    model = read_model_file(path)
    np.testing.assert_allclose(model(batch), expected, atol=1e-6)
    np.testing.assert_allclose(model(batch), apply_temperature(raw, temperatures), atol=1e-7)
    # A crop's answer does not depend on the others in its batch.
    np.testing.assert_allclose(model(batch[5:6]), expected[5:6], atol=1e-6)
    keras_model, spec = load_keras_model(path)
    np.testing.assert_allclose(
        keras_expression_model(keras_model, spec)(batch), expected, atol=1e-5
    )
    # with_temperature drops the rule: 1 gives the network's own probabilities.
    np.testing.assert_array_equal(model.with_temperature(1.0)(batch), raw)


@pytest.fixture()
def labelled_crops(tmp_path):
    """Class folders of 48x48 crops: colour noise, and smooth gray ones (small gray
    crops, enlarged from 6 px)."""
    import cv2

    rng = np.random.default_rng(11)
    for label in ("happy", "sad", "angry"):
        for i in range(12):
            if i % 2:
                crop = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
            else:
                small = rng.integers(0, 256, (6, 6), dtype=np.uint8)
                crop = np.repeat(cv2.resize(small, (48, 48))[..., None], 3, axis=-1)
            save(crop, tmp_path / "faces" / label / f"{i}.png")
    return tmp_path / "faces"


def test_calibrate_by_quality_writes_a_rule(tiny_model_path, labelled_crops, tmp_path):
    out = tmp_path / "quality.fer8"
    args = ["calibrate", "--model", str(tiny_model_path), "--data", str(labelled_crops)]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--by", "quality"])
    assert result.exit_code == 0, result.output
    assert "temperature rule 1/T = " in result.stderr and "x small_gray" in result.stderr
    spec = read_spec(out)
    calibration = spec.metadata["calibration"]
    assert spec.temperature_rule is not None
    assert calibration["temperature_rule"] == spec.temperature_rule.to_dict()
    assert calibration["temperature"] == spec.temperature == calibration["fitted_temperature"]
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9
    # By temperature from the file with a rule, on data one temperature fits: the rule
    # is gone, and the spec is written as for a model that never had one.
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (3000, 7))
    truth = (_softmax(logits / 2).cumsum(axis=1) > rng.random((3000, 1))).argmax(axis=1)
    again = tmp_path / "again.fer8"
    measures = np.zeros((3000, len(CROP_MEASURES)))
    calibrate_model_file(
        out, again, _softmax(logits), truth, ["a"] * 3000, fitted_on="a", measures=measures
    )
    assert read_spec(again).temperature_rule is None
    assert read_spec(again).temperature == pytest.approx(2, rel=0.1)
    with zipfile.ZipFile(again) as archive:
        assert "temperature_rule" not in json.loads(archive.read(SPEC_MEMBER))


def test_an_exported_graph_says_it_applies_the_one_temperature(tiny_model_path):
    from fer8.models.writer import onnx_metadata

    spec = replace(read_spec(tiny_model_path), temperature=1.5)
    assert not any("rule" in key for key in onnx_metadata(spec))
    props = onnx_metadata(replace(spec, temperature_rule=RULE))
    assert json.loads(props["fer8.temperature_rule"]) == RULE.to_dict()
    assert props["fer8.temperature_rule_applied"].startswith("no: the graph applies")


@pytest.mark.parametrize("flip", [False, True])
def test_each_judged_face_is_given_its_crop_measures(tiny_model_path, labelled_crops, flip):
    import fer8
    from fer8.training.datasets import read_dataset
    from fer8.training.evaluation import measured_probabilities, predicted_probabilities

    predictor = fer8.Predictor(tiny_model_path, flip=flip)
    dataset = read_dataset(labelled_crops)
    probabilities, truth, measures = measured_probabilities(predictor, dataset)
    assert measures.shape == (len(truth), len(CROP_MEASURES)) == (36, 3)
    # Half the crops are small gray ones, as the fixture made them.
    assert measures[:, 2].sum() == 18
    expected, _ = predicted_probabilities(predictor, dataset)
    np.testing.assert_array_equal(probabilities, expected)
