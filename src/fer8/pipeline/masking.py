"""Cutting an aligned face out along its contour, for models whose preprocessing asks.

Some training sets come with their faces already cut out onto black (the AffectNet-like
set in ``../shared``), others with hair, hands and background around them. A model
that learns from both can learn the black as a cue and meet it nowhere at prediction.
Masking every face the same way, from its own 68 landmarks, at training and at
prediction, makes the framings agree: the model sees the face and nothing else.

The contour is the convex hull of the jaw line (points 0-16) and a forehead line: the
eyebrows (17-26) raised along the face's vertical axis by 0.6 of the distance from
the brows' middle to the chin's (about to the hairline on an adult face).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from fer8.pipeline.alignment import AlignedFace

#: How far the forehead line lies above the eyebrows, as a fraction of brows-to-chin.
FOREHEAD = 0.6

#: The landmarks (iBUG 300-W indices) the contour is made of: the jaw line, the
#: eyebrows, and the chin's point, from which the forehead line is raised.
JAW = slice(0, 17)
BROWS = slice(17, 27)
CHIN = 8


def contour(points: NDArray[np.floating]) -> NDArray[np.float64]:
    """The face's outline (jaw and forehead) from its 68 landmarks, as a convex polygon
    in the points' own coordinates."""
    import cv2

    points = np.asarray(points, np.float64)
    brows = points[BROWS]
    up = brows.mean(axis=0) - points[CHIN]
    forehead = brows + FOREHEAD * up
    outline = np.concatenate([points[JAW], forehead])
    return cv2.convexHull(outline.astype(np.float32))[:, 0].astype(np.float64)


def face_mask(points: NDArray[np.floating], size: int) -> NDArray[np.bool_]:
    """A (size, size) mask, True inside the face contour of ``points`` (crop pixels)."""
    import cv2

    mask = np.zeros((size, size), np.uint8)
    # Sub-pixel vertices: 4 fractional bits, so small crops keep a smooth edge.
    polygon = np.round(contour(points) * 16).astype(np.int32)
    cv2.fillPoly(mask, [polygon], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def contour_mask(face: AlignedFace) -> NDArray[np.bool_] | None:
    """True inside ``face``'s contour, in its crop's pixels; None for a face from a plain
    box crop (no landmarks), which has no contour to cut along.

    Training that masks faces at random (``fer8 train --mask random``) keeps this next
    to the unmasked crop, so that its masked draws are exactly :func:`mask_face`'s crop.
    """
    if face.landmarks is None:
        return None
    points = np.asarray(face.landmarks, np.float64)
    in_crop = points @ face.matrix[:, :2].T + face.matrix[:, 2]
    return face_mask(in_crop, face.image.shape[0])


def mask_face(face: AlignedFace) -> AlignedFace:
    """``face`` with everything outside its contour black.

    A face classified from a plain box crop (no landmarks, ``face.aligned`` False) has
    no contour to cut along and is returned as it is.
    """
    inside = contour_mask(face)
    if inside is None:
        return face
    return replace(face, image=face.image * inside[..., None])  # uint8 times bool: uint8


def apply_mask(face: AlignedFace, mask: str | None) -> AlignedFace:
    """``face`` as a model whose preprocessing says ``mask`` must see it."""
    if mask is None:
        return face
    if mask == "contour":
        return mask_face(face)
    raise ValueError(f"unknown mask {mask!r}")
