"""Training a fer8 model: data -> framed crops -> tf.data -> Keras fit -> a ``.fer8`` file.

Importing this module imports Keras (and TensorFlow); the CLI imports it only for
``fer8 train``.

A run lives in one folder, and everything needed to continue it is in there:

* ``config.json``: the :class:`TrainConfig` and the data paths;
* ``checkpoint.keras``: network and optimizer state after the last finished epoch,
  replaced atomically, so Ctrl-C or a crash never leaves it half-written;
* ``state.json``: epochs done, the best validation accuracy so far and when;
* ``model.fer8``: the best model so far, in the format ``fer8 predict`` loads;
* ``history.csv`` and ``curves.png``: one row per epoch, and the curves drawn from it.

``--resume`` reloads the checkpoint (optimizer moments and the step counter, which
drives the learning-rate schedule) and continues at the next epoch.

This module builds the model and runs the fit; the run folder is
:mod:`fer8.training.loop.run_folder`, the data pipeline :mod:`fer8.training.loop.inputs`,
its train and validation splits :mod:`fer8.training.loop.splits`, the Keras callbacks
:mod:`fer8.training.loop.callbacks`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from fer8.errors import Fer8Error
from fer8.labels import EXPRESSIONS
from fer8.training.backend import import_keras
from fer8.training.datasets import parse_source
from fer8.training.loop.callbacks import (
    EpochProgress,
    RepeatableDropout,
    RunRecorder,
    Validation,
    calibrate_run,
)
from fer8.training.loop.inputs import (
    FEW_IMAGES,
    crop_cache_root,
    make_dataset,
    mask_of,
    prepare_split,
    preprocessing_for,
    use_grayscale,
)
from fer8.training.loop.run_folder import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CURVES_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    MODEL_FILE,
    STATE_FILE,
    RunFolderError,
    StartError,
    TrainConfig,
    TrainResult,
    begin_run,
    check_image_size,
    open_run,
    read_history,
    undo_begin,
)
from fer8.training.loop.splits import hold_out, per_class_counts, summary_table

if TYPE_CHECKING:
    import keras  # untyped: Any to mypy; the names in annotations need a module
else:
    keras = import_keras()

logger = logging.getLogger(__name__)

#: The package's API: the fit, its recipe and result, and the run folder's files.
__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "CURVES_FILE",
    "HISTORY_COLUMNS",
    "HISTORY_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "RunFolderError",
    "StartError",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "check_image_size",
    "cpu_has_bfloat16",
    "read_history",
    "set_precision",
    "starting_weights",
    "train",
]


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    cache: str | os.PathLike | None = None,
    workers: int = 2,
    verbose: int = 0,
    on_prepare: Callable[[str, int], Callable[[int], None]] | None = None,
    on_epoch: Callable[[str, int], Callable[[int], None]] | None = None,
    keep_checkpoint: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train (or continue training) a model in ``run_dir``.

    Nothing is written to ``run_dir`` until the data is read, the starting weights are
    at hand and the network is built, so a run that cannot start leaves it as it was.
    When the run ends (its last epoch, or early stopping), ``checkpoint.keras`` is
    removed unless ``keep_checkpoint``: the folder then holds one copy of the weights,
    ``model.fer8``, instead of three times as much (weights and optimizer moments).

    Args:
        config: The recipe. On ``resume`` the stored one is used and this one must name
            the same data.
        run_dir: The run folder: new or empty, or (with ``resume``) an earlier run.
        resume: Continue the run in ``run_dir`` at its next epoch.
        cache: Crop cache folder (default ``<fer8 cache>/crops``); None-like ``""``
            disables it.
        workers: Threads preparing crops.
        verbose: Keras's own progress output on stdout: 0 none (the default; a library
            prints nothing), 1 a bar per epoch, 2 one line per epoch. A summary line
            per epoch is logged whatever this says.
        on_prepare: ``on_prepare(title, total)`` returns a progress callback for crop
            preparation (the CLI draws a bar with it).
        on_epoch: ``on_epoch(title, steps)`` returns a progress callback that is called
            with 1 after each training step of an epoch (the CLI draws a bar with it).
        keep_checkpoint: Keep ``checkpoint.keras`` after the run ends, so that a later
            ``resume`` with more ``epochs`` can extend it.
        callbacks: More Keras callbacks (benchmarks time the steps with one).

    Raises:
        RunFolderError: ``run_dir`` holds a run and ``resume`` was not given, or
            ``resume`` was given and there is nothing to resume.
        DatasetError: The data cannot be read.
        DownloadError: The starting weights cannot be downloaded.
        StartError: ImageNet weights asked for another backbone than resnet50, or an
            image size below what the backbone takes.
    """
    run_dir = Path(run_dir)
    config, state = open_run(config, run_dir, resume)
    check_image_size(config)
    set_precision(config.precision)
    # The seed fixes the new layers' initial weights; the data order, augmentation and
    # dropout are seeded by (seed, epoch or step), so a resumed run goes on exactly as
    # an uninterrupted one would have.
    keras.utils.set_random_seed(config.seed)
    _use_deterministic_kernels()

    train_sources = [parse_source(spec) for spec in config.data]
    train_sets = [(source, source.read(fer2013_split="train")) for source in train_sources]
    counts: Counter[str] = Counter()
    for _, dataset in train_sets:
        counts.update(dataset.counts)
    labels = tuple(label for label in EXPRESSIONS if counts[label])
    if len(labels) < 2:
        raise Fer8Error(
            f"{', '.join(config.data)}: needs at least two classes, found {list(labels)}"
        )
    if config.val is None:
        held_out = [
            (source, *hold_out(dataset, config.val_fraction, config.seed))
            for source, dataset in train_sets
        ]
        train_sets = [(source, train_part) for source, train_part, _ in held_out]
        val_sets = [(source, val_part) for source, _, val_part in held_out]
    else:
        val_sets = [
            (source, source.read(fer2013_split="val")) for source in map(parse_source, config.val)
        ]
    weights = None if resume else starting_weights(config, labels)
    teachers = []
    if config.teachers:  # before the crops, which may take minutes to prepare
        from fer8.training.distillation import load_teachers

        teachers = load_teachers(config.teachers, labels)
    cache_root = crop_cache_root(cache)
    train_split = prepare_split(
        train_sets, labels, config, cache_root, workers, on_prepare, "train", teachers=teachers
    )
    val_split = prepare_split(
        val_sets, labels, config, cache_root, workers, on_prepare, "val", for_validation=True
    )
    logger.info("%s", summary_table("train", train_split, labels))
    logger.info("%s", summary_table("val", val_split, labels))
    # Counted on what is trained on: after the validation share is held out and the
    # images without a face are left out (the data's own counts were larger).
    trained = per_class_counts(train_split)
    few = [
        f"{label} {trained.get(label, 0)}" for label in labels if trained.get(label, 0) < FEW_IMAGES
    ]
    if few:  # one line, however many classes (all 7 on JAFFE)
        logger.warning(
            "classes with fewer than %d training images will be poorly learnt: %s",
            FEW_IMAGES,
            ", ".join(few),
        )

    steps = config.steps_per_epoch or max(1, int(train_split.draws.sum()) // config.batch_size)
    if resume:
        # fer8's own layers (FaceNet's ScaleSum) must be registered before Keras reads
        # the checkpoint's config; building a network imports them, resuming does not.
        import fer8.training.layers  # noqa: F401

        model = keras.saving.load_model(run_dir / CHECKPOINT_FILE)
        logger.info("resuming %s after epoch %d", run_dir, state["epochs_done"])
    else:
        model = build_model(config, labels, steps, weights)
    created = not run_dir.exists()
    if not resume:
        begin_run(run_dir, config, state)
    # A model that only ever saw gray faces turns colour input gray too (Preprocessing).
    preprocessing = preprocessing_for(
        cast(str, config.backbone), gray=use_grayscale(config, train_split), mask=mask_of(config)
    )
    train_ds = make_dataset(
        train_split, config, preprocessing, training=True, start_step=state["epochs_done"] * steps
    )
    val_ds = make_dataset(val_split, config, preprocessing, training=False)

    recorder = RunRecorder(run_dir, config, labels, state, train_split, val_split, preprocessing)
    validation = Validation(val_ds, val_split, averaged=bool(config.ema_momentum))
    callbacks = [validation, recorder, RepeatableDropout(config.seed, steps), *callbacks]
    if on_epoch is not None:  # first, so its bar is finished before the epoch's line
        callbacks.insert(0, EpochProgress(on_epoch, config.epochs, steps))
    interrupted = False
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras draws its bars on stdout
            model.fit(
                train_ds,
                epochs=config.epochs,
                initial_epoch=state["epochs_done"],
                steps_per_epoch=steps,
                callbacks=callbacks,
                shuffle=False,
                verbose=verbose,
            )
    except KeyboardInterrupt:
        interrupted = True
        if recorder.state["epochs_done"]:
            logger.warning(
                "interrupted; %s holds epoch %d; continue with --resume",
                run_dir / CHECKPOINT_FILE,
                recorder.state["epochs_done"],
            )
    finally:
        for callback in callbacks:
            if isinstance(callback, EpochProgress):
                callback.on_train_end()  # a bar cut short by Ctrl-C ends its line
        if not resume and recorder.state["epochs_done"] == 0:
            undo_begin(run_dir, created)  # no epoch ended: leave --out as it was
    state = recorder.state
    finished = state["epochs_done"] >= config.epochs or recorder.stopped_early
    if finished and not interrupted and not keep_checkpoint:
        (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
        logger.info(
            "run finished: %s removed (%s holds the best epoch; keep the checkpoint "
            "with --keep-checkpoint to extend a run later)",
            CHECKPOINT_FILE,
            MODEL_FILE,
        )
    model_path = run_dir / MODEL_FILE
    if finished and not interrupted and model_path.exists():
        calibrate_run(model_path, val_split, preprocessing, config.batch_size)
    return TrainResult(
        run_dir,
        model_path if model_path.exists() else None,
        state["epochs_done"],
        state["best_epoch"],
        state["best_val_accuracy"],
        recorder.stopped_early,
        interrupted,
    )


def set_precision(precision: str) -> None:
    if precision == "auto":
        precision = "bfloat16" if cpu_has_bfloat16() else "float32"
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    logger.info("training in %s", precision)


def _use_deterministic_kernels() -> None:
    """Make TensorFlow run only deterministic kernels, for the rest of the process.

    Seeds fix every random draw, but not the order in which some CPU kernels add up
    partial sums across threads, and floating-point addition is not associative: two
    from-ImageNet runs with the same seed had different weights after 15 steps. With
    this they are identical, so a rerun of a recipe (``scripts/train_default.sh``) gives
    the same model bytes on the same machine. Ops with no deterministic kernel then
    raise instead of drifting.
    """
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def cpu_has_bfloat16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX), which makes
    mixed-precision training ~1.5x faster; elsewhere it is emulated and slower."""
    from fer8.models.runtime import cpu_flags

    flags = cpu_flags().split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def starting_weights(config: TrainConfig, labels: tuple[str, ...]) -> str | None:
    """The backbone's weight file, fetched and checked before any data is prepared or
    anything written (None: an ``init_model`` or random weights).

    Raises:
        DownloadError: The ImageNet weights cannot be downloaded.
        FileNotFoundError: A weight file does not exist.
        StartError: ImageNet weights asked for another backbone than resnet50.
    """
    if config.init_model:
        return None
    if config.backbone_weights in (None, "none"):  # None is spelled out in __post_init__
        return None
    if config.backbone_weights == "imagenet":
        if config.backbone != "resnet50":
            raise StartError(
                f"ImageNet weights exist for resnet50, not {config.backbone}; "
                "pass --backbone-weights PATH or none"
            )
        from fer8.training.backbones import imagenet_weights

        return str(imagenet_weights())
    if not Path(config.backbone_weights).is_file():
        raise FileNotFoundError(f"{config.backbone_weights}: no such weights file")
    return config.backbone_weights


def build_model(
    config: TrainConfig, labels: tuple[str, ...], steps_per_epoch: int, weights: str | None = None
):
    from fer8.training.backbones import build_backbone, build_classifier

    if config.init_model:
        model = model_from_file(config, labels)
    else:
        backbone = build_backbone(cast(str, config.backbone), config.image_size, weights)
        model = build_classifier(backbone, len(labels))
    frozen = 0
    for layer in model.layers:
        stage = _stage(layer.name)
        if stage is not None and stage <= config.freeze_stages:
            layer.trainable = False
            frozen += 1
    if frozen:
        logger.info("froze %d layers (stages 1-%d)", frozen, config.freeze_stages)
    total_steps = max(1, config.epochs * steps_per_epoch)
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total_steps // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 100 if warmup else config.learning_rate,
        decay_steps=max(1, total_steps - warmup),
        alpha=0.01,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    optimizer = keras.optimizers.AdamW(
        schedule,
        weight_decay=config.weight_decay,
        use_ema=config.ema_momentum > 0,
        ema_momentum=config.ema_momentum,
    )
    smoothing = 0.0 if config.soft_labels else config.label_smoothing
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile(),
    )
    return model


def jit_compile() -> bool | str:
    """Whether Keras compiles the training step: not on TensorFlow, where XLA on CPU
    trains ResNet50 at 17 img/s instead of 26 (112 px, bf16) and takes 36 s to compile
    instead of 24; Keras's own choice elsewhere, because JAX (``KERAS_BACKEND=jax``, the
    way to a GPU) runs an uncompiled step op by op, at half the speed even on a CPU."""
    return False if keras.backend.backend() == "tensorflow" else "auto"


def model_from_file(config: TrainConfig, labels: tuple[str, ...]):
    """A trained fer8 model rebuilt at ``config.image_size`` with its weights."""
    from fer8.models.registry import resolve_model
    from fer8.training.backbones import build_backbone, build_classifier
    from fer8.training.keras_models import load_keras_model

    # a file, or a name such as the bundled model's
    source, spec = load_keras_model(resolve_model(config.init_model))
    if spec.backbone != config.backbone:
        raise Fer8Error(f"{config.init_model}: backbone {spec.backbone}, not {config.backbone}")
    model = build_classifier(build_backbone(config.backbone, config.image_size), len(labels))
    weights = source.get_weights()
    if tuple(spec.labels) == labels:
        model.set_weights(weights)
        return model
    # Another class list: everything but the output layer as it was; each class the
    # two share keeps its output weights, a new class keeps its fresh initialisation.
    logits = model.get_layer("logits")
    head = len(logits.get_weights())
    model.set_weights(weights[:-head] + logits.get_weights())
    kernel, bias = logits.get_weights()
    old_kernel, old_bias = weights[-head:]
    shared = [label for label in labels if label in spec.labels]
    for label in shared:
        kernel[:, labels.index(label)] = old_kernel[:, spec.labels.index(label)]
        bias[labels.index(label)] = old_bias[spec.labels.index(label)]
    logits.set_weights([kernel, bias])
    new = [label for label in labels if label not in spec.labels]
    dropped = [label for label in spec.labels if label not in labels]
    logger.info(
        "%s: %d classes kept their output weights; new: %s; dropped: %s",
        config.init_model,
        len(shared),
        ", ".join(new) or "none",
        ", ".join(dropped) or "none",
    )
    return model


def _stage(layer_name: str) -> int | None:
    """ResNet stage (1-5) of a backbone layer, from its name (``conv3_block2_...``,
    ``conv3_2_1x1_reduce``, ``pool1_pool``), or FaceNet's part (1-4, see
    :func:`fer8.training.facenet.stage`); None for layers outside them."""
    from fer8.training.facenet import stage as facenet_stage

    match = re.match(r"(?:conv|pool)(\d)_", layer_name)
    return int(match.group(1)) if match else facenet_stage(layer_name)
