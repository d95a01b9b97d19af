"""Videos: sampling frames, following faces, smoothing, damaged files, and the commands
`fer8 predict` and `fer8 live` on videos. Every video is made here from the example
photos (see videos.py)."""

from __future__ import annotations

import csv
import io
import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import LABELS, save
from videos import (
    RATE,
    blank,
    crossing,
    cut,
    enters,
    face_of,
    moving,
    new_shot,
    swap,
    truncate,
    two_faces,
    write_video,
)

import fer8
from fer8.cli import cli
from fer8.errors import InvalidVideoError
from fer8.pipeline.batching import RUNNERS
from fer8.pipeline.prefetch import READ_AHEAD
from fer8.pipeline.timeline import Timeline
from fer8.pipeline.tracking import Smoother, Tracker
from fer8.pipeline.video import Frame, frame_signature, is_cut, read_frames
from fer8.results import Box


@pytest.fixture(scope="module")
def faces(astronaut, hopper):
    return {"astronaut": face_of(astronaut, "astronaut"), "hopper": face_of(hopper, "hopper")}


@pytest.fixture(scope="module")
def clips(tmp_path_factory, faces):
    """The test videos: a moving face (mp4), two faces (avi), a cut (mp4), a truncated
    file (avi), a file that is not a video, a video without faces, one face replaced by
    the other at the same place (mp4), and a scene cut behind one face (mp4)."""
    folder = tmp_path_factory.mktemp("clips")
    truncated = write_video(folder / "truncated.avi", moving(faces["astronaut"], frames=30))
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video")
    return {
        "moving": write_video(folder / "moving.mp4", moving(faces["astronaut"])),
        "two": write_video(folder / "two.avi", two_faces(faces["astronaut"], faces["hopper"])),
        "cut": write_video(folder / "cut.mp4", cut(faces["astronaut"])),
        "truncated": truncate(truncated),
        "broken": folder / "broken.mp4",
        "empty": write_video(folder / "empty.mp4", [blank() for _ in range(10)]),
        "swap": write_video(folder / "swap.mp4", swap(faces["astronaut"], faces["hopper"])),
        "shot": write_video(folder / "shot.mp4", new_shot(faces["astronaut"])),
        "enters": write_video(folder / "enters.avi", enters(faces["astronaut"], faces["hopper"])),
    }


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def frame_count(path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    return count


# --- reading and sampling ----------------------------------------------------------------


def test_frames_are_sampled_at_the_asked_rate_with_their_times(clips, faces):
    sampled = [(f.index, f.time) for f in read_frames(clips["moving"], fps=5)]
    assert sampled == [(i, pytest.approx(i / RATE)) for i in range(0, 20, 2)]
    thirds = [f.index for f in read_frames(clips["moving"], fps=3)]
    assert thirds == [0, 4, 7, 10, 14, 17]  # the first frame at or after each 1/3 s
    assert [f.index for f in read_frames(clips["moving"], every_frame=True)] == list(range(20))
    assert [f.index for f in read_frames(clips["moving"], fps=50)] == list(range(20))
    frame = next(read_frames(clips["moving"]))
    assert frame.image.shape == (360, 640, 3) and frame.image.dtype == np.uint8
    # RGB, like every image inside fer8 (OpenCV's BGR stays inside the reader).
    face = faces["astronaut"]
    placed = frame.image[70 : 70 + face.shape[0], 20 : 20 + face.shape[1]].astype(int)
    assert np.abs(placed - face).mean() < 8
    assert np.abs(placed[..., ::-1] - face).mean() > 20


def test_a_file_that_is_not_a_video_fails_when_opened(clips, tmp_path):
    with pytest.raises(InvalidVideoError, match="broken.mp4: not a video"):
        read_frames(clips["broken"])
    with pytest.raises(InvalidVideoError, match="no such file"):
        read_frames(tmp_path / "missing.mp4")


def test_a_truncated_video_gives_its_first_frames_then_names_the_frame(clips):
    frames = read_frames(clips["truncated"], every_frame=True)
    indices = []
    with pytest.raises(
        InvalidVideoError,
        match=r"truncated.avi: corrupt or truncated video: "
        r"no frame could be read from frame \d+",
    ) as info:
        for frame in frames:
            indices.append(frame.index)
    assert 5 <= len(indices) < 30 and indices == list(range(len(indices)))
    assert info.value.frame == len(indices)


# --- tracking and smoothing --------------------------------------------------------------


def test_tracker_keeps_ids_while_faces_move_and_gives_new_ones_after_a_gap():
    tracker = Tracker()
    assert tracker.update([Box(0, 0, 100, 100), Box(300, 0, 100, 100)], 0.0) == [1, 2]
    # Both moved; the list order changed; each keeps its id (overlap, then centre shift).
    assert tracker.update([Box(360, 0, 100, 100), Box(30, 0, 100, 100)], 0.2) == [2, 1]
    assert tracker.update([Box(120, 10, 100, 100)], 0.4) == [1]  # moved 0.9 face widths
    assert tracker.update([Box(700, 0, 100, 100)], 0.6) == [3]  # a new face far away
    # Face 1 is gone for longer than MAX_GAP (1 s): the same place gives a new id.
    assert tracker.update([Box(120, 10, 100, 100)], 1.8) == [4]
    # A much smaller face where face 4 was is another face.
    assert tracker.update([Box(140, 30, 30, 30), Box(120, 10, 100, 100)], 2.0) == [5, 4]


def test_smoother_averages_each_track_over_its_window():
    smoother = Smoother(0.5)
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert smoother.update(1, 0.0, a).tolist() == [1.0, 0.0]
    assert smoother.update(2, 0.0, b).tolist() == [0.0, 1.0]  # tracks do not mix
    assert smoother.update(1, 0.2, b).tolist() == [0.5, 0.5]
    assert smoother.update(1, 0.4, b).tolist() == pytest.approx([1 / 3, 2 / 3])
    assert smoother.update(1, 0.6, a).tolist() == pytest.approx([1 / 3, 2 / 3])  # 0.0 left
    assert smoother.update(1, 2.0, a).tolist() == [1.0, 0.0]


def test_a_scene_cut_ends_every_track_and_an_unlike_face_starts_its_own():
    tracker = Tracker()
    look = np.tile(np.arange(64, dtype=np.uint8)[:, None], (1, 64)) * 3  # a gradient
    other = np.ascontiguousarray(look.T)  # the same grey levels, turned: another face
    assert tracker.update([Box(0, 0, 100, 100), Box(300, 0, 100, 100)], 0.0, [look, look]) == [1, 2]
    assert tracker.update(
        [Box(0, 0, 100, 100), Box(300, 0, 100, 100)], 0.2, [look, look // 2 + 9], cut=False
    ) == [1, 2]  # darker and flatter, but the same pattern
    # Someone else where face 2 was: a new id, though the box is the same.
    assert tracker.update([Box(0, 0, 100, 100), Box(300, 0, 100, 100)], 0.4, [look, other]) == [
        1,
        3,
    ]
    # A scene cut: every track ends, whatever the boxes and looks.
    assert tracker.update(
        [Box(0, 0, 100, 100), Box(300, 0, 100, 100)], 0.6, [look, other], cut=True
    ) == [4, 5]
    assert tracker.update([Box(0, 0, 100, 100)], 0.8) == [4]  # no crops: boxes alone
    # A crop that could not be aligned is not compared, and the track keeps its look.
    assert tracker.update([Box(0, 0, 100, 100), Box(300, 0, 100, 100)], 1.0, [None, None]) == [4, 5]
    assert tracker.update([Box(0, 0, 100, 100)], 1.2, [other]) == [6]  # still 4's look


def test_a_cut_is_told_from_motion_and_light(astronaut, hopper):
    """The two example portraits, each filling the frame with its face at one place, are
    a cut; the same picture moved, zoomed, darkened or brightened is not."""
    import cv2

    # The astronaut enlarged so her face is where Grace Hopper's is in hers (600x512).
    enlarged = cv2.resize(astronaut, None, fx=1.89, fy=1.89)[:600, 153:665]
    assert enlarged.shape == hopper.shape
    sign = frame_signature
    assert is_cut(sign(enlarged), sign(hopper)) and is_cut(sign(hopper), sign(enlarged))
    assert not is_cut(sign(astronaut[:, :472]), sign(astronaut[:, 40:]))  # a pan
    assert not is_cut(sign(astronaut), sign(cv2.resize(astronaut[50:462, 50:462], (512, 512))))
    assert not is_cut(sign(astronaut), sign((astronaut * 0.5).astype(np.uint8)))
    assert not is_cut(sign(astronaut), sign(np.clip(astronaut * 1.6, 0, 255).astype(np.uint8)))
    assert not is_cut(sign(blank()), sign(blank()))


# --- Predictor.predict_video -------------------------------------------------------------


def test_a_moving_face_keeps_one_track(predictor, clips):
    results = list(predictor.predict_video(clips["moving"], fps=5))
    assert [r.frame for r in results] == list(range(0, 20, 2))
    assert [r.time for r in results] == pytest.approx([i / RATE for i in range(0, 20, 2)])
    assert all(r.error is None and len(r.faces) == 1 for r in results)
    assert {r.faces[0].track for r in results} == {1}
    xs = [r.faces[0].box.x for r in results]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 180  # it moved right 24 px a sample
    face = results[0].faces[0]
    assert list(face.probabilities) == list(LABELS)
    assert face.label == max(face.probabilities, key=face.probabilities.get)
    assert face.to_dict() == {"track": 1, **fer8.Face.to_dict(face)}
    assert results[0].to_dict() == {
        "source": str(clips["moving"]),
        "frame": 0,
        "time": 0.0,
        "faces": [face.to_dict()],
        "error": None,
    }


def test_a_face_crossing_the_picture_keeps_one_track_from_edge_to_edge(predictor, faces, tmp_path):
    """Half out of the picture, the first face's landmarks align it badly: its crop
    looked like someone else's, and the face had a new track from the second sample on."""
    clip = write_video(tmp_path / "crossing.mp4", crossing(faces["astronaut"]), rate=25)
    results = list(predictor.predict_video(clip, fps=5))
    assert len(results) == 20 and all(len(r.faces) == 1 for r in results)
    assert results[0].faces[0].box.x == 0 and results[-1].faces[0].box.x > 400
    assert {r.faces[0].track for r in results} == {1}


def test_two_faces_get_two_tracks_that_stay_on_their_side(predictor, clips):
    results = list(predictor.predict_video(clips["two"], every_frame=True))
    assert len(results) == 12 and all(len(r.faces) == 2 for r in results)
    sides = {}
    for result in results:
        for face in result.faces:
            sides.setdefault(face.track, set()).add(face.box.x < 320)
    assert sorted(sides) == [1, 2] and sorted(map(tuple, sides.values())) == [(False,), (True,)]


def test_a_cut_to_a_face_free_picture_ends_the_track(predictor, clips):
    results = list(predictor.predict_video(clips["cut"], fps=5))
    assert [r.frame for r in results] == list(range(0, 40, 2))
    tracks = [[f.track for f in r.faces] for r in results]
    assert tracks == [[1]] * 5 + [[]] * 10 + [[2]] * 5
    assert all(r.error is None for r in results)


def test_another_person_at_the_same_place_gets_a_new_track(default_predictor, clips):
    """At the default 5 fps the two portraits' boxes overlap (IoU 0.49): by boxes alone
    they were one face, "Happy, then Neutral from 1.0 s"."""
    results = list(default_predictor.predict_video(clips["swap"]))
    tracks = [[f.track for f in r.faces] for r in results]
    assert tracks == [[1]] * 5 + [[2]] * 5
    # One expression per person (the astronaut smiles, Grace Hopper does not), so each
    # track's summary is one expression throughout, not "Happy, then ... from 1.0 s".
    labels = [r.faces[0].label for r in results]
    first, second = labels[0], labels[5]
    assert first == "happy" and second != "happy"
    assert labels == [first] * 5 + [second] * 5
    timeline = Timeline(default_predictor.labels).extend(results)
    assert [timeline.summary(t) for t in timeline.tracks] == [
        "Happy throughout",
        f"{second.capitalize()} throughout",
    ]


def test_a_scene_cut_behind_a_face_starts_a_new_track(predictor, clips):
    results = list(predictor.predict_video(clips["shot"]))
    tracks = [[f.track for f in r.faces] for r in results]
    assert tracks == [[1]] * 5 + [[2]] * 5


def test_smoothing_averages_the_track_over_the_window(predictor, clips):
    raw = list(predictor.predict_video(clips["moving"], fps=5))
    smooth = list(predictor.predict_video(clips["moving"], fps=5, smooth=0.5))
    rows = np.array([list(r.faces[0].probabilities.values()) for r in raw])
    for i, result in enumerate(smooth):
        face = result.faces[0]
        window = rows[max(0, i - 2) : i + 1]  # samples 0.2 s apart: this one and two before
        np.testing.assert_allclose(
            list(face.probabilities.values()), window.mean(axis=0), atol=1e-6
        )
        assert face.label == LABELS[int(window.mean(axis=0).argmax())]


def test_faces_of_several_frames_share_forward_passes(predictor, clips, monkeypatch):
    import fer8.pipeline.batching as module

    sizes = []
    real = module.classify

    def counting(crops, *args, **kwargs):
        sizes.append(len(crops))
        return real(crops, *args, **kwargs)

    monkeypatch.setattr(module, "classify", counting)
    results = list(predictor.predict_video(clips["moving"], fps=5))  # 10 faces, batch 4
    assert len(results) == 10 and sizes == [4, 4, 2]


def test_frames_are_read_only_a_few_batches_ahead(predictor, faces):
    """Memory does not grow with the video: frames are pulled as results are taken."""
    pulled = []

    def endless():
        picture = moving(faces["astronaut"], frames=1)[0]
        for index in itertools.count():
            pulled.append(index)
            yield Frame(index, index / RATE, picture)

    results = predictor.predict_frames(endless(), "stream")
    first = list(itertools.islice(results, 3))
    assert [r.frame for r in first] == [0, 1, 2]
    # Frames beyond those taken (one face each): in the network, RUNNERS batches and a
    # part-filled one; two batches being prepared; a few decoded ahead of them in a
    # thread, and the one that thread holds. A bound of the structure, not of timing:
    # on a fast machine every stage fills up before the third result is taken.
    batch = predictor.batch_size
    ahead = (RUNNERS + 1) * batch - 1 + 2 * batch + READ_AHEAD + 1
    assert len(pulled) <= 3 + ahead
    list(itertools.islice(results, 20))
    assert len(pulled) <= 23 + ahead
    results.close()


def test_damage_gives_the_frames_before_it_then_an_error_result(predictor, clips):
    results = list(predictor.predict_video(clips["truncated"], fps=5))
    *good, last = results
    assert good and all(r.error is None and len(r.faces) == 1 for r in good)
    assert [r.frame for r in good] == list(range(0, 2 * len(good), 2))
    assert last.faces == () and "corrupt or truncated video" in last.error
    assert last.frame is not None and f"frame {last.frame}" in last.error
    (broken,) = predictor.predict_video(clips["broken"])
    assert broken.frame is None and broken.error.startswith("not a video")


# --- fer8 predict on videos --------------------------------------------------------------


@pytest.fixture()
def folder(tmp_path, clips, astronaut):
    """A folder mixing a photo, a video, a truncated video and a text file."""
    import shutil

    folder = tmp_path / "mixed"
    folder.mkdir()
    save(astronaut, folder / "a_photo.png")
    shutil.copy(clips["moving"], folder / "b_moving.mp4")
    shutil.copy(clips["truncated"], folder / "c_truncated.avi")
    (folder / "notes.txt").write_text("neither a photo nor a video")
    return folder


def test_jsonl_gives_one_object_per_sampled_frame(folder, tiny_model_path):
    result = run("predict", folder, "--model", tiny_model_path, "--format", "jsonl")
    assert result.exit_code == 1  # the truncated video failed part-way
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    photo, *frames = lines
    assert set(photo) == {"source", "faces", "error"}  # a photo's object is unchanged
    moving_frames = [f for f in frames if f["source"].endswith("b_moving.mp4")]
    assert [f["frame"] for f in moving_frames] == list(range(0, 20, 2))
    assert [f["time"] for f in moving_frames] == [i / RATE for i in range(0, 20, 2)]
    assert all(list(f) == ["source", "frame", "time", "faces", "error"] for f in frames)
    assert all([face["track"] for face in f["faces"]] == [1] for f in moving_frames)
    assert list(moving_frames[0]["faces"][0]) == [
        "track",
        "box",
        "label",
        "confidence",
        "probabilities",
        "landmarks",
        "pose",
    ]
    broken = [f for f in frames if f["source"].endswith("c_truncated.avi")]
    assert all(f["error"] is None for f in broken[:-1]) and len(broken) > 2
    assert f"frame {broken[-1]['frame']}" in broken[-1]["error"]
    # One line on stderr naming the file and the frame; the rest of the folder went on.
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    (message,) = lines
    assert message.startswith(f"fer8: {folder / 'c_truncated.avi'}: corrupt or truncated")
    assert f"frame {broken[-1]['frame']}" in message


def test_csv_and_table_add_frame_time_and_track(folder, tiny_model_path):
    result = run(
        "predict",
        folder / "a_photo.png",
        folder / "b_moving.mp4",
        "--model",
        tiny_model_path,
        "--format",
        "csv",
        "--every-frame",
    )
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == [
        "source",
        "frame",
        "time",
        "track",
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
    assert (rows[0]["frame"], rows[0]["track"], rows[0]["face"]) == ("", "", "0")  # the photo
    video = rows[1:]
    # The clip slides the photo sideways: the same head, the same pose, in every frame.
    assert max(abs(float(r["roll"]) - float(video[0]["roll"])) for r in video) < 3
    assert [r["frame"] for r in video] == [str(i) for i in range(20)]
    assert [float(r["time"]) for r in video] == [i / RATE for i in range(20)]
    assert {r["track"] for r in video} == {"1"}
    assert abs(sum(float(video[0][label]) for label in LABELS) - 1) < 1e-4
    table = run(
        "predict",
        folder / "b_moving.mp4",
        "--model",
        tiny_model_path,
        "--format",
        "table",
        "--fps",
        "2",
    ).stdout.splitlines()
    assert table[0].split()[:5] == ["SOURCE", "FRAME", "TIME", "TRACK", "FACE"]
    assert [line.split()[1:4] for line in table[1:]] == [
        [str(i), f"{i / RATE:.2f}", "1"] for i in range(0, 20, 5)
    ]


def test_a_video_alone_shows_a_bar_over_its_frames(clips, tiny_model_path, tmp_path):
    """The bar counted files and hid itself for one input: a long video showed nothing."""
    import re

    from terminal import run_with_stderr_on_a_terminal, screen

    code, written = run_with_stderr_on_a_terminal(
        ["predict", str(clips["cut"]), "--model", str(tiny_model_path), "--progress"],
        stdout=tmp_path / "out.jsonl",
    )
    assert code == 0
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 20  # 4 s at 5 fps
    # Redrawn as the frames go: a step a sampled frame, 5% each.
    shown = {int(p) for p in re.findall(r"predict .*?(\d+)%", written)}
    assert {25, 50, 75, 100} <= shown, written
    assert screen(written)[-1].startswith("predict") and screen(written)[-1].endswith("100%")


def test_a_reader_that_goes_away_ends_fer8_quietly(clips, tiny_model_path):
    """`fer8 predict long.avi | head -2` ended with `fer8: error: [Errno 32] Broken
    pipe`, exit 1; Unix tools end quietly (a shell reports 141, SIGPIPE's)."""
    import fcntl
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "fer8", "predict", str(clips["moving"]), "--every-frame"]
        + ["--model", str(tiny_model_path), "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # A small pipe, so that the 20 rows (about 30 KB) cannot all wait in it.
    fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    rows = [json.loads(process.stdout.readline()) for _ in range(2)]
    process.stdout.close()  # `head -2` has what it wants
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert [row["frame"] for row in rows] == [0, 1]
    assert stderr == ""


def test_a_video_without_faces_gives_no_face_rows_and_exit_0(clips, tiny_model_path):
    result = run("predict", clips["empty"], "--model", tiny_model_path, "--format", "table")
    assert result.exit_code == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert len(rows) == 5 and all("no face" in row for row in rows)


def test_a_file_that_is_neither_gives_one_line(clips, folder, tiny_model_path):
    result = run(
        "predict",
        clips["broken"],
        folder / "notes.txt",
        folder / "a_photo.png",
        "--model",
        tiny_model_path,
        "--format",
        "json",
    )
    assert result.exit_code == 1
    broken, notes, photo = json.loads(result.stdout)
    assert broken["frame"] is None and broken["error"].startswith("not a video")
    assert notes["error"].startswith("not an image")
    assert len(photo["faces"]) == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "broken.mp4: not a video" in lines[0] and "notes.txt" in lines[1]


def test_no_detect_is_for_photos(clips, tiny_model_path):
    result = run("predict", clips["moving"], "--no-detect", "--model", tiny_model_path)
    assert result.exit_code == 2 and "--no-detect takes pre-cropped photos" in result.stderr


def test_annotate_writes_the_video_and_a_timeline(folder, tiny_model_path, tmp_path):
    out = tmp_path / "annotated"
    result = run(
        "predict", folder, "--model", tiny_model_path, "--annotate", out, "--format", "jsonl"
    )
    assert result.exit_code == 1
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        "a_photo.png",
        "b_moving.mp4",
        "b_moving.timeline.png",
        "c_truncated.mp4",
        "c_truncated.timeline.png",
        "sources.csv",
    ]
    # As long as the input (every frame, not only the sampled ones), at its rate.
    assert frame_count(out / "b_moving.mp4") == 20
    assert frame_count(out / "c_truncated.mp4") == frame_count(folder / "c_truncated.avi")
    first = next(read_frames(out / "b_moving.mp4")).image.astype(int)
    plain = next(read_frames(folder / "b_moving.mp4")).image.astype(int)
    box = json.loads(result.stdout.splitlines()[1])["faces"][0]["box"]
    x, y, w, h = box
    assert np.abs(first[y : y + h, x] - plain[y : y + h, x]).mean() > 30  # the box is drawn
    assert np.abs(first[:, 500:] - plain[:, 500:]).mean() < 3  # the rest is the video
    timeline = fer8.load_image(out / "b_moving.timeline.png")
    assert timeline.shape[1] >= 600 and timeline.std() > 10
    index = (out / "sources.csv").read_text().splitlines()
    assert f"b_moving.mp4,{folder / 'b_moving.mp4'}" in index


# --- fer8 live ---------------------------------------------------------------------------


def test_a_live_video_gives_each_result_with_its_frame_s_picture(clips, predictor):
    """fer8.pipeline.live.LiveVideo: what fer8 live draws, each result beside the picture
    of its own frame, without the command."""
    from fer8.pipeline.live import LiveVideo, camera_source

    expected = {frame.index: frame.image for frame in read_frames(clips["moving"], fps=5)}
    with LiveVideo(predictor, str(clips["moving"]), fps=5) as video:
        pairs = list(video)
    assert video.name == str(clips["moving"])
    assert [result.frame for _, result in pairs] == sorted(expected)
    for picture, result in pairs:
        assert picture is not None and (picture == expected[result.frame]).all()
    with LiveVideo(predictor, str(clips["truncated"]), every_frame=True) as video:
        *_, (picture, last) = video
    assert last.error is not None and picture is None  # the frame that could not be read
    assert camera_source("0") == 0 and camera_source("rtsp://cam/1") == "rtsp://cam/1"


def test_live_on_a_video_file_without_a_display_prints_rows(clips, tiny_model_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = run(
        "live",
        "--camera",
        clips["cut"],
        "--model",
        tiny_model_path,
        "--format",
        "jsonl",
        "--fps",
        "5",
    )
    assert result.exit_code == 0, result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert [f["frame"] for f in frames] == list(range(0, 40, 2))
    assert [[face["track"] for face in f["faces"]] for f in frames] == [[1]] * 5 + [[]] * 10 + [
        [2]
    ] * 5


def test_live_falls_back_to_rows_when_no_window_can_open(clips, tiny_model_path, monkeypatch):
    """A DISPLAY set, but OpenCV's headless build cannot draw windows."""
    monkeypatch.setenv("DISPLAY", ":99")
    result = run("live", "--camera", clips["moving"], "--model", tiny_model_path, "--format", "csv")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["frame"] for r in rows] == [str(i) for i in range(0, 20, 2)]


def test_live_with_a_camera_that_cannot_open_is_one_line(tiny_model_path, tmp_path):
    result = run("live", "--camera", tmp_path / "nothing.mp4", "--model", tiny_model_path)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"fer8: error: {tmp_path / 'nothing.mp4'}: no such file"


def test_live_with_a_camera_index_that_opens_nothing_is_a_usage_error(tiny_model_path):
    """Exit 2, like a wrong --model, naming the device tried and those there are."""
    import glob

    result = run("live", "--camera", "63", "--model", tiny_model_path, "--no-window")
    assert result.exit_code == 2
    devices = ", ".join(sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p))) or "none"
    assert result.stderr == (
        f"fer8: error: camera 63: cannot be opened (tried /dev/video63; "
        f"video devices here: {devices})\n"
    )


