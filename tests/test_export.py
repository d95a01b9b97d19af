"""`fer8 export --format onnx` in a light install: the bundled model (calibrated, so its
graph gains the temperature) is exported without the onnx package, into a folder that
did not exist; the file says how fer8 frames a face, and a face framed as it says gets
the probabilities fer8 reports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import fer8
import fer8.models.modelfile
from fer8.models.preprocessing import Preprocessing
from fer8.pipeline.classification import model_batch
from fer8.pipeline.faces import faces_in_photo

# The train extra is absent: importing any of these fails, as when not installed.
LIGHT_INSTALL = (
    "import sys\n"
    "for name in ('tensorflow', 'keras', 'onnx', 'h5py'):\n"
    "    sys.modules[name] = None\n"
    "from fer8.cli import main\n"
    "main(sys.argv[1:])\n"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "new" / "dir" / "default.onnx"
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_INSTALL, "export", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    return out


@pytest.fixture(scope="module")
def session(exported):
    import onnxruntime as ort

    return ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])


def test_a_light_install_exports_the_calibrated_model_with_its_framing(session):
    spec = fer8.load_model().spec
    assert spec.temperature != 1.0  # the bundled model is calibrated
    metadata = session.get_modelmeta().custom_metadata_map
    assert float(metadata["fer8.temperature"]) == spec.temperature
    assert json.loads(metadata["fer8.labels"]) == list(spec.labels)
    assert [o.name for o in session.get_outputs()] == ["probabilities", "features"]
    framing = json.loads(metadata["fer8.framing_json"])
    assert framing["aligned_size"] == 224 and framing["mask"] == "contour"
    assert framing["resize"] == {"to": 144, "interpolation": "area"}
    words = metadata["fer8.framing"]
    assert "224x224 crop" in words and "to 144x144 with area averaging" in words
    assert "convex hull of the jaw" in words


def test_the_exported_graph_gives_fer8s_probabilities(session, default_predictor, astronaut):
    """The temperature is in the graph: fer8's own crops give fer8's probabilities."""
    model = default_predictor.model
    faces = [crop for _, crop in faces_in_photo(astronaut)]
    batch = model.spec.preprocessing.apply(model_batch(faces, model))
    (probabilities,) = session.run(["probabilities"], {"input": batch})
    metadata = session.get_modelmeta().custom_metadata_map
    assert "fer8.temperature_rule" in metadata  # the bundled model has a temperature per face
    reported = default_predictor.predict(astronaut).faces[0].probabilities
    np.testing.assert_allclose(
        _as_fer8_reports(probabilities, batch, metadata)[0], list(reported.values()), atol=1e-5
    )
    # And not the network's own (uncalibrated) probabilities.
    raw = model.with_temperature(1.0)(batch)
    assert np.abs(raw - probabilities).max() > 1e-3


@pytest.fixture(scope="module")
def float_session(tmp_path_factory):
    """The bundled model's float network, exported as `fer8 export` does."""
    import onnxruntime as ort

    from fer8.models.export import export_onnx
    from fer8.models.modelfile import read_spec
    from fer8.models.registry import resolve_model
    from fer8.pipeline.faces import framing

    out = tmp_path_factory.mktemp("export") / "float.onnx"
    source = resolve_model(None)
    export_onnx(source, out, metadata=framing(read_spec(source)), precision="float")
    return ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("photo", ["astronaut", "hopper"])
