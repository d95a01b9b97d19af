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
        # Per cascade, in the layouts the evaluation reads (contiguous, native indices).
        self.idx1 = model.split_idx[..., 0].reshape(cascades, -1).astype(np.intp)
        self.idx2 = model.split_idx[..., 1].reshape(cascades, -1).astype(np.intp)
        self.thresh = model.split_thresh.reshape(cascades, -1)
        self.leaf_rows = model.leaf_values.reshape(cascades, trees * (splits + 1), -1)
        self.anchors = model.anchor_idx.astype(np.intp)
        self.deltas = np.ascontiguousarray(model.deltas.transpose(0, 2, 1)[..., None])
        self.first_split = np.arange(trees) * splits
        self.first_leaf = np.arange(trees) * (splits + 1)
        self.leaf_of = _leaf_table(splits)
        self.bit_values = (1 << np.arange(splits)).astype(np.float32)
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
        height, width = image.shape[:2]
        pixels = image.reshape(height * width, -1)
        channels = pixels.shape[1]
        ones = np.ones(channels, np.float32)
        left, top, right, bottom = (float(v) for v in rect)
        scale = np.array([right - left, bottom - top])
        # dlib maps a point to the image in double (exact here: a float times a whole
        # width, plus a whole offset), then rounds it: floor(x + 0.5).
        offset = np.array([left + 0.5, top + 0.5])
        limit = np.array([width, height])
        trees = len(self.first_leaf)
        # Row 0: the shape; then each tree's leaf, added in this order (dlib's).
        stack = np.empty((trees + 1, self.leaf_rows.shape[2]), np.float32)
        stack[0] = self.model.initial_shape
        for cascade in range(len(self.thresh)):
            shape = stack[0].reshape(-1, 2)
            tform = self._similarity(shape)
            dx, dy = self.deltas[cascade]
            # dlib: tform * delta + anchor, in float, each product and sum rounded.
            placed = tform[:, 0] * dx + tform[:, 1] * dy
            placed += shape.take(self.anchors[cascade], axis=0)
            pixel = np.floor(placed * scale + offset).astype(np.intp)
            within = pixel.astype(np.uintp) < limit  # a negative one wraps to a large one
            inside = within[:, 0] & within[:, 1]
            at = np.where(inside, pixel[:, 1] * width + pixel[:, 0], 0)
            # dlib's grey level of an RGB pixel, (r + g + b) / 3 rounded down (a sum of at
            # most 765 and its third are exact in float); 0 outside the image.
            grey = np.floor(pixels.take(at, axis=0).astype(np.float32) @ ones / channels)
            features = np.where(inside, grey, np.float32(0))
            leaf = self._leaves(cascade, features)
            np.take(self.leaf_rows[cascade], self.first_leaf + leaf, axis=0, out=stack[1:])
            stack[0] = np.add.reduce(stack, axis=0)
        points = stack[0].reshape(-1, 2) * scale + offset
        return np.floor(points).astype(np.float32)

    def _similarity(self, shape: NDArray[np.float32]) -> NDArray[np.float32]:
        """dlib's ``find_similarity_transform`` from the mean shape to ``shape`` (its
        2x2 part, made float as dlib does): Umeyama's least squares, in double.

        In two dimensions Umeyama's rotation and scale have a closed form: with the
        cross-covariance ``[[a, b], [c, d]]``, the transform is ``[[a + d, b - c],
        [c - b, a + d]]`` over the mean shape's spread (its singular values' sum, or
        their difference when the determinant is negative, is the length of ``(a + d,
        c - b)``). The mean shape is centred, so ``shape`` need not be."""
        if not self.reference_spread:
            return np.eye(2, dtype=np.float32)
        a, b, c, d = (shape.T.astype(np.float64) @ self.reference).ravel().tolist()
        scale = len(shape) * self.reference_spread
        return (np.array([[a + d, b - c], [c - b, a + d]]) / scale).astype(np.float32)

    def _leaves(self, cascade: int, features: NDArray[np.float32]) -> NDArray[np.intp]:
        """The leaf each tree of ``cascade`` ends in: every split decided at once, then
        each tree's decisions read as a number, which a table turns into its leaf (or,
        for deep trees, the trees walked down together a level at a time)."""
        left = features.take(self.idx1[cascade]) - features.take(self.idx2[cascade])
        left = left > self.thresh[cascade]
        if self.leaf_of is not None:
            # Sums of distinct powers of two below 2**15: exact in float (and fast).
            code = left.reshape(len(self.first_split), -1).astype(np.float32) @ self.bit_values
            return self.leaf_of.take(code.astype(np.intp))
        node = np.zeros(len(self.first_split), np.intp)
        while node[0] < self.splits:  # every tree is as deep as the others
            node = 2 * node + 2 - left[self.first_split + node]
        return node - self.splits


def _leaf_table(splits: int) -> NDArray[np.intp] | None:
    """For trees of at most 15 splits, the leaf reached for each combination of the
    splits' decisions (bit i: split i goes left); None for deeper trees."""
    if splits > 15:
        return None
    codes = np.arange(1 << 16)
    node = np.zeros(len(codes), np.intp)
    while node[0] < splits:
        node = 2 * node + 2 - ((codes >> node) & 1)
    return node - splits
