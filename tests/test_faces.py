"""detect -> landmarks -> align on real faces (the public-domain example photos)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

import fer8
from fer8.alignment import EYE_X, EYE_Y, landmarks_fit
from fer8.landmarking import eye_centers
from fer8.results import Box

# Where the faces are (measured once by hand on the photos; a detector change that
# moves a box by more than a few pixels should be looked at, not silently accepted).
ASTRONAUT_FACE = Box(175, 65, 99, 99)
HOPPER_FACE = Box(150, 104, 231, 231)


def roll(points: np.ndarray) -> float:
    left, right = eye_centers(points)
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


@pytest.mark.parametrize("photo, face", [("astronaut", ASTRONAUT_FACE), ("hopper", HOPPER_FACE)])
def test_one_face_on_each_portrait(request, photo, face):
    boxes = fer8.detect(request.getfixturevalue(photo))
    assert len(boxes) == 1
    assert boxes[0].iou(face) > 0.8


def test_two_people_give_exactly_two_faces_largest_first(two_faces):
    boxes = fer8.detect(two_faces)
    assert len(boxes) == 2
    assert boxes[0].area > boxes[1].area
    hopper = Box(HOPPER_FACE.x + 512, HOPPER_FACE.y, HOPPER_FACE.w, HOPPER_FACE.h)
    assert boxes[0].iou(hopper) > 0.7 and boxes[1].iou(ASTRONAUT_FACE) > 0.7


def test_haar_false_positive_on_the_suit_is_filtered(astronaut):
    # The astronaut photo inside a larger picture: Haar alone also "finds" a face on
    # her suit; the HOG confirmation keeps only the real one.
    canvas = np.full((1500, 2000, 3), 128, np.uint8)
    canvas[400:912, 700:1212] = astronaut
    face = Box(ASTRONAUT_FACE.x + 700, ASTRONAUT_FACE.y + 400, ASTRONAUT_FACE.w, ASTRONAUT_FACE.h)
    unverified = fer8.detect(canvas, scale_factor=1.05, verify=False)
    assert len(unverified) == 2
    boxes = fer8.detect(canvas, scale_factor=1.05)
    assert len(boxes) == 1 and boxes[0].iou(face) > 0.7


def test_large_photos_are_searched_downscaled_and_boxes_mapped_back(astronaut):
    big = cv2.resize(astronaut, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # 2048 px
    boxes = fer8.detect(big)
    scaled = Box(*(4 * v for v in ASTRONAUT_FACE.to_list()))
    assert len(boxes) == 1 and boxes[0].iou(scaled) > 0.75


def test_no_face_on_blank_or_noise():
    assert fer8.detect(np.full((300, 400, 3), 200, np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    assert fer8.detect(noise) == []


def test_landmarks_fall_inside_the_face(astronaut):
    points = fer8.landmarks(astronaut, ASTRONAUT_FACE)
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
    rotated = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256.0, 256.0), angle, 1.0),
                             (512, 512))
    boxes = fer8.detect(rotated)
    assert len(boxes) == 1
    face = fer8.align(rotated, boxes[0], size=224)
    assert face.aligned and face.image.shape == (224, 224, 3) and face.image.dtype == np.uint8
    # Fit the landmarks again on the aligned crop: the eye line must be level and the
    # eyes at their fixed positions.
    again = fer8.landmarks(face.image, Box(22, 22, 180, 180))
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
    small = cv2.resize(astronaut[b.y:b.y + b.h, b.x:b.x + b.w], (48, 48),
                       interpolation=cv2.INTER_AREA)
    points = fer8.landmarks(small, Box(0, 0, 48, 48))
    assert landmarks_fit(points, Box(0, 0, 48, 48))
    assert abs(roll(points)) < 10
