"""detect -> landmarks -> align on real faces (the public-domain example photos)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

import fer8
from fer8.pipeline.alignment import EYE_X, EYE_Y, landmarks_fit
from fer8.pipeline.landmarking import eye_centers
from fer8.results import Box

# Where the faces are (measured once by hand on the photos; a detector change that
# moves a box by more than a few pixels should be looked at, not silently accepted).
# Haar frames a face about like dlib does (a square from the eyebrows to the chin),
# YuNet from the hairline to the chin, narrower.
ASTRONAUT_FACE = Box(175, 65, 99, 99)
HOPPER_FACE = Box(150, 104, 231, 231)
FACES = {
    "haar": {"astronaut": ASTRONAUT_FACE, "hopper": HOPPER_FACE},
    "yunet": {"astronaut": Box(178, 63, 90, 113), "hopper": Box(183, 120, 170, 213)},
}


def roll(points: np.ndarray) -> float:
    left, right = eye_centers(points)
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


@pytest.mark.parametrize("detector", ["yunet", "haar"])
@pytest.mark.parametrize("photo", ["astronaut", "hopper"])
def test_one_face_on_each_portrait(request, photo, detector):
    boxes = fer8.detect(request.getfixturevalue(photo), detector)
    assert len(boxes) == 1
    assert boxes[0].iou(FACES[detector][photo]) > 0.8


def test_yunet_is_the_default_detector(astronaut):
    assert fer8.detect(astronaut) == fer8.detect(astronaut, "yunet")
    assert fer8.detect(astronaut) != fer8.detect(astronaut, "haar")


@pytest.mark.parametrize("detector", ["yunet", "haar"])
def test_two_people_give_exactly_two_faces_largest_first(two_faces, detector):
    boxes = fer8.detect(two_faces, detector)
    assert len(boxes) == 2
    assert boxes[0].area > boxes[1].area
    face = FACES[detector]["hopper"]
    hopper = Box(face.x + 512, face.y, face.w, face.h)
    assert boxes[0].iou(hopper) > 0.7 and boxes[1].iou(FACES[detector]["astronaut"]) > 0.7


def test_haar_false_positive_on_the_suit_is_filtered(astronaut):
    # The astronaut photo inside a larger picture: Haar alone also "finds" a face on
    # her suit; the HOG confirmation keeps only the real one.
    canvas = np.full((1500, 2000, 3), 128, np.uint8)
    canvas[400:912, 700:1212] = astronaut
    face = Box(ASTRONAUT_FACE.x + 700, ASTRONAUT_FACE.y + 400, ASTRONAUT_FACE.w, ASTRONAUT_FACE.h)
    unverified = fer8.detect(canvas, "haar", scale_factor=1.05, verify=False)
    assert len(unverified) == 2
    boxes = fer8.detect(canvas, "haar", scale_factor=1.05)
    assert len(boxes) == 1 and boxes[0].iou(face) > 0.7
    # YuNet sees no face on the suit in the first place.
    assert len(fer8.detect(canvas)) == 1


@pytest.mark.parametrize("detector", ["yunet", "haar"])
def test_large_photos_are_searched_downscaled_and_boxes_mapped_back(astronaut, detector):
    big = cv2.resize(astronaut, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # 2048 px
    boxes = fer8.detect(big, detector)
    scaled = Box(*(4 * v for v in FACES[detector]["astronaut"].to_list()))
    assert len(boxes) == 1 and boxes[0].iou(scaled) > 0.75


@pytest.mark.parametrize("detector", ["yunet", "haar"])
def test_no_face_on_blank_noise_or_tiny_images(detector):
    assert fer8.detect(np.full((300, 400, 3), 200, np.uint8), detector) == []
    noise = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    assert fer8.detect(noise, detector) == []
    for shape in [(1, 1, 3), (1, 500, 3), (7, 5, 3)]:
        assert fer8.detect(np.zeros(shape, np.uint8), detector) == []
    # The largest photo load_image accepts (100 megapixels) is searched shrunk.
    assert fer8.detect(np.zeros((10_000, 10_000, 3), np.uint8), detector) == []


@pytest.mark.parametrize("detector", ["yunet", "haar"])
def test_no_face_on_face_free_pictures(detector):
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    for name in (
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
        "horse.png",
        "moon.png",
        "brick.png",
        "grass.png",
        "gravel.png",
    ):
        assert fer8.detect(fer8.load_image(folder / name), detector) == [], name


def test_smallest_face_and_threshold_are_settings(astronaut):
    assert fer8.detect(astronaut, min_size=100) == []  # YuNet's box is 90 wide
    assert len(fer8.detect(astronaut, min_size=80)) == 1
    assert fer8.detect(astronaut, score_threshold=0.99) == []
    assert fer8.detect(astronaut, "haar", min_size=120) == []


def test_unknown_detectors_and_settings_are_refused(astronaut):
    with pytest.raises(ValueError, match="unknown detector 'mtcnn'; choose one of yunet, haar"):
        fer8.detect(astronaut, "mtcnn")
    with pytest.raises(
        ValueError,
        match="the yunet detector has no setting scale_factor; "
        "its settings: score_threshold, nms_threshold",
    ):
        fer8.detect(astronaut, scale_factor=1.1)


def test_landmarks_on_yunet_boxes_fit_as_well_as_on_haar_boxes(astronaut, hopper):
    from fer8.pipeline.detection import yunet

    for image in (astronaut, hopper):
        (face,) = yunet.detect_faces(image)
        eyes = face.keypoints[:2]  # YuNet's own eye keypoints, the image's left first
        distance = np.linalg.norm(eyes[1] - eyes[0])
        for box, detector in ((face.box, "yunet"), (fer8.detect(image, "haar")[0], "haar")):
            left, right = eye_centers(fer8.landmarks(image, box, detector=detector))
            assert np.linalg.norm(left - eyes[0]) < 0.12 * distance
            assert np.linalg.norm(right - eyes[1]) < 0.12 * distance


def test_landmarks_fall_inside_the_face(astronaut):
    points = fer8.landmarks(astronaut, ASTRONAUT_FACE, detector="haar")
    assert points.shape == (68, 2) and points.dtype == np.float32
    b = ASTRONAUT_FACE
    margin = 0.15 * b.w
    assert (points[:, 0] > b.x - margin).all() and (points[:, 0] < b.x + b.w + margin).all()
    assert (points[:, 1] > b.y - margin).all() and (points[:, 1] < b.y + b.h + margin).all()
    left, right = eye_centers(points)
    assert left[0] < right[0] and abs(roll(points)) < 10
    mouth = points[48:68].mean(axis=0)
    assert mouth[1] > left[1] + 0.3 * b.h  # the mouth is well below the eyes


@pytest.mark.parametrize("angle", [-12, 0, 15])
def test_alignment_levels_the_eyes(astronaut, angle):
    rotated = cv2.warpAffine(
        astronaut, cv2.getRotationMatrix2D((256.0, 256.0), angle, 1.0), (512, 512)
    )
    boxes = fer8.detect(rotated)
    assert len(boxes) == 1
    face = fer8.align(rotated, boxes[0], size=224)
    assert face.aligned and face.image.shape == (224, 224, 3) and face.image.dtype == np.uint8
    # Fit the landmarks again on the aligned crop: the eye line must be level and the
    # eyes at their fixed positions.
    again = fer8.landmarks(face.image, Box(22, 22, 180, 180), detector=None)
    assert abs(roll(again)) < 2.0
    left, right = eye_centers(again)
    assert abs(left[0] - EYE_X * 224) < 8 and abs(right[0] - (1 - EYE_X) * 224) < 8
    assert abs(left[1] - EYE_Y * 224) < 8


def test_align_fits_landmarks_itself_when_not_given(hopper):
    given = fer8.align(hopper, HOPPER_FACE, fer8.landmarks(hopper, HOPPER_FACE), size=112)
    fitted = fer8.align(hopper, HOPPER_FACE, size=112)
    assert fitted.aligned and fitted.image.shape == (112, 112, 3)
    np.testing.assert_array_equal(given.image, fitted.image)


def test_implausible_landmarks_fall_back_to_a_square_crop(astronaut):
    garbage = np.zeros((68, 2), np.float32)  # every point at the image corner
    assert not landmarks_fit(garbage, ASTRONAUT_FACE)
    face = fer8.align(astronaut, ASTRONAUT_FACE, garbage, size=64)
    assert not face.aligned and face.landmarks is None
    assert face.image.shape == (64, 64, 3)
    expected = fer8.crop_square(astronaut, ASTRONAUT_FACE, size=64)
    np.testing.assert_array_equal(face.image, expected.image)


def test_square_crop_outside_the_photo_is_padded_black(astronaut):
    corner = fer8.crop_square(astronaut, Box(0, 0, 100, 100), size=100, margin=1.0)
    assert (corner.image[:20, :20] == 0).all()
    assert corner.image[60:, 60:].mean() > 20


def test_tiny_faces_are_upscaled_for_landmarks(astronaut):
    # A 48x48 thumbnail of the face (FER2013-sized): landmarks still fit it.
    b = ASTRONAUT_FACE
    small = cv2.resize(
        astronaut[b.y : b.y + b.h, b.x : b.x + b.w], (48, 48), interpolation=cv2.INTER_AREA
    )
    points = fer8.landmarks(small, Box(0, 0, 48, 48), detector=None)
    assert landmarks_fit(points, Box(0, 0, 48, 48))
    assert abs(roll(points)) < 10


def test_the_yunet_model_ships_with_its_licence_and_checksum():
    from fer8.models.registry import sha256_file
    from fer8.pipeline.detection import yunet

    path = yunet.model_path()
    assert path.stat().st_size == 232_589 and sha256_file(path) == yunet.MODEL_SHA256
    assert "Apache License" in (path.parent / "face_detection_yunet.LICENSE").read_text()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"models/*.onnx", "models/*.LICENSE"' in pyproject  # in the wheel too


def _small_and_large_faces(astronaut: np.ndarray) -> tuple[np.ndarray, Box]:
    """A 900x600 picture: the astronaut photo, and beside it her portrait shrunk so her
    face is about 28 pixels wide (YuNet's box), between the default smallest face (20)
    and twice it (what the coarse pass alone finds)."""
    canvas = np.full((600, 900, 3), 110, np.uint8)
    canvas[:512, :512] = astronaut
    small = cv2.resize(astronaut, None, fx=0.31, fy=0.31, interpolation=cv2.INTER_AREA)
    canvas[300 : 300 + small.shape[0], 650 : 650 + small.shape[1]] = small
    x, y, w, h = (round(0.31 * v) for v in FACES["yunet"]["astronaut"].to_list())
    return canvas, Box(x + 650, y + 300, w, h)


@pytest.mark.parametrize("photo", ["astronaut", "hopper", "two_faces"])
def test_coarse_search_finds_the_faces_the_full_size_search_finds(request, photo):
    image = request.getfixturevalue(photo)
    coarse, full = fer8.detect(image), fer8.detect(image, coarse=False)
    assert len(coarse) == len(full) > 0
    assert all(a.iou(b) > 0.9 for a, b in zip(coarse, full))  # searched again at full size


def test_coarse_search_finds_a_small_face_beside_a_large_one(astronaut):
    picture, small = _small_and_large_faces(astronaut)
    coarse, full = fer8.detect(picture), fer8.detect(picture, coarse=False)
    assert len(full) == 2 and full[1].iou(small) > 0.5
    assert len(coarse) == 2
    assert coarse[0].iou(full[0]) > 0.8 and coarse[1].iou(full[1]) > 0.8


def test_landmarks_in_a_process_of_their_own_are_the_same_points(astronaut, two_faces, tmp_path):
    from fer8.pipeline.landmarking import LandmarkProcess, load_landmark_model

    process = LandmarkProcess()
    try:
        here = load_landmark_model()
        small = cv2.resize(astronaut, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
        for image in (astronaut, two_faces, small):  # the last is upscaled for dlib
            for box in fer8.detect(image) + [Box(-20, -20, 60, 60)]:
                np.testing.assert_array_equal(
                    fer8.landmarks(image, box, predictor=process),
                    fer8.landmarks(image, box, predictor=here),
                )
    finally:
        process.close()
    broken = tmp_path / "broken.dat"
    broken.write_bytes(b"not a model")
    process = LandmarkProcess(broken)
    with pytest.raises(fer8.errors.ModelNotFoundError, match="broken.dat could not be loaded"):
        fer8.landmarks(astronaut, Box(178, 63, 90, 113), predictor=process)
    process.close()


@pytest.fixture
def first_run(tmp_path, monkeypatch):
    """An empty fer8 cache (no converted landmark model: a first run), and nothing
    converted in the background by this process."""
    from fer8.pipeline import landmarking, shape_cache

    monkeypatch.setenv("FER8_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(landmarking, "_predictors", {})
    monkeypatch.setattr(shape_cache, "convert_later", lambda path: None)


def test_fer8_predict_gives_the_same_answer_with_the_landmark_process(
    astronaut_path, tiny_model_path, monkeypatch, first_run
):
    import json

    from click.testing import CliRunner

    from fer8.cli import cli
    from fer8.pipeline.landmark_worker import has_a_core

    outputs = []
    for separate in ("1", "0"):
        monkeypatch.setenv("FER8_LANDMARK_PROCESS", separate)
        assert has_a_core() is (separate == "1")
        args = ["predict", str(astronaut_path), "--model", str(tiny_model_path)]
        result = CliRunner().invoke(cli, [*args, "--format", "json", "--landmarks"])
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.output))
    assert outputs[0] == outputs[1] and len(outputs[0][0]["faces"]) == 1


def test_fer8_command_starts_the_landmark_process_before_its_imports(
    astronaut_path, tiny_model_path, monkeypatch, capsys, first_run
):
    import json

    from fer8 import console
    from fer8.pipeline import landmark_worker

    monkeypatch.setenv("FER8_LANDMARK_PROCESS", "1")
    assert console.starts_landmark_process(["-v", "predict", "a.jpg"])
    for args in (
        ["predict", "--help"],
        ["train", "data"],
        ["predict", "--engine", "ray", "a.jpg"],
        ["predict", "--engine=ray", "a.jpg"],
    ):
        assert not console.starts_landmark_process(args), args
    started = []
    start = landmark_worker.start
    monkeypatch.setattr(landmark_worker, "start", lambda path: started.append(path) or start(path))
    outputs = []
    for separate in ("1", "0"):
        monkeypatch.setenv("FER8_LANDMARK_PROCESS", separate)
        args = ["predict", str(astronaut_path), "--model", str(tiny_model_path), "--landmarks"]
        with pytest.raises(SystemExit) as exit:
            console.main([*args, "--format", "json"])
        assert exit.value.code == 0
        outputs.append(json.loads(capsys.readouterr().out))
    # One process, started before the imports and taken by `fer8 predict`: not a second.
    assert len(started) == 1 and not landmark_worker.prestarted()
    assert outputs[0] == outputs[1] and len(outputs[0][0]["faces"]) == 1

    landmark_worker.prestart()  # not taken (a usage error): ended when fer8 ends
    (untaken,) = landmark_worker._prestarted.values()
    landmark_worker._end_untaken()
    assert untaken.poll() is not None and not landmark_worker.prestarted()
