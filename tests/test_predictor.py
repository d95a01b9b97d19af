"""Predictor: the whole chain, one image and many."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import LABELS, save

import fer8
from fer8.errors import InvalidImageError


def test_one_face_with_probabilities_in_label_order(predictor, astronaut_path):
    result = predictor.predict(astronaut_path)
    assert result.source == str(astronaut_path) and result.error is None
    (face,) = result.faces
    assert list(face.probabilities) == list(LABELS)
    values = np.array(list(face.probabilities.values()))
    assert abs(values.sum() - 1) < 1e-5
    assert face.label == LABELS[int(values.argmax())] and face.confidence == values.max()
    assert face.aligned and face.landmarks.shape == (68, 2)
    assert face.box.iou(fer8.Box(178, 63, 90, 113)) > 0.8  # YuNet's (see test_faces)


def test_predict_matches_the_stages_called_by_hand(predictor, tiny_model, hopper):
    (box,) = fer8.detect(hopper)
    crop = fer8.align(hopper, box, fer8.landmarks(hopper, box))
    by_hand = fer8.classify([crop], tiny_model)[0]
    (face,) = predictor.predict(hopper).faces
    np.testing.assert_allclose(list(face.probabilities.values()), by_hand, atol=1e-6)


def test_two_faces_and_max_faces(tiny_model, two_faces):
    both = fer8.Predictor(tiny_model).predict(two_faces)
    assert len(both.faces) == 2 and both.faces[0].box.area > both.faces[1].box.area
    largest = fer8.Predictor(tiny_model, max_faces=1).predict(two_faces)
    assert [f.box for f in largest.faces] == [both.faces[0].box]


def test_no_face_is_an_empty_result_not_an_error(predictor):
    result = predictor.predict(np.full((240, 320, 3), 90, np.uint8))
    assert result.faces == () and result.error is None and result.ok


def test_without_detection_the_whole_image_is_the_face(predictor, astronaut):
    crop = astronaut[65:164, 175:274]  # the face, pre-cropped
    (face,) = predictor.predict(crop, detect=False).faces
    assert face.box == fer8.Box(0, 0, 99, 99)
    assert face.aligned
    blank = predictor.predict(np.zeros((48, 48, 3), np.uint8), detect=False)
    assert len(blank.faces) == 1 and not blank.faces[0].aligned  # square crop fallback


def test_bad_input_raises_for_a_single_image(predictor, tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(InvalidImageError, match="broken.jpg"):
        predictor.predict(path)


def test_many_images_in_order_with_failures_reported(
    predictor, tmp_path, astronaut, hopper, two_faces
):
    paths = [
        save(astronaut, tmp_path / "a.png"),
        tmp_path / "missing.jpg",
        save(two_faces, tmp_path / "b.jpg"),
        save(np.full((64, 64, 3), 255, np.uint8), tmp_path / "blank.png"),
        save(hopper, tmp_path / "c.jpg"),
    ]
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    paths.insert(3, tmp_path / "corrupt.png")
    results = list(predictor.predict_many(paths))
    assert [r.source for r in results] == [str(p) for p in paths]
    assert [len(r.faces) for r in results] == [1, 0, 2, 0, 0, 1]
    assert results[1].error == "no such file"
    assert "corrupt or truncated" in results[3].error
    assert results[4].error is None  # blank: no face, not an error
    # Batching faces across images (batch_size=4 here) gives the same numbers as one by one.
    for path, result in zip(paths, results):
        if result.ok and result.faces:
            single = predictor.predict(path)
            for a, b in zip(result.faces, single.faces):
                assert a.box == b.box
                np.testing.assert_allclose(
                    list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-5
                )


@pytest.mark.parametrize("workers", [0, 2])
def test_many_images_with_any_number_of_workers(tiny_model, astronaut, workers):
    predictor = fer8.Predictor(tiny_model, workers=workers, batch_size=3, warmup=False)
    images = [astronaut] * 7
    results = list(predictor.predict_many(images))
    assert len(results) == 7 and all(len(r.faces) == 1 for r in results)
    first = results[0].faces[0].probabilities
    for result in results[1:]:
        assert result.faces[0].probabilities == pytest.approx(first, abs=1e-5)


def test_two_images_are_prepared_at_once_by_default(tiny_model, astronaut, monkeypatch):
    """Preparing (decoding, detecting, aligning) is most of a folder's work on two
    cores: two threads do it, beside the network's."""
    import threading

    import fer8.pipeline.predictor as module

    both = threading.Barrier(2, timeout=10)
    real = module.load_image

    def together(source, **kwargs):
        both.wait()  # broken, and the image an error, unless two are loaded at once
        return real(source, **kwargs)

    monkeypatch.setattr(module, "load_image", together)
    predictor = fer8.Predictor(tiny_model, warmup=False)
    results = list(predictor.predict_many([astronaut] * 4))
    predictor.close()
    assert [r.error for r in results] == [None] * 4


def test_results_serialise_to_the_documented_shape(predictor, astronaut):
    data = predictor.predict(astronaut).to_dict()
    assert set(data) == {"source", "faces", "error"}
    (face,) = data["faces"]
    assert set(face) == {"box", "label", "confidence", "probabilities", "landmarks", "pose"}
    assert all(isinstance(v, int) for v in face["box"])
    assert isinstance(face["confidence"], float)


def test_arguments_are_checked(tiny_model):
    with pytest.raises(ValueError):
        fer8.Predictor(tiny_model, max_faces=0)
    with pytest.raises(ValueError):
        fer8.Predictor(tiny_model, batch_size=0)


@pytest.mark.parametrize("warmup", [True, False])
def test_a_broken_detector_file_fails_the_predictor_not_its_threads(
    tiny_model, monkeypatch, warmup
):
    """Without a warm-up the preparation threads build their detectors on first use; a
    detector file that is not fer8's is still an error of the constructor."""
    from fer8.errors import ChecksumMismatchError
    from fer8.pipeline.detection import yunet

    monkeypatch.setattr(yunet, "MODEL_SHA256", "0" * 64)
    monkeypatch.setattr(yunet, "_verified", set())
    monkeypatch.setattr(yunet.yunet_network, "_sessions", {})
    with pytest.raises(ChecksumMismatchError, match="YuNet"):
        fer8.Predictor(tiny_model, warmup=warmup)
