"""Prediction on ONNX Runtime: the same answers as Keras, without TensorFlow.

The model file stores the network once, as an ONNX graph; these tests check that it
computes what the Keras network computes (the bundled model on the example photos and
on FER+ faces), that prediction never imports TensorFlow, that the exported ONNX file
is usable alone, and that older Keras-only files still load or convert.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import EXAMPLES, LABELS, ROOT, SHARED

import fer8
from fer8.cli import cli
from fer8.errors import ModelFormatError
from fer8.models.modelfile import (
    NETWORK_MEMBER,
    ONNX_MEMBER,
    SPEC_MEMBER,
    WEIGHTS_MEMBER,
    read_spec,
)
from fer8.models.registry import resolve_model
from fer8.training.keras_models import keras_expression_model, load_keras_model

FERPLUS = SHARED / "data" / "ferplus.tar.gz"


@pytest.fixture(scope="module")
def bundled_on_keras():
    return keras_expression_model(*load_keras_model(resolve_model(None)))


@pytest.fixture(scope="module")
def bundled_float():
    """The bundled file's float network (prediction runs its int8 one)."""
    from fer8.models.modelfile import read_model_file

    return read_model_file(resolve_model(None), precision="float")


def _ferplus_valid_faces(count: int) -> list[np.ndarray]:
    """The first ``count`` faces of FER+ Valid (48x48 grayscale PNGs), as RGB arrays."""
    faces = []
    with tarfile.open(FERPLUS) as archive:
        for member in archive:
            if member.name.startswith("FER2013Valid/") and member.name.endswith(".png"):
                faces.append(fer8.load_image(archive.extractfile(member).read()))
                if len(faces) == count:
                    break
    return faces


@pytest.mark.slow
def test_bundled_model_on_onnx_runtime_equals_keras_on_the_example_photos(
    default_predictor, bundled_float, bundled_on_keras, astronaut, hopper, two_faces
):
    crops = [
        crop
        for image in (astronaut, hopper, two_faces)
        for _, crop in fer8.faces_in_photo(image, landmark_model=default_predictor.landmark_model)
    ]
    assert len(crops) == 4
    np.testing.assert_allclose(
        fer8.classify(crops, bundled_float),
        fer8.classify(crops, bundled_on_keras),
        atol=1e-4,
    )


@pytest.mark.shared
@pytest.mark.skipif(not FERPLUS.is_file(), reason="needs ../shared/data/ferplus.tar.gz")
@pytest.mark.slow
def test_bundled_model_on_onnx_runtime_equals_keras_on_200_ferplus_faces(
    bundled_float, bundled_on_keras
):
    faces = _ferplus_valid_faces(200)
    assert len(faces) == 200
    on_onnx = fer8.classify(faces, bundled_float)
    on_keras = fer8.classify(faces, bundled_on_keras)
    np.testing.assert_allclose(on_onnx, on_keras, atol=1e-4)
    assert np.mean(on_onnx.argmax(1) == on_keras.argmax(1)) == 1.0


def test_the_optimised_graph_is_cached_and_predicts_the_same(
    tmp_path, monkeypatch, caplog, default_predictor
):
    """The first load saves ONNX Runtime's optimised graph; later loads read it (not the
    model's own graph) and give the same probabilities. A damaged cache file is
    rebuilt, and an unusable cache or FER8_GRAPH_CACHE=0 only means no caching."""
    from fer8.models import modelfile
    from fer8.models.registry import resolve_model

    faces = _ferplus_valid_faces(20) if FERPLUS.is_file() else []
    faces += [
        crop
        for _, crop in fer8.faces_in_photo(
            fer8.load_image(EXAMPLES / "astronaut.png"),
            landmark_model=default_predictor.landmark_model,
        )
    ]
    path = resolve_model(None)
    monkeypatch.setenv("FER8_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FER8_GRAPH_CACHE", raising=False)
    expected = fer8.classify(faces, modelfile.read_model_file(path))
    (cached,) = (tmp_path / "home" / "onnx").iterdir()

    def no_graph(_):
        raise AssertionError("the model's graph was read despite the cache")

    with monkeypatch.context() as patch:
        patch.setattr(modelfile, "read_graph", no_graph)
        np.testing.assert_allclose(
            fer8.classify(faces, modelfile.read_model_file(path)), expected, atol=1e-5
        )

    cached.write_bytes(b"not a graph")
    np.testing.assert_allclose(
        fer8.classify(faces, modelfile.read_model_file(path)), expected, atol=1e-5
    )
    assert "damaged cached graph" in caplog.text
    assert cached.stat().st_size > 1_000_000  # saved again
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no partial files

    monkeypatch.setenv("FER8_HOME", str(cached))  # a file: no cache folder can be made
    np.testing.assert_allclose(
        fer8.classify(faces, modelfile.read_model_file(path)), expected, atol=1e-5
    )
    monkeypatch.setenv("FER8_HOME", str(tmp_path / "off"))
    monkeypatch.setenv("FER8_GRAPH_CACHE", "0")
    modelfile.read_model_file(path)
    assert not (tmp_path / "off").exists()


