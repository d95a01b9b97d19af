"""The ``fer8`` command: formats, exit codes, errors, annotation, stdin."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import fer8
from fer8.cli import cli

from conftest import LABELS, save


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
    assert set(face) == {"box", "label", "confidence", "probabilities"}
    assert list(face["probabilities"]) == list(LABELS)
    assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
    assert f"{photos / 'corrupt.jpg'}: corrupt or truncated" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_jsonl_is_one_object_per_line(photos, tiny_model_path):
    result = run("predict", photos / "astronaut.png", photos / "group", "--model",
                 tiny_model_path, "--format", "jsonl")
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(line["faces"]) for line in lines] == [1, 2]


def test_csv_has_one_row_per_face_and_a_column_per_class(photos, tiny_model_path):
    result = run("predict", photos, "--model", tiny_model_path, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["source", "face", "x", "y", "w", "h", "label", "confidence",
                             *LABELS, "error"]
    assert [(r["source"].split("/")[-1], r["face"]) for r in rows] == [
        ("astronaut.png", "0"), ("blank.png", ""), ("corrupt.jpg", ""),
        ("two.jpg", "0"), ("two.jpg", "1")]
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
    result = run("predict", "-", "--model", tiny_model_path, "--format", "json",
                 input=astronaut_path.read_bytes())
    assert result.exit_code == 0
    (image,) = json.loads(result.stdout)
    assert image["source"] == "-" and len(image["faces"]) == 1


def test_annotate_writes_readable_images(photos, tiny_model_path, tmp_path, astronaut):
    out = tmp_path / "annotated"
    result = run("predict", photos, "--model", tiny_model_path, "--annotate", out,
                 "--format", "jsonl")
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["astronaut.png", "blank.png", "group/two.jpg"]
    drawn = fer8.load_image(out / "astronaut.png")
    assert drawn.shape == astronaut.shape
    face = json.loads(result.stdout.splitlines()[0])["faces"][0]
    x, y, w, h = face["box"]
    edge = np.abs(drawn[y:y + h, x].astype(int) - astronaut[y:y + h, x].astype(int))
    assert edge.mean() > 30  # the box is drawn on the face's left edge
    assert np.abs(drawn[400:, 400:].astype(int) - astronaut[400:, 400:]).mean() < 1  # rest untouched


def test_small_images_are_enlarged_so_labels_stay_legible(tmp_path, tiny_model_path, astronaut):
    face = astronaut[65:164, 175:274]
    save(face, tmp_path / "in" / "face.png")
    run("predict", tmp_path / "in", "--model", tiny_model_path, "--no-detect",
        "--annotate", tmp_path / "out", "--format", "json")
    drawn = fer8.load_image(tmp_path / "out" / "face.png")
    assert min(drawn.shape[:2]) >= 320


def test_no_detect_and_max_faces(photos, tiny_model_path):
    group = photos / "group" / "two.jpg"
    whole = json.loads(run("predict", group, "--model", tiny_model_path, "--no-detect",
                           "--format", "json").stdout)
    assert [f["box"] for f in whole[0]["faces"]] == [[0, 0, 1024, 512]]
    one = json.loads(run("predict", group, "--model", tiny_model_path, "--max-faces", "1",
                         "--format", "json").stdout)
    assert len(one[0]["faces"]) == 1


def test_flip_gives_a_picture_and_its_mirror_image_the_same_answer(tmp_path, tiny_model_path):
    picture = np.random.default_rng(5).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    picture[:, :48] //= 4  # dark on the left: the mirror image looks different
    save(picture, tmp_path / "a.png")
    save(np.ascontiguousarray(picture[:, ::-1]), tmp_path / "b.png")

    def probabilities(*options):
        out = json.loads(run("predict", tmp_path / "a.png", tmp_path / "b.png", "--model",
                             tiny_model_path, "--no-detect", "--format", "json", *options).stdout)
        return [list(item["faces"][0]["probabilities"].values()) for item in out]

    plain, mirrored = probabilities()
    assert np.abs(np.subtract(plain, mirrored)).max() > 0.01
    plain, mirrored = probabilities("--flip")
    # Equal up to resampling: the crop is enlarged to 224 and shrunk to the model's 48.
    np.testing.assert_allclose(plain, mirrored, atol=2e-3)


def test_missing_files_are_input_errors_not_usage_errors(tmp_path, photos, tiny_model_path):
    result = run("predict", tmp_path / "nope.jpg", photos / "astronaut.png", "--model",
                 tiny_model_path, "--format", "jsonl")
    assert result.exit_code == 1
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["error"] == "no such file" and len(second["faces"]) == 1


def test_usage_and_model_errors_exit_2(photos, tmp_path, monkeypatch):
    from fer8 import registry

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
    assert result.exit_code == 1 and "no image files found" in result.stderr


def test_console_script_keeps_stdout_clean(photos, tiny_model_path):
    """A real process: results alone on stdout, one line per failure on stderr."""
    process = subprocess.run(
        [sys.executable, "-m", "fer8", "predict", str(photos), "--model", str(tiny_model_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert process.returncode == 1
    lines = process.stdout.splitlines()  # not a terminal: JSON Lines by default
    assert len(lines) == 4 and all(json.loads(line)["source"] for line in lines)
    assert process.stderr.strip().splitlines() == [
        f"fer8: {photos / 'corrupt.jpg'}: " + json.loads(lines[2])["error"]]


def test_version_and_help():
    assert run("--version").stdout.strip() == f"fer8, version {fer8.__version__}"
    help_text = run("predict", "--help").stdout
    for option in ("--format", "--annotate", "--model", "--max-faces", "--no-detect",
                   "--batch-size", "--flip"):
        assert option in help_text


def test_the_detector_and_its_settings_are_options(photos, tiny_model_path, astronaut):
    from fer8.detection import detect

    def boxes(*options):
        result = run("predict", photos / "astronaut.png", "--model", tiny_model_path,
                     "--format", "json", *options)
        assert result.exit_code == 0, result.output
        return [face["box"] for face in json.loads(result.stdout)[0]["faces"]]

    assert boxes() == [detect(astronaut)[0].to_list()]
    assert boxes("--detector", "haar") == [detect(astronaut, "haar")[0].to_list()]
    assert boxes("--min-face", "100") == []  # YuNet's box is 90 pixels wide
    assert boxes("--detect-threshold", "0.99") == []
    assert boxes("--detector", "haar", "--haar-scale-factor", "1.1",
                 "--haar-min-neighbors", "3") == [
        detect(astronaut, "haar", scale_factor=1.1, min_neighbors=3)[0].to_list()]
    wrong = run("predict", photos / "astronaut.png", "--model", tiny_model_path,
                "--haar-min-neighbors", "3")
    assert wrong.exit_code == 2
    assert "--haar-scale-factor and --haar-min-neighbors are settings of the haar detector" \
        in wrong.stderr


def test_a_broken_detector_model_is_a_one_line_error(photos, tiny_model_path, monkeypatch):
    from fer8.detection import yunet

    monkeypatch.setattr(yunet, "MODEL_SHA256", "0" * 64)
    monkeypatch.setattr(yunet, "_verified", set())
    monkeypatch.setattr(yunet, "_local", __import__("threading").local())
    result = run("predict", photos / "astronaut.png", "--model", tiny_model_path)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("fer8: error: YuNet face detector at ") and "SHA-256" in line
