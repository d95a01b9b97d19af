"""The bundled default model: shipped in the package, verified, and giving real answers."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

import fer8
from fer8.cli import cli
from fer8.models.registry import DEFAULT_MODEL, MODELS, sha256_file


def test_default_model_ships_in_the_package_and_matches_its_checksum():
    entry = MODELS[DEFAULT_MODEL]
    path = Path(str(resources.files("fer8") / "models" / entry.bundled))
    assert path.is_file()
    # Float and int8 networks (67 MB); PyPI takes files of up to 100 MB.
    assert path.stat().st_size <= 70 * 1024 * 1024
    assert sha256_file(path) == entry.sha256


def test_default_model_predicts_with_its_int8_network(default_predictor):
    """The bundled file holds both networks; prediction runs the int8 one (within 0.5
    points of the float one on every row of the model card with VNNI or AMX, on every
    held-out row with AVX2 alone), with FaceNet's first four convolutions in float."""
    from fer8.models.modelfile import read_model_file

    assert default_predictor.model.runtime == "onnxruntime (int8)"
    source = default_predictor.model.source
    assert read_model_file(source, precision="float").runtime == "onnxruntime"
    float_layers = default_predictor.model.spec.metadata["int8"]["float_layers"]
    assert float_layers == {"first": 4, "last": True}


def test_default_model_knows_the_seven_classes_with_data(default_predictor):
    spec = default_predictor.model.spec
    assert spec.labels == (
        "angry",
        "disgusted",
        "fearful",
        "happy",
        "neutral",
        "sad",
        "surprised",
    )  # no public data has "worry"
    assert spec.backbone == "facenet"
    # The mean of the validation sets' accuracies on the run's crops (FER+ Valid,
    # ExpW@val, SFEW@val, the AffectNet-like set's @val: 80%, 43%, 46%, 64%).
    assert spec.metadata["validation"]["accuracy"] > 0.5
    assert spec.metadata["validation"]["accuracy_jaffe@val"] > 0.7  # posed, not trained on
    sources = spec.metadata["data"]["train"]["sources"]
    assert {s["kind"] for s in sources.values()} == {"ferplus", "expw@train", "folders@train"}
    assert set(sources) == {
        "affectnet_masked-train@train",
        "FER2013Train",
        "expw@train",
        "sfew-Train@train",
        "jaffe@train",  # JAFFE's @val subject stays out: the model card's posed row
    }
    # Colour faces, cut out along their contour, and a temperature per face that is
    # lower (sharper) for FER2013-style small gray crops.
    assert not spec.preprocessing.grayscale and spec.preprocessing.mask == "contour"
    assert spec.preprocessing.standardize and 0.5 < spec.temperature < 2
    rule = spec.metadata["calibration"]["temperature_rule"]
    assert rule["measures"] == ["small_gray"] and rule["weights"][0] > 0


def test_predict_without_a_model_gives_real_expressions(astronaut_path, hopper_path):
    result = CliRunner().invoke(
        cli, ["predict", str(astronaut_path), str(hopper_path), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    astronaut, hopper = json.loads(result.stdout)
    assert [face["label"] for face in astronaut["faces"]] == ["happy"]  # she smiles
    assert astronaut["faces"][0]["confidence"] > 0.5
    assert len(hopper["faces"]) == 1
    assert hopper["faces"][0]["label"] != "happy"  # a composed official portrait


def test_a_tampered_bundled_model_is_refused(tmp_path, monkeypatch):
    from fer8.errors import ChecksumMismatchError
    from fer8.models import registry

    entry = MODELS[DEFAULT_MODEL]
    monkeypatch.setitem(
        registry.MODELS,
        DEFAULT_MODEL,
        registry.RegisteredModel(entry.name, "0" * 64, bundled=entry.bundled),
    )
    with pytest.raises(ChecksumMismatchError, match="bundled model 'default'"):
        fer8.load_model()
