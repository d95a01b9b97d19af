"""dlib's shape predictor evaluated with numpy: the same points as dlib, from arrays.

The algorithm and arithmetic are dlib's (dlib/image_processing/shape_predictor.h), so
that a model read by :mod:`fer8.pipeline.shape_model` gives the points dlib gives, to
the pixel: the shape starts as the mean shape in the face box; each cascade finds the
similarity transform from the mean shape to the current one (Umeyama, in double, as
dlib's ``find_similarity_transform``), places its feature pixels from their anchor
parts with it (in float, as dlib), reads the pixels' grey levels (dlib's ``(r + g + b)
/ 3`` of an RGB pixel, 0 outside the image), walks its trees (``pixel[idx1] -
pixel[idx2] > thresh`` goes left) and adds their leaves to the shape, one after
another in float. dlib rounds every point to whole pixels (``floor(x + 0.5)``), and so
does this. What differs is only the speed of getting there: the 500 trees of a cascade
are walked together, a level at a time.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fer8.pipeline.shape_model import ShapeModel


class ShapePredictor:
    """dlib's ``shape_predictor``, evaluated with numpy from a :class:`ShapeModel`.

    Args:
        model: The arrays (e.g. mapped from fer8's cache, :mod:`fer8.pipeline.shape_cache`).
    """

    def __init__(self, model: ShapeModel) -> None:
        model.check()
        self.model = model
        cascades, trees, splits = model.split_thresh.shape
        self.splits = splits
        self.depth = (splits + 1).bit_length() - 1
        # Each tree's first split and first leaf in the cascade's flattened arrays.
        self.first_split = np.arange(trees) * splits
        self.first_leaf = np.arange(trees) * (splits + 1)
        self.initial_shape = model.initial_shape.reshape(-1, 2)
        # The mean shape centred, for every cascade's similarity transform.
        reference = self.initial_shape.astype(np.float64)
        self.reference = reference - reference.sum(axis=0) / len(reference)
        self.reference_spread = float(np.sum(self.reference**2)) / len(reference)

    @property
    def num_parts(self) -> int:
        return len(self.initial_shape)

    def __call__(
        self, image: NDArray[np.uint8], rect: tuple[int, int, int, int]
    ) -> NDArray[np.float32]:
        """The points dlib's predictor fits to the face in ``rect`` (left, top, right,
        bottom, as ``dlib.rectangle``) of ``image``.

        Args:
            image: An RGB ``uint8`` (H, W, 3) array, or a grey (H, W) one.
            rect: The face box, in whole pixels.

        Returns:
            (parts, 2) float32 (x, y), whole pixels as dlib gives them.
        """
        model = self.model
        height, width = image.shape[:2]
        pixels = image.reshape(height * width, -1)
        left, top, right, bottom = (float(v) for v in rect)
        scale = np.array([right - left, bottom - top])
        origin = np.array([left, top])
        cascades, trees, leaves, size = model.leaf_values.shape
        # Row 0: the shape; then each tree's leaf, added in this order (dlib's).
        stack = np.empty((trees + 1, size), np.float32)
        stack[0] = model.initial_shape
        for cascade in range(cascades):
            shape = stack[0].reshape(-1, 2)
            tform = self._similarity(shape)
            deltas = model.deltas[cascade]
            # dlib: tform * delta + anchor, in float, each product and sum rounded.
            placed = tform[:, 0] * deltas[:, :1] + tform[:, 1] * deltas[:, 1:]
            placed += shape[model.anchor_idx[cascade]]
            x, y = _round(placed.astype(np.float64) * scale + origin).T
            inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            # dlib's grey level of an RGB pixel, (r + g + b) / 3; 0 outside the image.
            grey = pixels[(y * width + x)[inside]].astype(np.int32).sum(axis=1) // pixels.shape[1]
            features = np.zeros(len(x), np.float32)
            features[inside] = grey
            leaf = self._leaves(cascade, features)
            np.take(
                model.leaf_values[cascade].reshape(-1, size),
                self.first_leaf + leaf,
                axis=0,
                out=stack[1:],
            )
            stack[0] = np.add.reduce(stack, axis=0)
        points = stack[0].reshape(-1, 2).astype(np.float64) * scale + origin
        return _round(points).astype(np.float32)

    def _similarity(self, shape: NDArray[np.float32]) -> NDArray[np.float32]:
        """dlib's ``find_similarity_transform`` from the mean shape to ``shape`` (its
        2x2 part, made float as dlib does): Umeyama's least squares, in double.

        In two dimensions Umeyama's rotation and scale have a closed form: with the
        cross-covariance ``[[a, b], [c, d]]``, the transform is ``[[a + d, b - c],
        [c - b, a + d]]`` over the mean shape's spread (its singular values' sum, or
        their difference when the determinant is negative, is the length of ``(a + d,
        c - b)``)."""
        current = shape.astype(np.float64)
        current -= current.sum(axis=0) / len(current)
        (a, b), (c, d) = current.T @ self.reference / len(current)
        if not self.reference_spread:
            return np.eye(2, dtype=np.float32)
        m = np.array([[a + d, b - c], [c - b, a + d]]) / self.reference_spread
        return m.astype(np.float32)

    def _leaves(self, cascade: int, features: NDArray[np.float32]) -> NDArray[np.int64]:
        """The leaf each tree of ``cascade`` ends in: every split is decided at once,
        then the trees are walked down together, a level at a time."""
        idx = self.model.split_idx[cascade].reshape(-1, 2)
        left = features[idx[:, 0]] - features[idx[:, 1]] > self.model.split_thresh[cascade].ravel()
        node = np.zeros(len(self.first_split), np.int64)
        for _ in range(self.depth):
            node = 2 * node + 2 - left[self.first_split + node]
        return node - self.splits


def _round(points: NDArray[np.float64]) -> NDArray[np.int64]:
    """dlib's conversion of a point to whole pixels: ``floor(x + 0.5)``."""
    return np.floor(points + 0.5).astype(np.int64)
