"""The ``fer8`` command: formats, exit codes, errors, annotation, stdin."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import LABELS, ROOT, save

import fer8
from fer8.cli import cli


@pytest.fixture()
def photos(tmp_path, astronaut, two_faces):
    """A folder: two photos (three faces), a blank image, a corrupt file and a text file."""
    folder = tmp_path / "photos"
    save(astronaut, folder / "astronaut.png")
    save(two_faces, folder / "group" / "two.jpg")
    save(np.full((80, 80, 3), 240, np.uint8), folder / "blank.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF garbage")
    (folder / "notes.txt").write_text("not an image, and not listed: folders take images only")
    return folder


def run(*args, input=None):
    result = CliRunner().invoke(cli, list(map(str, args)), input=input, catch_exceptions=False)
    return result


def test_json_is_one_array_in_the_documented_shape(photos, tiny_model_path):
    result = run("predict", photos, "--model", tiny_model_path, "--format", "json")
    assert result.exit_code == 1  # the corrupt file failed, the others were still answered
    images = json.loads(result.stdout)
    by_name = {item["source"].split("/")[-1]: item for item in images}
    assert list(by_name) == ["astronaut.png", "blank.png", "corrupt.jpg", "two.jpg"]
    for item in images:
        assert set(item) == {"source", "faces", "error"}
    assert len(by_name["astronaut.png"]["faces"]) == 1
    assert len(by_name["two.jpg"]["faces"]) == 2
    assert by_name["blank.png"] == {"source": str(photos / "blank.png"), "faces": [], "error": None}
    assert "corrupt or truncated" in by_name["corrupt.jpg"]["error"]
    face = by_name["astronaut.png"]["faces"][0]
    assert set(face) == {"box", "label", "confidence", "probabilities", "landmarks", "pose"}
    assert list(face["probabilities"]) == list(LABELS)
    assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
    assert f"{photos / 'corrupt.jpg'}: corrupt or truncated" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_jsonl_is_one_object_per_line(photos, tiny_model_path):
    result = run(
        "predict",
        photos / "astronaut.png",
        photos / "group",
        "--model",
        tiny_model_path,
        "--format",
        "jsonl",
    )
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(line["faces"]) for line in lines] == [1, 2]


def test_csv_has_one_row_per_face_and_a_column_per_class(photos, tiny_model_path):
    result = run("predict", photos, "--model", tiny_model_path, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == [
        "source",
        "face",
        "x",
        "y",
        "w",
        "h",
        "label",
        "confidence",
        *LABELS,
        "yaw",
        "pitch",
        "roll",
        "error",
    ]
    assert [(r["source"].split("/")[-1], r["face"]) for r in rows] == [
        ("astronaut.png", "0"),
        ("blank.png", ""),
        ("corrupt.jpg", ""),
        ("two.jpg", "0"),
        ("two.jpg", "1"),
    ]
    face = rows[0]
    assert abs(sum(float(face[label]) for label in LABELS) - 1) < 1e-4
    assert float(face["confidence"]) == float(face[face["label"]])
    assert rows[2]["error"]


def test_table_for_people(photos, tiny_model_path):
    result = run("predict", photos, "--model", tiny_model_path, "--format", "table")
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["SOURCE", "FACE"]
    assert any("blank.png" in line and "no face" in line for line in lines)
    assert any("corrupt.jpg" in line and "error:" in line for line in lines)
    face_lines = [line for line in lines if line.rstrip().endswith("%")]
    assert len(face_lines) == 3


def test_stdin(astronaut_path, tiny_model_path):
    result = run(
        "predict",
        "-",
        "--model",
        tiny_model_path,
        "--format",
        "json",
        input=astronaut_path.read_bytes(),
    )
    assert result.exit_code == 0
    (image,) = json.loads(result.stdout)
    assert image["source"] == "-" and len(image["faces"]) == 1


def test_annotate_writes_readable_images(photos, tiny_model_path, tmp_path, astronaut):
    out = tmp_path / "annotated"
    result = run(
        "predict", photos, "--model", tiny_model_path, "--annotate", out, "--format", "jsonl"
    )
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["astronaut.png", "blank.png", "group/two.jpg", "sources.csv"]
    drawn = fer8.load_image(out / "astronaut.png")
    assert drawn.shape == astronaut.shape
    face = json.loads(result.stdout.splitlines()[0])["faces"][0]
    x, y, w, h = face["box"]
    edge = np.abs(drawn[y : y + h, x].astype(int) - astronaut[y : y + h, x].astype(int))
    assert edge.mean() > 30  # the box is drawn on the face's left edge
    assert (
        np.abs(drawn[400:, 400:].astype(int) - astronaut[400:, 400:]).mean() < 1
    )  # rest untouched
    # A photo without a face says so, in a dark note at its top left; the rest is as it was.
    blank = fer8.load_image(out / "blank.png")
    note = blank[: blank.shape[0] // 10, : blank.shape[1] // 4]
    assert (note < 100).mean() > 0.5 and (note > 200).any()  # dark, with light text
    assert (blank[blank.shape[0] // 2 :] == 240).all()


def test_small_images_are_enlarged_so_labels_stay_legible(tmp_path, tiny_model_path, astronaut):
    face = astronaut[65:164, 175:274]
    save(face, tmp_path / "in" / "face.png")
    run(
        "predict",
        tmp_path / "in",
        "--model",
        tiny_model_path,
        "--no-detect",
        "--annotate",
        tmp_path / "out",
        "--format",
        "json",
    )
    drawn = fer8.load_image(tmp_path / "out" / "face.png")
    assert min(drawn.shape[:2]) >= 320


def test_no_detect_and_max_faces(photos, tiny_model_path):
    group = photos / "group" / "two.jpg"
    whole = json.loads(
        run("predict", group, "--model", tiny_model_path, "--no-detect", "--format", "json").stdout
    )
    assert [f["box"] for f in whole[0]["faces"]] == [[0, 0, 1024, 512]]
    one = json.loads(
        run(
            "predict", group, "--model", tiny_model_path, "--max-faces", "1", "--format", "json"
        ).stdout
    )
    assert len(one[0]["faces"]) == 1


def test_flip_gives_a_picture_and_its_mirror_image_the_same_answer(tmp_path, tiny_model_path):
    picture = np.random.default_rng(5).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    picture[:, :48] //= 4  # dark on the left: the mirror image looks different
    save(picture, tmp_path / "a.png")
    save(np.ascontiguousarray(picture[:, ::-1]), tmp_path / "b.png")

    def probabilities(*options):
        out = json.loads(
            run(
                "predict",
                tmp_path / "a.png",
                tmp_path / "b.png",
                "--model",
                tiny_model_path,
                "--no-detect",
                "--format",
                "json",
                *options,
            ).stdout
        )
        return [list(item["faces"][0]["probabilities"].values()) for item in out]

    plain, mirrored = probabilities()
    assert np.abs(np.subtract(plain, mirrored)).max() > 0.01
    plain, mirrored = probabilities("--flip")
    # Equal up to resampling: the crop is enlarged to 224 and shrunk to the model's 48.
    np.testing.assert_allclose(plain, mirrored, atol=2e-3)


def test_missing_files_are_input_errors_not_usage_errors(tmp_path, photos, tiny_model_path):
    result = run(
        "predict",
        tmp_path / "nope.jpg",
        photos / "astronaut.png",
        "--model",
        tiny_model_path,
        "--format",
        "jsonl",
    )
    assert result.exit_code == 1
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["error"] == "no such file" and len(second["faces"]) == 1


def test_usage_and_model_errors_exit_2(photos, tmp_path, monkeypatch):
    from fer8.models import registry

    assert run("predict").exit_code == 2
    assert run("predict", photos, "--format", "xml").exit_code == 2
    missing = run("predict", photos, "--model", tmp_path / "none.fer8")
    assert missing.exit_code == 2 and "no such model file" in missing.stderr
    monkeypatch.setattr(registry, "MODELS", {})  # an installation without its default model
    default = run("predict", photos / "astronaut.png")
    assert default.exit_code == 2 and "no model is installed" in default.stderr
    monkeypatch.undo()
    (tmp_path / "fake.fer8").write_text("hello")
    fake = run("predict", photos, "--model", tmp_path / "fake.fer8")
    assert fake.exit_code == 2 and "not a fer8 model file" in fake.stderr
    assert "Traceback" not in missing.stderr + default.stderr + fake.stderr


def test_verbose_adds_a_traceback(tmp_path, photos):
    (tmp_path / "fake.fer8").write_text("hello")
    result = run("-v", "predict", photos, "--model", tmp_path / "fake.fer8")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "not a fer8 model file" in result.stderr


def test_empty_folder_is_reported(tmp_path, tiny_model_path):
    (tmp_path / "empty").mkdir()
    result = run("predict", tmp_path / "empty", "--model", tiny_model_path)
    assert result.exit_code == 1 and "no image or video files found" in result.stderr


def test_console_script_keeps_stdout_clean(photos, tiny_model_path):
    """A real process: results alone on stdout, one line per failure on stderr."""
    process = subprocess.run(
        [sys.executable, "-m", "fer8", "predict", str(photos), "--model", str(tiny_model_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 1
    lines = process.stdout.splitlines()  # not a terminal: JSON Lines by default
    assert len(lines) == 4 and all(json.loads(line)["source"] for line in lines)
    assert process.stderr.strip().splitlines() == [
        f"fer8: {photos / 'corrupt.jpg'}: " + json.loads(lines[2])["error"]
    ]


def test_version_and_help():
    assert run("--version").stdout.strip() == f"fer8, version {fer8.__version__}"
    help_text = run("predict", "--help").stdout
    for option in (
        "--format",
        "--annotate",
        "--model",
        "--max-faces",
        "--no-detect",
        "--batch-size",
        "--flip",
    ):
        assert option in help_text


def test_the_detector_and_its_settings_are_options(photos, tiny_model_path, astronaut):
    from fer8.pipeline.detection import detect

    def boxes(*options):
        result = run(
            "predict",
            photos / "astronaut.png",
            "--model",
            tiny_model_path,
            "--format",
            "json",
            *options,
        )
        assert result.exit_code == 0, result.output
        return [face["box"] for face in json.loads(result.stdout)[0]["faces"]]

    assert boxes() == [detect(astronaut)[0].to_list()]
    assert boxes("--detector", "haar") == [detect(astronaut, "haar")[0].to_list()]
    assert boxes("--min-face", "100") == []  # YuNet's box is 90 pixels wide
    assert boxes("--detect-threshold", "0.99") == []
    assert boxes(
        "--detector", "haar", "--haar-scale-factor", "1.1", "--haar-min-neighbors", "3"
    ) == [detect(astronaut, "haar", scale_factor=1.1, min_neighbors=3)[0].to_list()]
    wrong = run(
        "predict", photos / "astronaut.png", "--model", tiny_model_path, "--haar-min-neighbors", "3"
    )
    assert wrong.exit_code == 2
    assert (
        "--haar-scale-factor and --haar-min-neighbors are settings of the haar detector"
        in wrong.stderr
    )


def test_a_broken_detector_model_is_a_one_line_error(photos, tiny_model_path, monkeypatch):
    from fer8.pipeline.detection import yunet

    monkeypatch.setattr(yunet, "MODEL_SHA256", "0" * 64)
    monkeypatch.setattr(yunet, "_verified", set())
    monkeypatch.setattr(yunet.yunet_network, "_sessions", {})
    result = run("predict", photos / "astronaut.png", "--model", tiny_model_path)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("fer8: error: YuNet face detector at ") and "SHA-256" in line


def test_annotated_pictures_with_the_same_name_are_all_kept(
    tmp_path, tiny_model_path, astronaut, hopper
):
    """Two cameras' IMG_0001.jpg, in two folders: each gets its own annotated picture,
    in its own folder, and sources.csv says which input each came from."""
    first = save(astronaut, tmp_path / "a" / "IMG_0001.png")
    second = save(hopper, tmp_path / "b" / "IMG_0001.png")

    def annotate(out, *inputs):
        result = run(
            "predict",
            *inputs,
            "--model",
            tiny_model_path,
            "--annotate",
            tmp_path / out,
            "--format",
            "json",
        )
        assert result.exit_code == 0, result.output
        with open(tmp_path / out / "sources.csv", newline="") as handle:
            return {row["annotated"]: row["source"] for row in csv.DictReader(handle)}

    for out, inputs in (("files", (first, second)), ("folders", (first.parent, second.parent))):
        assert annotate(out, *inputs) == {
            "a/IMG_0001.png": str(first),
            "b/IMG_0001.png": str(second),
        }
        assert fer8.load_image(tmp_path / out / "a" / "IMG_0001.png").shape == astronaut.shape
        assert fer8.load_image(tmp_path / out / "b" / "IMG_0001.png").shape == hopper.shape
    # The same file twice: two pictures, the second numbered.
    assert annotate("twice", first, first) == {
        "IMG_0001.png": str(first),
        "IMG_0001-2.png": str(first),
    }


def test_annotate_never_draws_over_an_input(tmp_path, tiny_model_path, astronaut):
    photo = save(astronaut, tmp_path / "photos" / "me.png")
    before = photo.read_bytes()
    result = run("predict", photo.parent, "--model", tiny_model_path, "--annotate", photo.parent)
    assert result.exit_code == 2 and "would draw over the input" in result.stderr
    assert photo.read_bytes() == before


def test_table_columns_line_up_whatever_the_path_length(tmp_path, tiny_model_path, astronaut):
    short = save(astronaut, tmp_path / "a.png")
    long = save(
        astronaut,
        tmp_path
        / ("a-folder-name-well-over-thirty-two-characters" * 2)
        / "portrait-with-a-long-name.png",
    )
    lines = run(
        "predict", short, long, "--model", tiny_model_path, "--format", "table"
    ).stdout.splitlines()
    assert len(lines) == 3 and len(str(long)) > 80
    header = lines[0]
    for line in lines[1:]:
        # The face index ends under FACE's last letter; the label starts under EXPRESSION.
        assert line[header.index("FACE") + 3] == "0" and line[header.index("FACE") + 4] == " "
        assert line[header.index("EXPRESSION") :].split()[0] in {n.capitalize() for n in LABELS}


def test_on_a_terminal_each_failure_is_reported_once(tmp_path, tiny_model_path, astronaut):
    """stdout and stderr on one terminal: the table's error row is the report; a line on
    stderr as well would show the failure twice."""
    from terminal import run_on_a_terminal

    save(astronaut, tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF garbage")
    code, text = run_on_a_terminal(["predict", str(tmp_path), "--model", str(tiny_model_path)])
    assert code == 1
    assert "SOURCE" in text  # a terminal gets the table
    assert text.count("broken.jpg") == 1 and "corrupt or truncated" in text


def test_max_pixels_lets_a_panorama_in(tmp_path, tiny_model_path):
    wide = save(np.full((200, 2000, 3), 128, np.uint8), tmp_path / "wide.png")
    refused = run(
        "predict", wide, "--model", tiny_model_path, "--format", "json", "--max-pixels", "100000"
    )
    assert refused.exit_code == 1
    assert "too large" in json.loads(refused.stdout)[0]["error"]
    assert "--max-pixels" in refused.stderr
    allowed = run(
        "predict", wide, "--model", tiny_model_path, "--format", "json", "--max-pixels", "400000"
    )
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)[0]["error"] is None


def test_help_says_what_the_bundled_model_predicts():
    from fer8.labels import display_name
    from fer8.models.modelfile import read_spec
    from fer8.models.registry import resolve_model

    labels = read_spec(resolve_model(None)).labels
    help_text = " ".join(run("--help").stdout.split())
    assert "predicts " + ", ".join(map(display_name, labels)) + "." in help_text
    assert "worry" not in help_text.lower()  # the bundled model cannot predict it


def test_help_and_the_package_name_the_bundled_network():
    """Both called it a ResNet50 after the bundled model became a FaceNet."""
    import re

    from fer8.cli.common import NETWORKS
    from fer8.models.modelfile import read_spec
    from fer8.models.registry import resolve_model

    spec = read_spec(resolve_model(None))
    help_text = " ".join(run("--help").stdout.split())
    network = f"{NETWORKS[spec.backbone]} at {spec.input_size} pixels"
    assert f"The bundled model (used without --model) is {network}" in help_text
    assert spec.backbone == "facenet" and "ResNet50" not in help_text
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    (description,) = re.findall(r'^description = "(.*)"$', pyproject, re.MULTILINE)
    assert "FaceNet (Inception-ResNet-v1) classifier" in description
    assert "ResNet50" not in description


def test_serve_without_its_extra_names_the_install_command_for_this_checkout(monkeypatch):
    from fer8.cli import install_command

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the extra were not installed
    for module in ("fer8.serving.server", "fer8.serving.line"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    result = run("serve")
    assert result.exit_code == 2
    assert "fastapi is missing" in result.stderr
    command = install_command("serve")
    assert command in result.stderr
    # These tests run from a source checkout: pip must install that checkout with its
    # extra (``fer8[serve]`` would fetch another fer8 from an index).
    assert command.startswith(f"{sys.executable} -m pip install -e ")
    assert command.endswith(f"{ROOT}[serve]'")
    assert "serve = [" in (ROOT / "pyproject.toml").read_text()


def test_serve_without_its_extra_names_the_extra_s_package_not_a_dependency(monkeypatch):
    """Without the extra, FastAPI's own dependency anyio is missing too, and the server
    module imported it first: the message named anyio."""
    for module in ("anyio", "fastapi"):
        monkeypatch.setitem(sys.modules, module, None)
    for module in ("fer8.serving.server", "fer8.serving.line"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    result = run("serve")
    assert result.exit_code == 2
    assert "needs the serve extra (fastapi is missing)" in result.stderr
    assert "anyio" not in result.stderr


def test_the_library_names_the_serve_extra_s_missing_package(monkeypatch):
    """fer8.serving.launch.require_extra says which of the extra's packages to install
    (pip's name), not the dependency of theirs whose import failed first."""
    from fer8.serving.launch import require_extra

    for module in ("anyio", "fastapi"):
        monkeypatch.setitem(sys.modules, module, None)
    for module in ("fer8.serving.server", "fer8.serving.line"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ModuleNotFoundError) as raised:
        require_extra()
    assert raised.value.name == "fastapi"


def test_install_command_follows_how_fer8_was_installed(monkeypatch, tmp_path):
    from importlib import metadata

    from fer8.cli import common as cli_module

    class Installed:
        def __init__(self, direct_url):
            self.direct_url = direct_url

        def read_text(self, name):
            return self.direct_url if name == "direct_url.json" else None

    site = tmp_path / "site-packages" / "fer8" / "cli" / "common.py"
    monkeypatch.setattr(cli_module, "__file__", str(site))
    monkeypatch.setattr(metadata, "distribution", lambda name: Installed(None))
    assert cli_module.install_command("serve").endswith(" -m pip install 'fer8[serve]'")
    checkout = tmp_path / "fer8 checkout"
    checkout.mkdir()
    monkeypatch.setattr(
        metadata,
        "distribution",
        lambda name: Installed(json.dumps({"url": checkout.as_uri(), "dir_info": {}})),
    )
    assert cli_module.install_command("serve").endswith(f" -m pip install '{checkout}[serve]'")


def test_landmarks_in_the_csv_and_explanations_beside_the_annotated_pictures(
    photos, tiny_model_path, tmp_path
):
    out = tmp_path / "out"
    result = run(
        "predict",
        photos,
        "--model",
        tiny_model_path,
        "--format",
        "csv",
        "--landmarks",
        "--annotate",
        out,
        "--explain",
        out,
        "--draw-landmarks",
    )
    assert result.exit_code == 1  # the corrupt file
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    faces = [row for row in rows if row["face"]]
    assert len(faces) == 3 and all(row["x_67"] and row["yaw"] for row in faces)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "astronaut.explain.png",
        "astronaut.png",
        "blank.explain.png",
        "blank.png",
        "group/two.explain.png",
    ]
    index = (out / "sources.csv").read_text()
    assert "group/two.explain.png" in index and "group/two.jpg" in index
    explained = fer8.load_image(out / "astronaut.explain.png")
    plain = fer8.load_image(out / "astronaut.png")
    assert explained.shape == plain.shape and not np.array_equal(explained, plain)


