"""The input pipeline of a training run: data sources -> framed crops (cached) ->
teachers' soft targets -> class weights -> ``tf.data`` batches with augmentation and the
model's preprocessing, in the same order on every run with the same seed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import Fer8Error
from fer8.labels import EXPRESSIONS
from fer8.models.preprocessing import Preprocessing
from fer8.training.datasets import Dataset, DataSource
from fer8.training.loop.run_folder import TrainConfig
from fer8.training.loop.splits import Split, class_weights

logger = logging.getLogger(__name__)


#: A training class with fewer images than this is warned about.
FEW_IMAGES = 50
#: How often ``--mask random`` cuts a training face out: half the time, so that neither
#: framing is a cue to a source (the AffectNet-like set comes cut out, the others not).
RANDOM_MASK_CHANCE = 0.5


def crop_cache_root(cache: str | os.PathLike | None) -> Path | None:
    if cache is not None:
        return Path(cache) if os.fspath(cache) else None
    from fer8.models.registry import cache_dir

    return cache_dir() / "crops"


def prepare_split(
    sources: Sequence[tuple[DataSource, Dataset]],
    labels: tuple[str, ...],
    config: TrainConfig,
    cache_root,
    workers: int,
    on_prepare,
    title: str,
    *,
    for_validation: bool = False,
    teachers: Sequence = (),
) -> Split:
    """Frame every source's images and put them in one :class:`Split`; with
    ``teachers`` (loaded models) their probabilities are blended into the targets."""
    from fer8.training.crops import PreparedCrops, prepare_crops

    columns = [EXPRESSIONS.index(label) for label in labels]
    parts, summaries = [], {}
    masks: list[NDArray[np.uint8] | None] = []
    for index, (source, data) in enumerate(sources):
        samples = [s for s in data.samples if s.label in labels]
        if len(samples) < len(data.samples):
            logger.warning(
                "%s: %d images of classes the training data lacks are left out",
                source,
                len(data.samples) - len(samples),
            )
        progress = (
            on_prepare(f"prepare {title} {source.name}", len(samples)) if on_prepare else None
        )
        crops = prepare_crops(
            samples,
            cache_root,
            image_size=config.image_size,
            workers=workers,
            on_progress=progress,
            detector=config.detector,
            detector_options=config.detector_options,
            mask=_framing(config, for_validation),
        )
        kept = [samples[i] for i in crops.kept]
        if not kept:
            raise Fer8Error(f"{source}: no face found in any image")
        targets = np.zeros((len(kept), len(labels)), np.float32)
        for row, sample in enumerate(kept):
            if config.soft_labels and sample.votes is not None and not for_validation:
                votes = np.asarray(sample.votes, np.float32)[columns]
                targets[row] = votes / votes.sum()
            else:
                targets[row, labels.index(sample.label)] = 1.0
        truth = targets.argmax(axis=1)  # a soft target's class is its majority
        class_counts = np.bincount([labels.index(s.label) for s in kept], minlength=len(labels))
        summaries[source.name] = {
            **data.summary(),
            "images": len(kept),
            "weight": source.weight,
            "per_class": dict(zip(labels, map(int, class_counts))),
            "crops": dict(crops.status),
        }
        if teachers:
            own = PreparedCrops(crops.images, np.arange(len(kept)))  # in the order of kept
            targets, summaries[source.name]["teachers"] = _taught(
                targets, kept, own, labels, teachers, config, cache_root, workers, source
            )
        parts.append(
            (crops.images, targets, truth, index, 1.0 if for_validation else source.weight)
        )
        masks.append(crops.masks)
    channels = max(images.shape[-1] for images, *_ in parts)
    images = np.concatenate(
        [np.repeat(i, channels, axis=-1) if i.shape[-1] < channels else i for i, *_ in parts]
    )
    targets = np.concatenate([t for _, t, _, _, _ in parts])
    truth = np.concatenate([c for _, _, c, _, _ in parts])
    source_ids = np.concatenate([np.full(len(t), i, np.int32) for _, t, _, i, _ in parts])
    draws = np.concatenate([np.full(len(t), w, np.float32) for _, t, _, _, w in parts])
    # Class weights from how often each class is drawn per pass, all sources together.
    drawn = np.bincount(truth, weights=draws, minlength=len(labels))
    weights = class_weights(drawn, "none" if for_validation else config.class_weighting)
    names = tuple(source.name for source, _ in sources)
    summary = (
        summaries[names[0]] if len(names) == 1 else {"sources": summaries, "images": len(images)}
    )
    return Split(
        images,
        targets,
        weights[truth].astype(np.float32),
        draws,
        source_ids,
        names,
        summary,
        # Every source's, or none (they are framed alike).
        None if masks[0] is None else np.concatenate([m for m in masks if m is not None]),
    )


def _taught(
    targets: NDArray[np.float32],
    kept: Sequence,
    crops,
    labels: tuple[str, ...],
    teachers: Sequence,
    config: TrainConfig,
    cache_root,
    workers: int,
    source: DataSource,
) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """``targets`` blended with the teachers' probabilities, and how the teachers read
    the source (their agreement with its labels is a measure of label noise).
    ``crops`` are the run's own crops of ``kept``, which teachers of its input size read."""
    from fer8.training.distillation import blend, teacher_probabilities

    taught = teacher_probabilities(
        kept,
        labels,
        teachers,
        cache_root,
        detector=config.detector,
        detector_options=config.detector_options,
        workers=workers,
        framed={(config.image_size, mask_of(config)): crops},
    )
    read = ~np.isnan(taught).any(axis=1)
    agreement = (
        float(np.mean(taught[read].argmax(1) == targets[read].argmax(1))) if read.any() else 0.0
    )
    logger.info(
        "%s: the teachers read %d of %d faces and agree with %.1f%% of their labels",
        source,
        int(read.sum()),
        len(kept),
        100 * agreement,
    )
    return (
        blend(targets, taught, config.teacher_weight),
        {"read": int(read.sum()), "agreement": round(agreement, 4)},
    )


