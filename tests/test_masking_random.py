"""``fer8 train --mask random``: training faces cut out along their contour half the
time, from a contour mask cached next to each unmasked crop; validation and prediction
unmasked. (The run itself, with its model file, is in test_training.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import save

from fer8.models.preprocessing import Preprocessing
from fer8.training.augment import Augmentation
from fer8.training.crops import pack_masks, prepare_crops, settings_key, unpack_masks
from fer8.training.datasets import Sample
from fer8.training.loop.inputs import make_dataset
from fer8.training.loop.run_folder import TrainConfig
from fer8.training.loop.splits import Split

pytestmark = pytest.mark.slow  # tf.data input pipelines (TensorFlow)

SIZE = 16
#: No augmentation and no scaling: the batches are the crops as they were masked.
NO_AUGMENTATION = Augmentation(0, 0, 0, 0, 0, 0, 0, 0, 0)
IDENTITY = Preprocessing("RGB", (0.0, 0.0, 0.0))


def _split(images: np.ndarray, masks: np.ndarray | None) -> Split:
    n = len(images)
    return Split(
        images,
        np.eye(2, dtype=np.float32)[np.arange(n) % 2],
        np.ones(n, np.float32),
        np.ones(n, np.float32),
        np.zeros(n, np.int32),
        ("faces",),
        {},
        None if masks is None else pack_masks(masks),
    )


@pytest.fixture(scope="module")
def faces():
    """Four crops that are never black (so a black pixel was masked) and their masks:
    three discs of different radii, and the all-ones mask of a crop without landmarks."""
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (4, SIZE, SIZE, 3)).astype(np.uint8)
    y, x = np.mgrid[:SIZE, :SIZE]
    radius = np.hypot(y - SIZE / 2, x - SIZE / 2)
    masks = np.stack([radius < 4, radius < 6, radius < 7, np.ones((SIZE, SIZE), bool)])
    return images, masks


def _config(**kwargs) -> TrainConfig:
    settings = {"augmentation": NO_AUGMENTATION, "mask": "random", **kwargs}
    return TrainConfig(
        data="faces", image_size=SIZE, batch_size=4, backbone_weights="none", **settings
    )


def _seen(dataset, steps: int) -> list[np.ndarray]:
    return [row for batch, _, _ in dataset.take(steps).as_numpy_iterator() for row in batch]


def _which(row: np.ndarray, images: np.ndarray, masks: np.ndarray) -> int:
    """The crop a batch row shows, by its pixels inside that crop's mask."""
    (index,) = [i for i in range(len(images)) if np.array_equal(row[masks[i]], images[i][masks[i]])]
    return index


def test_training_batches_hold_each_face_masked_and_unmasked_over_draws(faces):
    images, masks = faces
    config = _config()
    rows = _seen(make_dataset(_split(images, masks), config, IDENTITY, training=True), 40)
    framings: dict[int, set[str]] = {i: set() for i in range(len(images))}
    for row in rows:
        i = _which(row, images, masks)
        if np.array_equal(row, images[i]):
            framings[i].add("as aligned")
        else:
            # Cut out: black exactly outside its mask, the crop itself inside.
            np.testing.assert_array_equal(row, images[i] * masks[i][..., None])
            framings[i].add("cut out")
    for i in range(3):
        assert framings[i] == {"as aligned", "cut out"}, i
    masked = sum(not np.array_equal(r, images[_which(r, images, masks)]) for r in rows)
    assert 0.3 < masked / (0.75 * len(rows)) < 0.7  # half of the three masks' draws
    # The crop without landmarks has nothing to cut along: never black.
    assert framings[3] == {"as aligned"}
    # Drawn from (seed, step): the same run draws the same; another seed otherwise.
    again = _seen(make_dataset(_split(images, masks), config, IDENTITY, training=True), 40)
    np.testing.assert_array_equal(np.stack(rows), np.stack(again))
    other = make_dataset(_split(images, masks), _config(seed=1), IDENTITY, training=True)
    assert not np.array_equal(np.stack(rows), np.stack(_seen(other, 40)))