def _can_hide_avx512() -> bool:
    """Whether scripts/avx2_only.sh can run here: an AVX-512 CPU that faults on CPUID
    when asked, and gcc to build the library."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return {"cpuid_fault", "avx512f"} <= flags and shutil.which("gcc") is not None


_AVX512_AND_ANSWER = """
import json, sys, fer8
from fer8.models.runtime import cpuid_features
face = fer8.Predictor().predict(fer8.load_image(sys.argv[1])).faces[0]
print(json.dumps(["AVX512F" in cpuid_features().split(), list(face.probabilities.values())]))
"""


@pytest.mark.skipif(not _can_hide_avx512(), reason="needs CPUID faulting on an AVX-512 CPU, gcc")
def test_a_graph_optimised_for_avx512_is_not_reused_where_onnx_runtime_runs_avx2(tmp_path):
    """ONNX Runtime's optimised graph holds float convolution weights laid out for the
    CPU's vector width. Saved where CPUID reports AVX-512 and read where it reports AVX2
    alone, it called the astronaut Neutral (39%) instead of Happy (99%): the cache is
    kept by what CPUID tells the process, not only by /proc/cpuinfo's flags. The AVX2
    path runs the int8 network's products in 16-bit sums, which can saturate; the
    answers stay within a point of the VNNI path's."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("FER8_GRAPH_CACHE", "PYTHONFAULTHANDLER")
    }
    env["FER8_HOME"] = str(tmp_path)

    def answer(*wrapper: str) -> tuple[bool, list[float]]:
        command = [
            *wrapper,
            sys.executable,
            "-c",
            _AVX512_AND_ANSWER,
            str(EXAMPLES / "astronaut.png"),
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        avx512, probabilities = json.loads(done.stdout.splitlines()[-1])
        return avx512, probabilities

    native = answer()
    masked = answer("bash", str(ROOT / "scripts" / "avx2_only.sh"))
    assert native[0] and not masked[0]  # the mask took effect
    assert len(list((tmp_path / "onnx").iterdir())) == 2  # a graph for each
    np.testing.assert_allclose(masked[1], native[1], atol=0.01)


def test_predicting_imports_neither_tensorflow_nor_keras(astronaut_path):
    code = (
        "import sys, fer8\n"
        f"result = fer8.Predictor().predict({str(astronaut_path)!r})\n"
        "assert result.faces, result\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'onnx', 'h5py'))\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_evaluate_and_export_run_without_the_train_extra(
    tmp_path, astronaut, hopper, tiny_model_path
):
    """The light install: TensorFlow, Keras, onnx and h5py are absent."""
    from conftest import save

    save(astronaut, tmp_path / "data" / "happy" / "astronaut.png")
    save(hopper, tmp_path / "data" / "neutral" / "hopper.png")
    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'onnx', 'h5py'):\n"
        "    sys.modules[name] = None  # not installed\n"
        "from fer8.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    evaluate = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "evaluate",
            "--data",
            str(tmp_path / "data"),
            "--model",
            str(tiny_model_path),
            "--format",
            "json",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert evaluate.returncode == 0, evaluate.stderr
    assert json.loads(evaluate.stdout)["n"] == 2
    assert (tmp_path / "out" / "confusion_matrix.png").is_file()
    export = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "export",
            "--model",
            str(tiny_model_path),
            "--out",
            str(tmp_path / "tiny.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert export.returncode == 0, export.stderr
    assert (tmp_path / "tiny.onnx").stat().st_size > 1000


def test_train_without_the_train_extra_says_what_to_install(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = sys.modules['keras'] = None  # not installed\n"
        "from fer8.cli import main\n"
        f"main(['train', '--data', {str(tmp_path)!r}, '--out', {str(tmp_path / 'run')!r}])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "fer8 train needs the train extra" in done.stderr and "[train]" in done.stderr


def test_export_replaces_no_file_unless_forced_and_makes_its_folder(tmp_path, tiny_model_path):
    def export(*args):
        return CliRunner().invoke(cli, ["export", "--model", str(tiny_model_path), *args])

    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"someone's file")
    refused = export("--out", str(existing))
    assert refused.exit_code == 2 and "exists; pass --force" in refused.output
    assert existing.read_bytes() == b"someone's file"
    assert export("--out", str(existing), "--force").exit_code == 0
    assert existing.read_bytes()[:8] != b"someone'"
    assert export("--out", str(tmp_path / "new" / "dir" / "m.onnx")).exit_code == 0
    assert (tmp_path / "new" / "dir" / "m.onnx").stat().st_size > 1000
    help_text = CliRunner().invoke(cli, ["export", "--help"]).output
    assert "--model NAME|PATH" in help_text and "--force" in help_text


def test_export_writes_an_onnx_file_that_runs_alone(tmp_path, tiny_model_path, tiny_model):
    import onnxruntime as ort

    out = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(
        cli, ["export", "--model", str(tiny_model_path), "--format", "onnx", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["fer8.labels"]) == list(LABELS)
    assert int(metadata["fer8.input_size"]) == 48
    preprocessing = fer8.ModelSpec.from_dict(json.loads(metadata["fer8.spec"])).preprocessing
    assert json.loads(metadata["fer8.preprocessing"]) == preprocessing.to_dict()
    crops = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    # The second output is the last feature map, for class activation maps.
    assert [o.name for o in session.get_outputs()] == ["probabilities", "features"]
    probabilities, features = session.run(None, {"input": preprocessing.apply(crops)})
    np.testing.assert_allclose(probabilities, fer8.classify(crops, tiny_model), atol=1e-6)
    assert features.shape[0] == 3 and features.ndim == 4


def _version_1_file(tiny_model_path, path, *, compact: bool):
    """The tiny model as fer8 wrote model files before the ONNX graph (format 1)."""
    network, spec = load_keras_model(tiny_model_path)
    spec_json = {**spec.to_dict(), "format_version": 1}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(SPEC_MEMBER, json.dumps(spec_json))
        if compact:
            archive.writestr(NETWORK_MEMBER, network.to_json())
            buffer = io.BytesIO()
            np.savez_compressed(
                buffer, *[w.astype(np.float16) if w.ndim >= 2 else w for w in network.get_weights()]
            )
            archive.writestr(WEIGHTS_MEMBER, buffer.getvalue())
        else:
            network.save(path.with_suffix(".keras"))
            archive.write(path.with_suffix(".keras"), "model.keras")
    return path


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.slow
def test_older_model_files_load_and_convert(tmp_path, tiny_model_path, tiny_model, compact, caplog):
    old = _version_1_file(tiny_model_path, tmp_path / "old.fer8", compact=compact)
    crops = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    expected = fer8.classify(crops, tiny_model)
    np.testing.assert_allclose(
        fer8.classify(crops, fer8.load_model(old)), expected, atol=2e-3 if compact else 1e-6
    )
    assert "fer8 export --model" in caplog.text  # says how to convert it once

    new = tmp_path / "new.fer8"
    result = CliRunner().invoke(
        cli, ["export", "--model", str(old), "--format", "fer8", "--out", str(new)]
    )
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(new) as archive:
        assert ONNX_MEMBER in archive.namelist()
    np.testing.assert_allclose(
        fer8.classify(crops, fer8.load_model(new)), expected, atol=2e-3 if compact else 1e-6
    )


@pytest.mark.slow
def test_a_fresh_process_opens_an_older_file_without_importing_training_first(
    tmp_path, tiny_model_path
):
    """``import fer8`` leaves fer8.training out; the format-1 reader is looked up when
    such a file is opened (fer8.models.legacy), so fer8.load_model still reads it."""
    old = _version_1_file(tiny_model_path, tmp_path / "old.fer8", compact=True)
    code = (
        "import sys, fer8\n"
        "assert 'fer8.training' not in sys.modules, 'imported by import fer8'\n"
        f"print(fer8.load_model({str(old)!r}).labels)\n"
        "assert 'fer8.training' in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(read_spec(tiny_model_path).labels)


@pytest.mark.slow
def test_older_model_files_without_the_train_extra_say_how_to_convert(
    tmp_path, tiny_model_path, monkeypatch
):
    old = _version_1_file(tiny_model_path, tmp_path / "old.fer8", compact=True)
    monkeypatch.setitem(sys.modules, "fer8.training.keras_models", None)
    with pytest.raises(ModelFormatError, match=r"pip install 'fer8\[train\]'.*fer8 export"):
        fer8.load_model(old)
    result = CliRunner().invoke(cli, ["predict", "--model", str(old), str(tiny_model_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "fer8 export" in result.stderr


@pytest.mark.slow
def test_a_graph_fer8_cannot_translate_is_named(tmp_path):
    import keras

    from fer8.models.onnx_graph import build_graph, split_weights

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.LayerNormalization(name="odd")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    network = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    config = network.get_config()
    with pytest.raises(ModelFormatError, match="'odd' is a LayerNormalization"):
        build_graph(config, split_weights(config, network.get_weights()))


@pytest.mark.slow
def test_converting_an_older_file_prints_no_tensorflow_lines(tmp_path, tiny_model_path):
    """A real process, as a user runs it: the new file's path alone, no TensorFlow
    start-up lines on stderr (they were there when fer8's layers imported Keras first)."""
    import os
    import subprocess

    old = _version_1_file(tiny_model_path, tmp_path / "old.fer8", compact=True)
    new = tmp_path / "new.fer8"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    process = subprocess.run(
        [sys.executable, "-m", "fer8", "export", "--model", str(old), "--format", "fer8"]
        + ["--out", str(new)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout == f"{new}\n" and process.stderr == ""


def test_a_spec_with_other_classes_than_the_network_is_refused_without_a_forward_pass(
    tiny_model_path, tmp_path, monkeypatch
):
    from fer8.models.runtime import OnnxNetwork

    calls = []
    run = OnnxNetwork.__call__
    monkeypatch.setattr(OnnxNetwork, "__call__", lambda self, b: calls.append(b) or run(self, b))
    fer8.load_model(tiny_model_path)
    assert calls == []  # the graph declares its classes: loading runs no forward pass

    odd = tmp_path / "odd.fer8"
    with zipfile.ZipFile(tiny_model_path) as source, zipfile.ZipFile(odd, "w") as archive:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == SPEC_MEMBER:
                spec = json.loads(data)
                data = json.dumps({**spec, "labels": [*spec["labels"], "bored"]}).encode()
            archive.writestr(item, data)
    with pytest.raises(ModelFormatError, match=r"gives 7 outputs.*spec has 8 labels"):
        fer8.load_model(odd)


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="Linux's /proc/cpuinfo")
def test_the_graph_cache_names_the_cpu_without_running_a_program(monkeypatch):
    """platform.processor() runs `uname -p` on Linux: a fork and an exec in every
    fer8 predict, for nothing /proc/cpuinfo's flags do not already say."""
    import platform

    from fer8.models.runtime import optimized_graph_file

    def no_program(*args, **kwargs):
        raise AssertionError("ran a program")

    monkeypatch.setattr(subprocess, "Popen", no_program)
    monkeypatch.setattr(platform, "processor", no_program)
    first, second = optimized_graph_file("abc"), optimized_graph_file("abd")
    assert first is not None and first.parent == second.parent and first != second


def test_the_session_for_two_runners_gives_the_same_answers_built_once(
    tmp_path, monkeypatch, tiny_model_path
):
    """The session that runs batches side by side (``ExpressionModel.concurrent``) has
    half the cores' threads and gives the answers of the model's own, bit for bit, also
    from two threads at once; it is built once, and not at all for a one-thread model
    or where the graph could only be kept in memory."""
    import os
    import threading

    from fer8.models.modelfile import read_model_file

    monkeypatch.setenv("FER8_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FER8_GRAPH_CACHE", raising=False)
    model = read_model_file(tiny_model_path, threads=2)
    concurrent = model.concurrent(2)
    assert concurrent is not None and concurrent is not model
    assert concurrent._run.threads == 1 and concurrent.labels == model.labels
    # Run from two threads at once: no memory pattern, which each run would hold a copy of.
    assert not concurrent._run._session.get_session_options().enable_mem_pattern
    assert model._run._session.get_session_options().enable_mem_pattern
    size = model.spec.input_size
    crops = np.random.default_rng(3).integers(0, 256, (12, size, size, 3), np.uint8)
    expected = fer8.classify(crops, model)
    np.testing.assert_array_equal(fer8.classify(crops, concurrent), expected)
    halves: dict[int, np.ndarray] = {}

    def run(half: int) -> None:
        halves[half] = fer8.classify(crops[6 * half : 6 * half + 6], concurrent)

    threads = [threading.Thread(target=run, args=(half,)) for half in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    np.testing.assert_array_equal(np.concatenate([halves[0], halves[1]]), expected)
    assert model.concurrent(2)._run is concurrent._run  # kept
    assert model.concurrent(1) is model

    cores = len(os.sched_getaffinity(0))  # threads=0: every core
    every = read_model_file(tiny_model_path).concurrent(2)
    if cores > 1:
        assert every is not None and every._run.threads == cores // 2
    assert read_model_file(tiny_model_path, threads=1).concurrent(2) is None
    monkeypatch.setenv("FER8_GRAPH_CACHE", "0")  # the graph as bytes: no second copy
    assert read_model_file(tiny_model_path, threads=2).concurrent(2) is None
