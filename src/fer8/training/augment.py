"""Training-time augmentation of aligned face crops, as batched TensorFlow ops for tf.data.

Aligned crops already agree on where the eyes are, so geometric changes stay small
(what alignment error and head pose leave over). Photometric changes and resolution
loss are larger: users' photos range from studio portraits to 48-pixel faces in group
shots, and FER2013 is low-resolution grayscale, so each side must look like the other.

All functions take and return float32 RGB batches in 0-255. Every random draw is
stateless, derived from the seed passed in, so a batch augmented twice with the same
seed comes out the same bit for bit: that is what makes a training run repeatable, and
a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Augmentation:
    """How strongly to augment; the defaults suit aligned faces.

    Attributes:
        flip: Probability of a horizontal flip (expressions are symmetric enough).
        rotation: Largest rotation, in degrees.
        scale: Largest relative zoom in or out.
        shift: Largest shift, as a fraction of the side.
        brightness: Largest brightness change, as a fraction of 255.
        contrast: Largest relative contrast change.
        grayscale: Probability of dropping colour.
        low_resolution: Probability of shrinking to 1/5-1/2 of the side and back.
        blur: Probability of a Gaussian blur (sigma 0.5-1.5 pixels at 224).
    """

    flip: float = 0.5
    rotation: float = 10.0
    scale: float = 0.1
    shift: float = 0.06
    brightness: float = 0.2
    contrast: float = 0.3
    grayscale: float = 0.2
    low_resolution: float = 0.25
    blur: float = 0.2


def augment_batch(images, augmentation: Augmentation, seed):
    """Augment a batch (N, S, S, 3) of float32 RGB crops; every image gets its own draw.

    Args:
        images: The batch.
        augmentation: How strongly to augment.
        seed: A shape (2,) integer tensor; ``fer8 train`` passes (run seed, step), so
            each step's batch has its own draws and a rerun has the same ones.
    """
    import tensorflow as tf

    a = augmentation
    draw = _Draws(seed)
    n = tf.shape(images)[0]
    size = images.shape[1]

    def chance(p):
        return draw.uniform([n]) < p

    def where(mask, changed, original):
        return tf.where(mask[:, None, None, None], changed, original)

    images = where(chance(a.flip), tf.image.flip_left_right(images), images)
    images = _affine(images, a, n, size, draw)
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(images))
    images = where(chance(a.grayscale), gray, images)
    images = where(chance(a.low_resolution), _low_resolution(images, size, draw), images)
    images = where(chance(a.blur), _blur(images, size, draw), images)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    contrast = draw.uniform([n, 1, 1, 1], 1 - a.contrast, 1 + a.contrast)
    brightness = draw.uniform([n, 1, 1, 1], -a.brightness, a.brightness) * 255.0
    images = (images - mean) * contrast + mean + brightness
    return tf.clip_by_value(images, 0.0, 255.0)


class _Draws:
    """Stateless uniform draws, each from its own seed folded out of one batch seed.

    The k-th draw made while building the graph always uses ``fold_in(seed, k)``, so the
    same batch seed gives the same numbers however tf.data schedules the batches.
    """

    def __init__(self, seed):
        self._seed = seed
        self._count = 0

    def uniform(self, shape, low: float = 0.0, high: float = 1.0):
        import tensorflow as tf

        self._count += 1
        seed = tf.random.experimental.stateless_fold_in(self._seed, self._count)
        return tf.random.stateless_uniform(shape, seed, low, high)


def _affine(images, a: Augmentation, n, size: int, draw: _Draws):
    """Random rotation, zoom and shift about the centre; the outside is black, as in
    aligned crops of faces at a photo's edge."""
    import tensorflow as tf

    angle = draw.uniform([n], -a.rotation, a.rotation) * (math.pi / 180.0)
    zoom = draw.uniform([n], 1 - a.scale, 1 + a.scale)
    dx = draw.uniform([n], -a.shift, a.shift) * size
    dy = draw.uniform([n], -a.shift, a.shift) * size
    c = (size - 1) / 2.0
    # Output pixel p maps to input pixel R(-angle) (p - c - d) / zoom + c.
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    ox, oy = c + dx, c + dy
    transforms = tf.stack(
        [
            cos,
            sin,
            c - cos * ox - sin * oy,
            -sin,
            cos,
            c + sin * ox - cos * oy,
            tf.zeros([n]),
            tf.zeros([n]),
        ],
        axis=1,
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=[size, size],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def _low_resolution(images, size: int, draw: _Draws):
    """Shrink to a random 1/5-1/2 of the side (one draw per batch) and enlarge back."""
    import tensorflow as tf

    small = tf.cast(tf.round(size * draw.uniform([], 0.2, 0.5)), tf.int32)
    shrunk = tf.image.resize(images, [small, small], method="area")
    return tf.image.resize(shrunk, [size, size], method="bilinear")


def _blur(images, size: int, draw: _Draws):
    """Gaussian blur with a random sigma (one draw per batch), scaled to the crop size."""
    import tensorflow as tf

    sigma = draw.uniform([], 0.5, 1.5) * (size / 224.0)
    radius = max(1, math.ceil(1.5 * size / 224.0 * 2))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(x**2) / (2.0 * sigma**2))
    kernel /= tf.reduce_sum(kernel)
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    blurred = tf.nn.depthwise_conv2d(images, horizontal, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(blurred, vertical, [1, 1, 1, 1], "SAME")