def test_masks_move_with_the_face_under_augmentation(faces):
    """Masked before augmentation: a flipped cut-out face is the flipped cut-out crop."""
    images, masks = faces
    config = _config(augmentation=Augmentation(1.0, 0, 0, 0, 0, 0, 0, 0, 0))
    masks = np.asarray(masks)
    masks[:3, :, : SIZE // 2 + 2] = False  # left-heavy masks: a flip moves the black
    flipped_masked = 0
    for row in _seen(make_dataset(_split(images, masks), config, IDENTITY, training=True), 20):
        row = row[:, ::-1]
        i = _which(row, images, masks)
        if not np.array_equal(row, images[i]):
            np.testing.assert_array_equal(row, images[i] * masks[i][..., None])
            flipped_masked += 1
    assert flipped_masked


def test_validation_and_splits_without_masks_are_never_masked(faces):
    images, masks = faces
    validation = make_dataset(_split(images, masks), _config(), IDENTITY, training=False)
    np.testing.assert_array_equal(np.stack(_seen(validation, 1)), images)
    # contour and none runs have no masks: their training batches are the crops.
    unmasked = make_dataset(_split(images, None), _config(), IDENTITY, training=True)
    for row in _seen(unmasked, 10):
        assert any(np.array_equal(row, image) for image in images)


def test_masks_pack_to_a_bit_a_pixel_and_back():
    masks = np.random.default_rng(1).random((3, 20, 20)) < 0.5
    packed = pack_masks(masks)
    assert packed.shape == (3, 20, 3) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_masks(packed, 20), masks.astype(np.uint8))


@pytest.fixture(scope="module")
def samples(tmp_path_factory, astronaut, hopper):
    """Two photos with faces, and a small noise crop in which no landmarks are found."""
    root = tmp_path_factory.mktemp("random-faces")
    noise = np.random.default_rng(3).integers(0, 256, (48, 48, 3)).astype(np.uint8)
    return [
        Sample(str(save(astronaut, root / "astronaut.png")), "happy", False),
        Sample(str(save(hopper, root / "hopper.png")), "sad", False),
        Sample(str(save(noise, root / "noise.png")), "sad", True),
    ]


def test_a_random_crop_masked_is_the_contour_crop_and_a_box_crop_is_never_masked(samples, tmp_path):
    size = 224  # the cache's own size: no resizing between the two framings
    crops = prepare_crops(samples, tmp_path, image_size=size, mask="random")
    plain = prepare_crops(samples, tmp_path, image_size=size)
    contour = prepare_crops(samples, tmp_path, image_size=size, mask="contour")
    assert crops.status == {"aligned": 2, "whole": 1}
    np.testing.assert_array_equal(crops.kept, [0, 1, 2])
    assert plain.masks is None and contour.masks is None
    # The crops themselves are as aligned; cut out along their masks, the contour crops.
    np.testing.assert_array_equal(crops.images, plain.images)
    inside = unpack_masks(crops.masks, size)
    np.testing.assert_array_equal(crops.images * inside[..., None], contour.images)
    assert 0.3 < inside[:2].mean() < 0.8 and inside[2].all()
    # Read back from the cache (its own key: an RGBA file per crop), the same.
    again = prepare_crops(samples, tmp_path, image_size=size, mask="random")
    np.testing.assert_array_equal(again.masks, crops.masks)
    np.testing.assert_array_equal(again.images, crops.images)
    keys = {settings_key(), settings_key(mask="contour"), settings_key(mask="random")}
    assert len(keys) == 3 and (tmp_path / settings_key(mask="random")).is_dir()
    # At a smaller input the mask is resized as the crop is.
    small = prepare_crops(samples, tmp_path, image_size=32, mask="random")
    assert small.masks.shape == (3, 32, 4)
    assert unpack_masks(small.masks, 32)[2].all() and not unpack_masks(small.masks, 32)[0].all()
