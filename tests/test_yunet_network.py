"""YuNet on ONNX Runtime finds the faces OpenCV's ``FaceDetectorYN`` finds, row for row."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import skimage

from fer8.pipeline.detection import yunet, yunet_network


def opencv_rows(picture: np.ndarray, score_threshold: float) -> np.ndarray:
    """What ``cv2.FaceDetectorYN`` gives for an RGB picture at its own size."""
    detector = cv2.FaceDetectorYN.create(
        str(yunet.model_path()), "", (picture.shape[1], picture.shape[0]), score_threshold, 0.3
    )
    _, rows = detector.detect(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return np.zeros((0, 15), np.float32) if rows is None else rows


def pictures(astronaut: np.ndarray, hopper: np.ndarray) -> dict[str, np.ndarray]:
    chelsea = skimage.io.imread(skimage.data.data_dir + "/chelsea.png")
    crowd = np.full((333, 517, 3), 40, np.uint8)  # neither side a multiple of 32
    crowd[10:138, 20:148] = cv2.resize(astronaut[20:260, 110:340], (128, 128))
    crowd[200:264, 400:464] = cv2.resize(hopper[60:400, 120:410], (64, 64))
    crowd[150:182, 250:282] = cv2.resize(astronaut[20:260, 110:340], (32, 32))
    return {
        "astronaut": astronaut,
        "hopper": hopper,
        "side by side": np.ascontiguousarray(np.concatenate([astronaut, hopper[:512]], axis=1)),
        "three faces, odd size": crowd,
        "face-free": chelsea,
        "small": cv2.resize(astronaut, (97, 61)),
    }


@pytest.mark.parametrize("score_threshold", [0.6, 0.3, 0.05])
def test_the_same_rows_as_opencv(astronaut, hopper, score_threshold):
    """At 0.05 many overlapping anchors pass the score, so OpenCV's overlap check decides
    which are kept: the same ones must be."""
    for name, picture in pictures(astronaut, hopper).items():
        ours = yunet_network.detect_rows(picture, yunet.model_path(), score_threshold, 0.3)
        theirs = opencv_rows(picture, score_threshold)
        assert ours.shape == theirs.shape, name
        np.testing.assert_allclose(ours, theirs, atol=1e-3, err_msg=name)


def test_the_face_free_picture_has_no_rows(astronaut, hopper):
    chelsea = pictures(astronaut, hopper)["face-free"]
    assert yunet_network.detect_rows(chelsea, yunet.model_path(), 0.6, 0.3).shape == (0, 15)


def test_threads_share_one_session_and_get_their_own_faces(astronaut, hopper):
    every = list(pictures(astronaut, hopper).values()) * 3
    alone = [yunet_network.detect_rows(p, yunet.model_path(), 0.3, 0.3) for p in every]
    with ThreadPoolExecutor(3) as pool:
        together = list(
            pool.map(lambda p: yunet_network.detect_rows(p, yunet.model_path(), 0.3, 0.3), every)
        )
    for one, other in zip(alone, together, strict=True):
        np.testing.assert_array_equal(one, other)
    assert len(yunet_network._sessions) == 1
