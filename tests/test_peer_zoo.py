"""``scripts/peer_zoo.py``: OpenCV Zoo's expression model framed as OpenCV Zoo frames it
(YuNet's five keypoints on the ArcFace template), for ``scripts/bench_accuracy.py``."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from conftest import ROOT, SHARED

ZOO_MODEL = SHARED / "weights" / "opencv_zoo_fer_mobilefacenet_int8.onnx"


@pytest.fixture(scope="module")
def peer_zoo():
    spec = importlib.util.spec_from_file_location("peer_zoo", ROOT / "scripts" / "peer_zoo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_zoo"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("peer_zoo", None)


def test_the_similarity_puts_keypoints_on_the_template(peer_zoo):
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -12.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (peer_zoo.TEMPLATE @ rotation.T) * scale + shift  # a turned, larger face
    matrix = peer_zoo.similarity(points)
    mapped = np.hstack([points, np.ones((5, 1))]) @ matrix.T
    np.testing.assert_allclose(mapped, peer_zoo.TEMPLATE, atol=1e-9)
    # A pure similarity: equal scale on both axes, no shear, no mirror.
    linear = matrix[:, :2]
    assert linear[0, 0] == pytest.approx(linear[1, 1]) and linear[0, 1] == pytest.approx(
        -linear[1, 0]
    )
    assert np.linalg.det(linear) == pytest.approx(1 / scale**2)


@pytest.mark.shared
@pytest.mark.skipif(not ZOO_MODEL.is_file(), reason="needs ../shared/weights' zoo model")
def test_the_zoo_model_reads_the_astronauts_smile(peer_zoo, astronaut):
    from fer8.pipeline.detection.yunet import detect_faces

    zoo = peer_zoo.ZooModel(str(ZOO_MODEL))
    (face,) = detect_faces(astronaut)
    answer = zoo.on_keypoints(astronaut, face.keypoints)
    assert answer.label == "happy" and answer.aligned
    assert answer.probabilities.shape == (7,)
    assert answer.probabilities.sum() == pytest.approx(1, abs=1e-5)
    # A face crop (here the astronaut's face box) is framed from its own keypoints.
    x, y, w, h = face.box.to_list()
    assert zoo.on_crop(astronaut[y : y + h, x : x + w]).label == "happy"
