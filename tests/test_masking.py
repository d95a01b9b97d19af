"""Faces cut out along their landmark contour, for models whose preprocessing says so;
models that do not mask predict exactly as before."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest

import fer8
from fer8.models.modelfile import ExpressionModel, ModelSpec
from fer8.models.preprocessing import IMAGENET_CAFFE, Preprocessing
from fer8.pipeline.alignment import crop_square
from fer8.pipeline.masking import contour, face_mask, mask_face


@pytest.fixture(scope="module")
def aligned_astronaut(astronaut):
    box = fer8.detect(astronaut)[0]
    face = fer8.align(astronaut, box, fer8.landmarks(astronaut, box), size=224)
    assert face.aligned
    return face


def test_a_masked_face_is_black_outside_its_contour_and_unchanged_inside(aligned_astronaut):
    face = aligned_astronaut
    masked = mask_face(face)
    points = face.landmarks @ face.matrix[:, :2].T + face.matrix[:, 2]
    inside = face_mask(points, 224)
    assert np.all(masked.image[~inside] == 0)
    np.testing.assert_array_equal(masked.image[inside], face.image[inside])
    # The outline holds the whole face: every landmark, the forehead above the brows.
    outline = contour(points)
    assert outline[:, 1].min() < points[17:27, 1].min() - 0.2 * (points[8, 1] - points[27, 1])
    assert inside[tuple(np.round(points[[30, 36, 45, 48, 54, 57]][:, ::-1]).astype(int).T)].all()
    assert 0.35 < inside.mean() < 0.8  # the corners are background
    assert not inside[0, 0] and not inside[0, -1] and not inside[-1, 0]
    assert masked.aligned and masked.matrix is face.matrix


def test_a_box_crop_without_landmarks_is_left_as_it_is(astronaut):
    face = crop_square(astronaut, fer8.detect(astronaut)[0], 64)
    assert mask_face(face) is face


def test_classify_masks_faces_for_a_model_that_masks(aligned_astronaut, tiny_model):
    masking = ExpressionModel(
        tiny_model,
        replace(
            tiny_model.spec, preprocessing=replace(tiny_model.spec.preprocessing, mask="contour")
        ),
    )
    face = aligned_astronaut
    np.testing.assert_array_equal(
        fer8.classify([face], masking), fer8.classify([mask_face(face).image], tiny_model)
    )
    # The model that does not mask sees the face as aligned.
    np.testing.assert_array_equal(
        fer8.classify([face], tiny_model), fer8.classify([face.image], tiny_model)
    )
    assert not np.allclose(fer8.classify([face], masking), fer8.classify([face], tiny_model))


def test_a_model_file_without_a_mask_keeps_its_spec_byte_for_byte(tiny_model_path):
    """A file written before masking (the tiny test model's layout, the previous bundled
    model's) has no mask or standardize key; reading and writing its spec gives back
    the same JSON, and the bundled model's own spec round-trips too."""
    from fer8.models.registry import resolve_model

    with zipfile.ZipFile(tiny_model_path) as archive:
        stored = json.loads(archive.read("fer8.json"))
    spec = ModelSpec.from_dict(stored)
    assert spec.preprocessing.mask is None and not spec.preprocessing.standardize
    assert "mask" not in stored["preprocessing"] and "standardize" not in stored["preprocessing"]
    assert spec.to_dict()["preprocessing"] == stored["preprocessing"]
    with zipfile.ZipFile(resolve_model("default")) as archive:
        bundled = json.loads(archive.read("fer8.json"))
    assert ModelSpec.from_dict(bundled).to_dict()["preprocessing"] == bundled["preprocessing"]


def test_an_unknown_mask_is_refused():
    with pytest.raises(ValueError, match="mask must be one of"):
        Preprocessing("RGB", (0.0, 0.0, 0.0), mask="ellipse")
    assert (
        Preprocessing.from_dict({**IMAGENET_CAFFE.to_dict(), "mask": "contour"}).mask == "contour"
    )


@pytest.mark.slow
def test_a_run_masks_as_the_model_it_starts_from_unless_told(tmp_path, tiny_model_path):
    from fer8.models.modelfile import read_spec
    from fer8.models.writer import rewrite_spec
    from fer8.training.loop import TrainConfig
    from fer8.training.loop.inputs import mask_of

    spec = read_spec(tiny_model_path)
    masked = rewrite_spec(
        tiny_model_path,
        replace(spec, preprocessing=replace(spec.preprocessing, mask="contour")),
        tmp_path / "masked.fer8",
    )
    assert mask_of(TrainConfig(data="faces", init_model=str(masked))) == "contour"
    assert mask_of(TrainConfig(data="faces", init_model=str(masked), mask="none")) is None
    assert mask_of(TrainConfig(data="faces", init_model=str(tiny_model_path))) is None
    assert mask_of(TrainConfig(data="faces", backbone_weights="none", mask="contour")) == "contour"
    # The start's backbone is the run's when none is named.
    assert TrainConfig(data="faces", init_model=str(masked)).backbone == "test-cnn"
    assert TrainConfig(data="faces", backbone_weights="none").backbone == "resnet50"