def test_live_on_a_terminal_reports_an_unreadable_file_once(tmp_path, tiny_model_path):
    """stdout and stderr on one terminal: the table's row says it, not a line as well."""
    import os

    from terminal import run_on_a_terminal

    notes = tmp_path / "notes.jpg"
    notes.write_text("some notes, not a picture\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    code, text = run_on_a_terminal(
        ["live", "--camera", str(notes), "--model", str(tiny_model_path)], env=env
    )
    assert code == 1
    assert "SOURCE" in text and text.count("no frame could be read") == 1, text


def test_frames_are_decoded_in_a_thread_that_stops_with_the_results(predictor, faces):
    import threading

    picture = moving(faces["astronaut"], frames=1)[0]
    readers: set[str] = set()

    def failing():
        for index in range(3):
            readers.add(threading.current_thread().name)
            yield Frame(index, index / RATE, picture)
        raise RuntimeError("the camera fell off")

    results = predictor.predict_frames(failing(), "camera")
    with pytest.raises(RuntimeError, match="fell off"):
        next(itertools.islice(results, 3, None))
    assert readers == {"fer8-read"}

    def endless():
        for index in itertools.count():
            yield Frame(index, index / RATE, picture)

    # Only this stream's reader counts: an earlier test's may still be winding down.
    earlier = {t for t in threading.enumerate() if t.name == "fer8-read"}
    results = predictor.predict_frames(endless(), "stream")
    next(results)
    results.close()
    assert not [t for t in threading.enumerate() if t.name == "fer8-read" and t not in earlier]