@pytest.mark.parametrize("precision", ["auto", "float"])
def test_a_face_framed_as_the_metadata_says_gets_fers_probabilities(
    session, float_session, default_predictor, photo, precision, request
):
    """A user of another runtime frames the face from the metadata alone (here with
    OpenCV and fer8's landmarks) and gets what fer8 reports, with the network fer8
    predicts with (int8) and with the float one; aligning straight at the input size,
    which the metadata warns against, does not (seen on the float network: the int8
    network's rounding is as large as the difference on one face)."""
    image = request.getfixturevalue(photo)
    (face,) = default_predictor.predict(image).faces
    session = session if precision == "auto" else float_session
    metadata = session.get_modelmeta().custom_metadata_map
    framing = json.loads(metadata["fer8.framing_json"])
    preprocessing = Preprocessing.from_dict(json.loads(metadata["fer8.preprocessing"]))
    if precision == "auto":
        reported = np.array(list(face.probabilities.values()))
    else:
        model = fer8.models.modelfile.read_model_file(
            default_predictor.model.source, precision="float"
        )
        crops = [crop for box, crop in faces_in_photo(image) if box == face.box]
        reported = model(model.spec.preprocessing.apply(model_batch(crops, model)))[0]

    def probabilities(aligned_size):
        crop = _framed(image, np.asarray(face.landmarks, np.float64), framing, aligned_size)
        batch = preprocessing.apply(crop[None])
        (out,) = session.run(["probabilities"], {"input": batch})
        return _as_fer8_reports(out, batch, metadata)[0]

    framed = np.abs(probabilities(framing["aligned_size"]) - reported).max()
    # The int8 network rounds its activations, so the few pixels that OpenCV's warp puts
    # differently from fer8's (which first shrinks a large face by area averaging) move
    # its answer more: 7.8e-3 on Hopper's face (1.0e-2 with the int8 network bundled
    # before, 12 float convolutions), against 4e-5 for the float network.
    assert framed < (2e-4 if precision == "float" else 2e-2)
    if precision == "float":
        straight = np.abs(probabilities(framing["resize"]["to"]) - reported).max()
        assert straight > 10 * framed  # 5e-5 against 1.3e-3 and 2.7e-2


def _as_fer8_reports(probabilities, batch, metadata):
    """The graph's probabilities as fer8 reports them, done as the metadata's
    ``fer8.temperature_rule_applied`` tells another runtime: the graph applies
    ``fer8.temperature`` to every face, fer8 the rule's temperature for each crop."""
    from fer8.models.calibration import apply_temperature
    from fer8.models.temperature_rule import TemperatureRule

    if "fer8.temperature_rule" not in metadata:
        return probabilities
    rule = TemperatureRule.from_dict(json.loads(metadata["fer8.temperature_rule"]))
    ratio = rule.temperatures(batch) / float(metadata["fer8.temperature"])
    return apply_temperature(probabilities, ratio)  # softmax(log p * fer8.temperature / T)


def _framed(image, points, framing, aligned_size):
    """The model's input crop, made as ``fer8.framing_json`` says."""
    import cv2

    scale = aligned_size / framing["aligned_size"]
    source = [points[framing[eye]["points"]].mean(axis=0) for eye in ("left_eye", "right_eye")]
    target = [np.array(framing[eye]["at"]) * scale for eye in ("left_eye", "right_eye")]
    # The similarity transform taking one pair of points to the other, as complex numbers.
    (s0, s1), (t0, t1) = (complex(*p) for p in source), (complex(*p) for p in target)
    zoom = (t1 - t0) / (s1 - s0)
    shift = t0 - zoom * s0
    matrix = np.array([[zoom.real, -zoom.imag, shift.real], [zoom.imag, zoom.real, shift.imag]])
    crop = cv2.warpAffine(image, matrix, (aligned_size, aligned_size), flags=cv2.INTER_LINEAR)
    if framing["mask"] == "contour":
        contour = framing["contour"]
        inside = points @ matrix[:, :2].T + matrix[:, 2]
        brows = inside[contour["brows"]]
        forehead = brows + contour["forehead"] * (brows.mean(axis=0) - inside[contour["chin"]])
        outline = np.concatenate([inside[contour["jaw"]], forehead]).astype(np.float32)
        mask = np.zeros(crop.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(cv2.convexHull(outline) * 16).astype(np.int32)], 1, shift=4)
        crop = crop * mask[..., None]
    side = framing["resize"]["to"]
    if aligned_size != side:
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    return crop
