"""The library draws (fer8.drawing): the pictures a script gets from ``result.plot()`` and
``result.save()`` are the ones ``fer8 predict`` and ``fer8 serve`` give, and the names
pictures are written under keep every input apart."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import save

import fer8
from fer8 import drawing
from fer8.cli import cli
from fer8.results import Box, ExplainedResult, Face, FrameResult, ImageResult


@pytest.fixture(scope="module")
def photo(tmp_path_factory, two_faces):
    return save(two_faces, tmp_path_factory.mktemp("photos") / "two.png")


def _predict(*args):
    result = CliRunner().invoke(cli, ["predict", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def test_a_result_saves_the_picture_fer8_predict_annotates(photo, tiny_model_path, tmp_path):
    _predict(photo, "--model", tiny_model_path, "--annotate", tmp_path / "cli", "--draw-landmarks")
    predictor = fer8.Predictor(tiny_model_path)
    result = predictor.predict(photo)
    assert len(result.faces) == 2
    path = result.save(tmp_path / "lib" / "two.png", landmarks=True)  # read from its source
    cli_picture = fer8.load_image(tmp_path / "cli" / "two.png")
    assert np.array_equal(fer8.load_image(path), cli_picture)
    from_array = result.plot(fer8.load_image(photo), landmarks=True)
    assert np.array_equal(from_array, cli_picture)
    assert np.array_equal(drawing.plot(result, photo.read_bytes(), landmarks=True), cli_picture)
    plain = fer8.load_image(photo)
    assert from_array.shape == plain.shape and not np.array_equal(from_array, plain)


def test_an_explained_result_saves_the_picture_fer8_predict_explains(
    photo, tiny_model_path, tmp_path
):
    _predict(photo, "--model", tiny_model_path, "--explain", tmp_path / "cli")
    predictor = fer8.Predictor(tiny_model_path)
    explained = ExplainedResult.of(str(photo), predictor.explain(photo))
    assert [f.box for f in explained.result.faces] == [
        f.box for f in predictor.predict(photo).faces
    ]
    picture = explained.plot()
    assert np.array_equal(picture, fer8.load_image(tmp_path / "cli" / "two.explain.png"))
    # The heatmaps lie under the boxes: without them the picture is the annotated one.
    annotated = explained.result.plot()
    assert picture.shape == annotated.shape and not np.array_equal(picture, annotated)
    assert np.array_equal(ExplainedResult(explained.result).plot(), annotated)


def test_an_explained_result_is_the_json_of_the_http_api(photo, tiny_model_path):
    predictor = fer8.Predictor(tiny_model_path)
    explanations = predictor.explain(photo)
    explained = ExplainedResult.of("two.png", explanations)
    height, width = fer8.load_image(photo).shape[:2]
    answer = explained.to_dict(width, height)
    assert answer["source"] == "two.png" and answer["error"] is None
    assert [face["explanation"] for face in answer["faces"]] == [
        item.to_dict(width, height) for item in explanations
    ]
    assert {k: v for k, v in answer["faces"][0].items() if k != "explanation"} == (
        explanations[0].face.to_dict()
    )


def test_to_jpeg_is_the_picture_as_jpeg(photo, astronaut):
    face = Face(Box(170, 60, 110, 110), "happy", 0.9, {"happy": 0.9, "sad": 0.1})
    result = ImageResult("astronaut.png", (face,))
    data = drawing.to_jpeg(result, astronaut)
    assert data[:3] == b"\xff\xd8\xff"
    decoded = fer8.load_image(data).astype(int)
    assert np.abs(decoded - result.plot(astronaut)).mean() < 3  # JPEG's loss only


def test_a_frame_is_drawn_on_the_image_given(astronaut):
    face = Face(Box(170, 60, 110, 110), "happy", 0.9, {"happy": 0.9, "sad": 0.1})
    frame = FrameResult("clip.mp4", (), frame=3, time=0.1)
    assert np.array_equal(frame.plot(astronaut), astronaut)  # no "no face found" in videos
    photo = ImageResult("upload", ())
    assert not np.array_equal(photo.plot(astronaut), astronaut)  # the note is drawn
    with pytest.raises(fer8.InvalidImageError, match="upload"):
        ImageResult("upload", (face,)).plot()  # no file by that name to read


def test_a_video_annotation_writes_the_video_and_its_timeline(tiny_model_path, tmp_path, astronaut):
    from videos import write_video

    clip = write_video(tmp_path / "clip.mp4", [astronaut] * 6)
    predictor = fer8.Predictor(tiny_model_path)
    written = drawing.annotate_video(
        clip, predictor.predict_video(clip), tmp_path / "out" / "clip.mp4", predictor.labels
    )
    assert written == (tmp_path / "out" / "clip.mp4", tmp_path / "out" / "clip.timeline.png")
    frames = list(fer8.read_frames(written[0], every_frame=True))  # every frame written
    assert len(frames) == 6 and fer8.load_image(written[1]).std() > 10
    # A file that is no video: nothing to draw, nothing written.
    (tmp_path / "notes.mp4").write_text("not a video")
    broken = predictor.predict_video(tmp_path / "notes.mp4")
    assert drawing.annotate_video(tmp_path / "notes.mp4", broken, tmp_path / "x.mp4", ()) == ()
    assert not (tmp_path / "x.mp4").exists()


def test_picture_names_keep_inputs_apart(tmp_path):
    for name in ("a/IMG_1.jpg", "b/IMG_1.jpg", "b/c.jpg", "b/c.png", "b/clip.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    names = drawing.PictureNames([str(tmp_path / "a"), str(tmp_path / "b")])
    assert names.of(tmp_path / "a/IMG_1.jpg") == ("a/IMG_1.jpg", "a/IMG_1.explain.png")
    assert names.of(tmp_path / "b/IMG_1.jpg") == ("b/IMG_1.jpg", "b/IMG_1.explain.png")
    assert names.of(tmp_path / "b/c.jpg") == ("b/c.jpg", "b/c.explain.png")
    assert names.of(tmp_path / "b/c.png") == ("b/c.png", "b/c-2.explain.png")
    assert names.of(tmp_path / "b/C.JPG") == ("b/C-2.JPG", "b/C-3.explain.png")  # any case
    assert names.of(tmp_path / "b/clip.mp4", video=True) == ("b/clip.mp4", "b/clip.explain.png")
    assert drawing.timeline_name("b/clip.mp4") == "b/clip.timeline.png"
    one = drawing.PictureNames([str(tmp_path / "a" / "IMG_1.jpg"), "-", "https://x.org/p/f.jpg"])
    assert one.of(tmp_path / "a" / "IMG_1.jpg") == ("IMG_1.jpg", "IMG_1.explain.png")
    assert one.of("-") == ("stdin.png", "stdin.explain.png")
    assert one.of("https://x.org/p/f.jpg") == ("f.jpg", "f.explain.png")
    assert one.of("https://x.org/") == ("download.png", "download.explain.png")
    assert one.of("-") == ("stdin-2.png", "stdin-2.explain.png")


def test_no_picture_is_written_over_an_input(tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"")
    assert drawing.drawn_over(tmp_path, {"a.jpg": str(photo)}) == str(photo)
    assert drawing.drawn_over(tmp_path / "out", {"a.jpg": str(photo)}) is None
    assert drawing.drawn_over(tmp_path, {"a.png": str(photo), "b.jpg": io.BytesIO()}) is None


def test_the_index_keeps_the_rows_of_pictures_still_there(tmp_path):
    (tmp_path / "old.png").write_bytes(b"")
    (tmp_path / "a.png").write_bytes(b"")
    drawing.write_index(tmp_path, {"old.png": "x/old.png", "gone.png": "x/gone.png"})
    index = drawing.write_index(tmp_path, {"a.png": "y/a.png"})
    assert index == tmp_path / "sources.csv"
    with open(index, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["annotated", "source"], ["a.png", "y/a.png"], ["old.png", "x/old.png"]]


def test_importing_the_drawing_module_imports_no_opencv():
    code = "import sys, fer8.drawing; print([m for m in ('cv2', 'PIL') if m in sys.modules])"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