# --- searching frames whole only now and then ----------------------------------------------


def faces_and_tracks(results):
    return [[(f.track, f.box) for f in r.faces] for r in results]


@pytest.mark.parametrize("clip", ["moving", "two", "cut", "shot", "swap"])
def test_following_faces_finds_what_searching_every_frame_finds(predictor, clips, clip):
    """Between whole searches (here one a second, 10 frames), faces are only looked for
    around their last boxes: the same faces, boxes and tracks as searching every frame."""
    every = faces_and_tracks(predictor.predict_video(clips[clip], every_frame=True, search_every=0))
    followed = faces_and_tracks(
        predictor.predict_video(clips[clip], every_frame=True, search_every=1.0)
    )
    assert [[t for t, _ in frame] for frame in followed] == [
        [t for t, _ in frame] for frame in every
    ]
    for a, b in zip(followed, every):
        assert all(x.iou(y) > 0.8 for (_, x), (_, y) in zip(a, b))


def test_a_face_that_enters_is_found_at_the_next_whole_search(predictor, clips):
    # 10 fps: whole searches at frames 0 and 5; the second face appears at frame 3.
    results = list(predictor.predict_video(clips["enters"], every_frame=True, search_every=0.5))
    counts = [len(r.faces) for r in results]
    assert counts == [1] * 5 + [2] * 7
    everything = list(predictor.predict_video(clips["enters"], every_frame=True, search_every=0))
    assert [len(r.faces) for r in everything] == [1] * 3 + [2] * 9
    assert {f.track for r in results for f in r.faces if f.box.x < 320} == {1}
    assert {f.track for r in results for f in r.faces if f.box.x >= 320} == {2}


def test_a_cut_is_searched_whole_and_ends_the_tracks(predictor, clips):
    results = list(predictor.predict_video(clips["cut"], every_frame=True, search_every=10.0))
    tracks = [[f.track for f in r.faces] for r in results]
    assert tracks == [[1]] * 10 + [[]] * 20 + [[2]] * 10


def test_newest_drops_the_frames_a_slow_consumer_missed():
    import time

    from fer8.pipeline.video import newest

    def camera():
        for index in range(60):
            time.sleep(0.002)
            yield index

    taken = []
    for index in newest(camera()):
        taken.append(index)
        time.sleep(0.03)  # an analysis slower than the camera
    assert taken[-1] == 59 and taken == sorted(taken)
    assert len(taken) < 30  # frames were dropped, not queued

    def failing():
        yield 1
        raise InvalidVideoError("camera 0", "frame 1 cannot be decoded", 1)

    got = []
    with pytest.raises(InvalidVideoError):
        for index in newest(failing()):
            got.append(index)
    assert got == [1]