def _start_preprocessing(config: TrainConfig) -> Preprocessing | None:
    """The preprocessing of the model the run starts from (None: no ``init_model``),
    whose framing and colour a fine-tuned model keeps unless told otherwise."""
    if not config.init_model:
        return None
    from fer8.models.modelfile import read_spec
    from fer8.models.registry import resolve_model

    return read_spec(resolve_model(config.init_model)).preprocessing


def mask_of(config: TrainConfig) -> str | None:
    """The model's mask, which prediction applies: as asked, else as its start's (see
    :attr:`TrainConfig.mask`); none for ``random``, whose model predicts unmasked."""
    if config.mask is not None:
        return None if config.mask in ("none", "random") else config.mask
    start = _start_preprocessing(config)
    return start.mask if start is not None else None


def _framing(config: TrainConfig, for_validation: bool) -> str | None:
    """How one side's crops are prepared (:func:`fer8.training.crops.prepare_crops`'s
    ``mask``): as the model frames faces, except that ``random`` training crops come
    with their contour masks, and ``random`` validation crops are unmasked, as the
    model's faces are at prediction."""
    if config.mask == "random" and not for_validation:
        return "random"
    return mask_of(config)


def use_grayscale(config: TrainConfig, split: Split) -> bool:
    if config.grayscale is not None:
        return config.grayscale
    start = _start_preprocessing(config)
    if start is not None and start.grayscale:
        return True
    return split.images.shape[-1] == 1


def preprocessing_for(backbone: str, *, gray: bool, mask: str | None = None) -> Preprocessing:
    """The backbone's preprocessing; gray input too when every training face is gray,
    and the run's mask, which prediction must apply too."""
    from fer8.training.backbones import BACKBONES

    return replace(BACKBONES[backbone], grayscale=gray, mask=mask)


