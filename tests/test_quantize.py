"""The int8 network: made by fer8 quantize, stored beside the float one, run by every
front end when it is there, and never by an old file."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import LABELS, save

import fer8
from fer8.cli import cli
from fer8.models.modelfile import (
    INT8_MEMBER,
    ONNX_MEMBER,
    read_graph,
    read_model_file,
    read_spec,
)


def _faces(n: int = 48, size: int = 48) -> np.ndarray:
    """Smooth random pictures: crops whose activations vary like a photo's."""
    import cv2

    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (n, 6, 6, 3), np.uint8)
    return np.stack([cv2.resize(s, (size, size), interpolation=cv2.INTER_CUBIC) for s in small])


@pytest.fixture(scope="module")
def int8_path(tiny_model_path, tmp_path_factory):
    pytest.importorskip("onnx")
    from fer8.models.quantize import quantize_model_file

    out = tmp_path_factory.mktemp("int8") / "tiny-int8.fer8"
    # The tiny model has two convolutions and a classifier: quantize all three.
    quantize_model_file(
        tiny_model_path, out, _faces(), float_first=0, float_last=False, described_as="noise"
    )
    return out


def test_the_int8_network_is_stored_beside_the_float_one(tiny_model_path, int8_path):
    with zipfile.ZipFile(tiny_model_path) as old, zipfile.ZipFile(int8_path) as new:
        assert new.read(ONNX_MEMBER) == old.read(ONNX_MEMBER)  # float graph untouched
        assert set(new.namelist()) == set(old.namelist()) | {INT8_MEMBER}
        int8 = new.read(INT8_MEMBER)
    assert b"QuantizeLinear" in int8 and b"DequantizeLinear" in int8
    spec, old_spec = read_spec(int8_path), read_spec(tiny_model_path)
    assert spec.labels == old_spec.labels and spec.preprocessing == old_spec.preprocessing
    summary = spec.metadata["int8"]
    assert summary["faces"] == 48 and summary["calibrated_on"] == "noise"
    assert summary["float_layers"] == {"first": 0, "last": False}
    assert "(8 bits)" in summary["weights"]
    assert spec.metadata["purpose"] == "tests"  # the rest of the metadata kept


def test_int8_layers_are_quantized_among_the_float_first(tiny_model_path, tmp_path):
    """--float-first 2 --int8-layer 1: the first convolution int8, the second float."""
    onnx = pytest.importorskip("onnx")
    from fer8.models.quantize import quantize_model_file

    out = tmp_path / "first-int8.fer8"
    summary = quantize_model_file(
        tiny_model_path, out, _faces(), float_first=2, int8_layers=[1], float_last=False
    )
    assert summary["float_layers"] == {"first": 2, "but": [1], "last": False}
    graph = onnx.load_from_string(read_graph(out, precision="int8")).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convolutions = [n for n in graph.node if n.op_type == "Conv"]
    assert [n.input[1] in dequantized for n in convolutions] == [True, False]


def test_an_int8_layer_outside_the_float_first_is_a_usage_error(tiny_model_path, tmp_path):
    pytest.importorskip("onnx")
    done = CliRunner().invoke(
        cli,
        [
            "quantize",
            "--model",
            str(tiny_model_path),
            "--data",
            str(tmp_path),
            "--float-first",
            "2",
            "--int8-layer",
            "3",
            "--out",
            str(tmp_path / "out.fer8"),
        ],
    )
    assert done.exit_code == 2
    assert "3 is not among the first 2 convolutions" in done.stderr
    assert not (tmp_path / "out.fer8").exists()


def test_predict_runs_int8_when_the_file_has_it_and_float_when_not(tiny_model_path, int8_path):
    assert read_model_file(int8_path).runtime == "onnxruntime (int8)"
    assert read_model_file(int8_path, precision="float").runtime == "onnxruntime"
    assert read_model_file(tiny_model_path).runtime == "onnxruntime"
    with pytest.raises(fer8.ModelFormatError, match="no int8 network; make one with fer8"):
        read_model_file(tiny_model_path, precision="int8")
    batch = fer8.load_model(tiny_model_path).spec.preprocessing.apply(_faces(16, 48))
    int8, floats = read_model_file(int8_path), read_model_file(int8_path, precision="float")
    assert not np.array_equal(int8(batch), floats(batch))  # another network ran
    assert np.array_equal(floats(batch), read_model_file(tiny_model_path)(batch))
    assert np.abs(int8(batch) - floats(batch)).max() < 0.1
    assert np.allclose(int8(batch).sum(1), 1, atol=1e-5)