def test_explain_keeps_apart_pictures_that_share_a_name(
    tmp_path, tiny_model_path, astronaut, hopper
):
    """``a.jpg`` and ``a.png`` gave one ``a.explain.png``, the second drawn over the first."""
    first = save(astronaut, tmp_path / "in" / "a.png")
    second = save(hopper, tmp_path / "in" / "a.jpg")
    out = tmp_path / "out"
    result = run("predict", first, second, "--model", tiny_model_path, "--explain", out)
    assert result.exit_code == 0, result.output
    with open(out / "sources.csv", newline="") as handle:
        index = {row["annotated"]: row["source"] for row in csv.DictReader(handle)}
    assert index == {"a.explain.png": str(first), "a-2.explain.png": str(second)}
    assert fer8.load_image(out / "a.explain.png").shape == astronaut.shape
    assert fer8.load_image(out / "a-2.explain.png").shape == hopper.shape


@pytest.mark.slow
def test_explain_refuses_a_model_without_an_exact_map(photos, tmp_path):
    import keras

    from fer8.models.modelfile import ModelSpec
    from fer8.models.preprocessing import IMAGENET_CAFFE
    from fer8.training.keras_models import save_model

    inputs = keras.Input((48, 48, 3))
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, strides=4)(inputs))
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(x)
    path = save_model(
        keras.Model(inputs, outputs),
        ModelSpec(LABELS, 48, IMAGENET_CAFFE, "test-cnn", name="flat"),
        tmp_path / "flat.fer8",
    )
    result = run(
        "predict", photos / "astronaut.png", "--model", path, "--explain", tmp_path / "out"
    )
    assert result.exit_code == 2 and "global average pooling" in result.stderr
    assert not (tmp_path / "out").exists()
    assert run("predict", photos / "astronaut.png", "--draw-landmarks").exit_code == 2