def make_dataset(
    split: Split,
    config: TrainConfig,
    preprocessing: Preprocessing,
    *,
    training: bool,
    start_step: int = 0,
):
    """A tf.data pipeline over the in-memory crops.

    Batches of indices are gathered from the uint8 array (no decoding per epoch),
    augmented as whole batches, preprocessed and prefetched, so the input side costs a
    few percent of a ResNet50 step.

    For training, the order is a fresh permutation per pass over the data, drawn from
    (seed, pass), and each batch is augmented with the seed (seed, step): the batch of
    step k is the same in every run with the same data and config, including a run
    resumed at ``start_step`` (the steps before it are skipped as indices, uncomputed).
    A pass draws each image ``draws`` times (its source's weight): the whole part of
    the weight every pass, the fraction as a chance drawn from (seed, pass).

    With ``split.masks`` (``--mask random``), each face of a training batch is cut out
    along its contour with probability :data:`RANDOM_MASK_CHANCE`, drawn from (seed,
    step) for each place in the batch, so a face is drawn afresh each time it is seen;
    before augmentation, so flips and shifts move the face and the black together.
    """
    import tensorflow as tf

    from fer8.training.augment import augment_batch
    from fer8.training.crops import unpack_masks

    images = split.images
    masks = split.masks if training else None
    size = config.image_size
    seed = tf.constant(config.seed, tf.int64)

    def gather(indices):
        return images[indices]

    def gather_masks(indices):
        return unpack_masks(masks[indices], size)

    @tf.autograph.experimental.do_not_convert  # plain TF ops; nothing for AutoGraph to do
    def load(indices, step=None):
        batch = tf.numpy_function(gather, [indices], tf.uint8, stateful=False)
        batch = tf.reshape(batch, [-1, size, size, images.shape[-1]])
        if masks is not None and step is not None:
            inside = tf.numpy_function(gather_masks, [indices], tf.uint8, stateful=False)
            inside = tf.reshape(inside, [-1, size, size, 1])
            # Fold-in value 0: augmentation's draws fold in 1, 2, ... of the same seed.
            chance_seed = tf.random.experimental.stateless_fold_in(tf.stack([seed, step]), 0)
            masked = tf.random.stateless_uniform(tf.shape(indices), chance_seed)
            masked = masked < RANDOM_MASK_CHANCE
            batch = tf.where(masked[:, None, None, None], batch * inside, batch)
        batch = tf.cast(batch, tf.float32)
        if images.shape[-1] == 1:
            batch = tf.image.grayscale_to_rgb(batch)
        if step is not None:
            batch = augment_batch(batch, config.augmentation, tf.stack([seed, step]))
        batch = preprocess_tensor(preprocessing, batch)
        return (batch, tf.gather(split.targets, indices), tf.gather(split.weights, indices))

    if not training:
        dataset = (
            tf.data.Dataset.range(len(images))
            .batch(config.batch_size)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        )
        return dataset.prefetch(tf.data.AUTOTUNE)

    draws = tf.constant(split.draws, tf.float32)
    whole = tf.floor(draws)
    uniform_draws = bool(np.all(split.draws == 1.0))

    def permutation(data_pass):
        pass_seed = tf.stack([seed, data_pass])
        indices = tf.range(len(images), dtype=tf.int64)
        if not uniform_draws:
            # Fold-in value 1: the chance draws of fractional weights.
            chance_seed = tf.random.experimental.stateless_fold_in(pass_seed, 1)
            chance = tf.random.stateless_uniform([len(images)], chance_seed)
            repeats = tf.cast(whole + tf.cast(chance < draws - whole, tf.float32), tf.int64)
            indices = tf.repeat(indices, repeats)
        # Random int64 keys: ties, which an unstable sort could order either way, are
        # all but impossible. Fold-in value 0 keeps these apart from augmentation's seeds.
        keys_seed = tf.random.experimental.stateless_fold_in(pass_seed, 0)
        keys = tf.random.stateless_uniform(tf.shape(indices), keys_seed, None, None, tf.int64)
        return tf.data.Dataset.from_tensor_slices(tf.gather(indices, tf.argsort(keys, stable=True)))

    order = tf.data.Dataset.counter().flat_map(permutation)
    batches = order.batch(config.batch_size, drop_remainder=True).skip(start_step)
    steps = tf.data.Dataset.counter(start_step)
    # Parallel but in order (tf.data's default), so the model sees batch k at step k.
    return (
        tf.data.Dataset.zip(batches, steps)
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def preprocess_tensor(preprocessing: Preprocessing, crops):
    """:meth:`Preprocessing.apply` as TensorFlow ops on a float32 batch (inside tf.data),
    so training feeds the network exactly what prediction feeds it."""
    import tensorflow as tf

    from fer8.models.preprocessing import LUMA

    x = crops
    if preprocessing.grayscale:
        x = tf.repeat(tf.reduce_sum(x * tf.constant(LUMA), axis=-1, keepdims=True), 3, axis=-1)
    x = x[..., ::-1] if preprocessing.channel_order == "BGR" else x
    x = (x - tf.constant(preprocessing.mean, tf.float32)) / tf.constant(
        preprocessing.std, tf.float32
    )
    if preprocessing.standardize:
        mean, variance = tf.nn.moments(x, axes=[1, 2, 3], keepdims=True)
        pixels = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        x = (x - mean) / tf.maximum(tf.sqrt(variance), 1.0 / tf.sqrt(pixels))
    return x