def test_an_old_file_predicts_bit_for_bit_as_plain_onnx_runtime(tiny_model_path):
    """A file without an int8 network runs its float graph, and the runtime's settings
    change no bit of the probabilities."""
    import onnxruntime as ort

    model = read_model_file(tiny_model_path)
    batch = model.spec.preprocessing.apply(_faces(8, 48))
    plain = ort.InferenceSession(read_graph(tiny_model_path), providers=["CPUExecutionProvider"])
    (expected,) = plain.run(["probabilities"], {"input": batch})
    assert np.array_equal(model(batch), expected)


def test_predictor_cli_and_export_give_the_same_answers(int8_path, astronaut_path, tmp_path):
    import onnxruntime as ort

    from fer8.pipeline.classification import model_batch
    from fer8.pipeline.faces import faces_in_photo

    predictor = fer8.Predictor(fer8.load_model(int8_path))
    (face,) = predictor.predict(astronaut_path).faces
    done = CliRunner().invoke(
        cli, ["predict", str(astronaut_path), "--model", str(int8_path), "--format", "json"]
    )
    assert done.exit_code == 0, done.output
    ((from_cli,),) = [image["faces"] for image in json.loads(done.stdout)]
    assert from_cli["label"] == face.label
    assert from_cli["probabilities"] == pytest.approx(face.probabilities, abs=1e-4)

    exported = tmp_path / "tiny.onnx"
    done = CliRunner().invoke(cli, ["export", "--model", str(int8_path), "--out", str(exported)])
    assert done.exit_code == 0, done.output
    # The int8 network (its metadata gains how to frame a face, as every export's does).
    assert b"DequantizeLinear" in exported.read_bytes()
    assert b"DequantizeLinear" not in read_graph(int8_path, precision="float")
    ((_, crop),) = faces_in_photo(fer8.load_image(astronaut_path))
    model = predictor.model
    batch = model.spec.preprocessing.apply(model_batch([crop], model))
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": batch})
    assert [face.probabilities[label] for label in LABELS] == pytest.approx(
        probabilities[0].tolist(), abs=1e-6
    )


def test_an_int8_file_loads_and_predicts_without_the_onnx_package(int8_path, astronaut_path):
    """The light install (no TensorFlow, Keras or onnx) runs the int8 network."""
    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'onnx', 'h5py'):\n"
        "    sys.modules[name] = None  # not installed\n"
        "import fer8\n"
        f"model = fer8.load_model({str(int8_path)!r})\n"
        f"(face,) = fer8.Predictor(model).predict({str(astronaut_path)!r}).faces\n"
        "print(model.runtime, face.label)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    runtime, label = done.stdout.strip().rsplit(" ", 1)
    assert runtime == "onnxruntime (int8)" and label in LABELS


def test_explanations_work_on_an_int8_file(int8_path, astronaut):
    predictor = fer8.Predictor(fer8.load_model(int8_path))
    (item,) = predictor.explain(astronaut)
    (face,) = predictor.predict(astronaut).faces
    assert item.face.label == face.label
    assert item.face.probabilities == pytest.approx(face.probabilities, abs=1e-6)
    assert item.heatmap.shape == (224, 224) and np.isfinite(item.heatmap).all()


def test_fer8_quantize_frames_the_faces_and_writes_the_file(
    tiny_model_path, astronaut, hopper, tmp_path
):
    pytest.importorskip("onnx")
    save(astronaut, tmp_path / "data" / "happy" / "astronaut.png")
    save(hopper, tmp_path / "data" / "neutral" / "hopper.png")
    (tmp_path / "data" / "sad").mkdir()
    (tmp_path / "data" / "sad" / "broken.png").write_bytes(b"not a picture")
    out = tmp_path / "int8.fer8"
    args = ["quantize", "--model", str(tiny_model_path), "--data", str(tmp_path / "data")]
    args += [
        "--out",
        str(out),
        "--cache",
        str(tmp_path / "crops"),
        "--method",
        "minmax",
        "--reduce-range",
        "--float-first",
        "1",
    ]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert done.stdout == ""  # ONNX Runtime's progress prints are not fer8's results
    summary = read_spec(out).metadata["int8"]
    assert summary["faces"] == 2 and summary["method"] == "minmax"
    assert summary["float_layers"] == {"first": 1, "last": True}
    assert "(7 bits)" in summary["weights"]
    assert read_model_file(out).runtime == "onnxruntime (int8)"
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "exists; add --force" in again.output