def test_an_error_line_goes_above_the_progress_bar(tmp_path, tiny_model_path, astronaut):
    """Results to a file, the bar on the terminal: a failure's line takes a line of its
    own (it was glued onto the bar: `predict [####--] 40%  00:00:01fer8: ...`), and the
    bar is drawn again below it."""
    from terminal import run_with_stderr_on_a_terminal, screen

    folder = tmp_path / "many"
    for name in ("a1.png", "a2.png", "c1.png", "c2.png"):
        save(astronaut, folder / name)
    (folder / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF garbage")
    code, written = run_with_stderr_on_a_terminal(
        ["predict", str(folder), "--model", str(tiny_model_path), "--format", "jsonl"],
        stdout=tmp_path / "out.jsonl",
    )
    assert code == 1
    lines = screen(written)
    error = [line for line in lines if "b_broken.jpg" in line]
    assert len(error) == 1 and error[0].startswith(
        f"fer8: {folder / 'b_broken.jpg'}: corrupt or truncated image"
    ), lines
    assert lines[0].startswith("fer8: ") and lines[-1].startswith("predict")
    assert lines[-1].endswith("100%") and len(lines) == 2
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 5


def test_json_keeps_short_lists_on_one_line(tmp_path, tiny_model_path, astronaut):
    from fer8.output import to_json

    photo = save(astronaut, tmp_path / "a.png")
    result = run("predict", photo, "--model", tiny_model_path, "--format", "json")
    (item,) = json.loads(result.stdout)
    x, y, w, h = item["faces"][0]["box"]
    assert f'        "box": [{x}, {y}, {w}, {h}],' in result.stdout.splitlines()
    # A confusion matrix: each row on a line, the object a line per key.
    row = [120, 3, 0, 14, 0, 2, 5]
    report = {
        "labels": ["angry", "happy"],
        "counts": [row] * 7,
        "empty": [],
        "nested": [{"a": [1, 2]}],
    }
    text = to_json(report)
    assert json.loads(text) == report
    assert text.splitlines()[:4] == [
        "{",
        '  "labels": ["angry", "happy"],',
        '  "counts": [',
        "    [120, 3, 0, 14, 0, 2, 5],",
    ]
    assert '  "empty": [],' in text and '      "a": [1, 2]' in text
