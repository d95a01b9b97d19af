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
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from fer8.errors import Fer8Error
from fer8.labels import EXPRESSIONS
from fer8.models.preprocessing import MASKS, Preprocessing
from fer8.training.augment import Augmentation
from fer8.training.backend import import_keras
from fer8.training.datasets import Dataset, DataSource, parse_source

if TYPE_CHECKING:
    import keras  # untyped: Any to mypy; the names in annotations need a module
else:
    keras = import_keras()

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
CHECKPOINT_FILE = "checkpoint.keras"
MODEL_FILE = "model.fer8"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
#: A training class with fewer images than this is warned about.
FEW_IMAGES = 50
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


class RunFolderError(Fer8Error, FileExistsError):
    """The run folder holds another run, or has nothing to resume."""


class StartError(Fer8Error, ValueError):
    """The starting weights or model do not fit the backbone or the data."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (stored in ``config.json``).

    Attributes:
        data: Training sources, each ``PATH[@SPLIT][:WEIGHT]``
            (:func:`fer8.training.datasets.parse_source`): any layout
            :func:`fer8.training.datasets.read_dataset` reads, optionally one side of its fixed
            split, and how often each of its images is drawn per epoch. A single string
            is one source.
        val: Validation sources (``PATH[@SPLIT]``); the best epoch is the one with the
            best mean of their accuracies. None holds out ``val_fraction`` of each
            training source, per class.
        epochs: Epochs at most (early stopping may end sooner).
        batch_size: Images per step.
        image_size: Side of the model input.
        backbone: ``resnet50``, ``vggface-resnet50`` or ``facenet``; None: the
            ``init_model``'s, else the bundled model's when the run starts from it
            (no ``backbone_weights``), else ``resnet50``.
        backbone_weights: ``imagenet`` (Keras's download), a weight file path, or
            ``none``. Left out (None) together with ``init_model``, a run of the
            bundled model's backbone (or of no backbone named) starts from the bundled
            model, which needs no download and already knows faces; another backbone
            from random weights.
        init_model: A ``.fer8`` model file or registered model name to start from
            instead (any input size): to fine-tune the bundled model on one's own
            faces or new data, or at a higher resolution. Classes it shares with the
            data keep their output weights; other classes (say *worry*) start fresh.
        freeze_stages: ResNet stages (1-5) kept frozen, from the input on.
        learning_rate: Peak AdamW learning rate, reached after a warm-up and cosine-decayed.
        warmup_epochs: Length of the linear warm-up.
        weight_decay: AdamW decoupled weight decay.
        ema_momentum: Keep an exponential moving average of the weights with this
            momentum (0: none). Validation, the choice of the best epoch and the saved
            model then use the average, which is less tied to the last few batches
            than the weights themselves and so varies less from run to run.
        label_smoothing: For one-hot targets.
        soft_labels: Train on FER+ vote distributions instead of majority labels.
        class_weighting: ``sqrt`` (weights (n_max/n)^0.5), ``balanced`` (n_max/n) or ``none``.
        patience: Stop after this many epochs without a better validation accuracy.
        steps_per_epoch: Fewer steps than one pass over the data (None: one pass).
        val_fraction: Held out of ``data`` when ``val`` is None.
        precision: ``auto`` (bfloat16 where the CPU has AVX512-BF16 or AMX), ``float32``
            or ``bfloat16``.
        seed: For the split, the shuffling, augmentation and the new layers.
        augmentation: See :class:`fer8.training.augment.Augmentation`.
        detector: The face detector that frames photos (``fer8 predict --detector``
            must match it for prediction crops to look like training crops).
        detector_options: Its settings (see :func:`fer8.pipeline.detection.settings`).
        grayscale: Whether the model sees faces in gray; None: when every training face
            is gray (FER2013), or when ``init_model``'s model is gray.
        teachers: Trained models (``.fer8`` files or names) whose mean probabilities on
            each clean training crop are blended into its target: one network learns
            what several read together (:mod:`fer8.training.distillation`).
        teacher_weight: The teachers' share of each training target; the label (or
            FER+ votes) keeps the rest.
        mask: ``"contour"``: every face, of every source, cut out along its landmark
            contour onto black (:mod:`fer8.pipeline.masking`), and recorded in the model's
            preprocessing so that prediction cuts faces out the same way. ``"none"``: as
            aligned. None: as ``init_model`` does (a fine-tuned model frames faces as its
            start did), else as aligned.
    """

    data: tuple[str, ...]
    val: tuple[str, ...] | None = None
    epochs: int = 30
    batch_size: int = 32
    image_size: int = 224
    backbone: str | None = None  # None: the start's, set in __post_init__
    backbone_weights: str | None = None
    init_model: str | None = None
    freeze_stages: int = 0
    learning_rate: float = 3e-4
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-4
    ema_momentum: float = 0.0
    label_smoothing: float = 0.1
    soft_labels: bool = False
    class_weighting: str = "sqrt"
    patience: int = 5
    steps_per_epoch: int | None = None
    val_fraction: float = 0.1
    precision: str = "auto"
    seed: int = 0
    augmentation: Augmentation = field(default_factory=Augmentation)
    detector: str = "yunet"
    detector_options: Mapping[str, Any] = field(default_factory=dict)
    grayscale: bool | None = None
    teachers: tuple[str, ...] = ()
    teacher_weight: float = 0.5
    mask: str | None = None

    def __post_init__(self) -> None:
        # One source may be given as a plain string (and was, in runs before 0.2).
        for name in ("data", "val"):
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                object.__setattr__(self, name, (os.fspath(value),))
            elif value is not None:
                object.__setattr__(self, name, tuple(map(os.fspath, value)))
        object.__setattr__(self, "teachers", tuple(map(os.fspath, self.teachers)))
        if not self.data:
            raise ValueError("data needs at least one source")
        if self.mask not in (*MASKS, "none"):
            raise ValueError(f"mask must be one of {(*MASKS, 'none')}, not {self.mask!r}")
        if not 0 <= self.teacher_weight <= 1:
            raise ValueError("teacher_weight must be between 0 and 1")
        if self.class_weighting not in ("sqrt", "balanced", "none"):
            raise ValueError(f"class_weighting must be sqrt, balanced or none, "
                             f"not {self.class_weighting!r}")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"precision must be auto, float32 or bfloat16, not {self.precision!r}")
        if not 0 <= self.ema_momentum < 1:
            raise ValueError("ema_momentum must be at least 0 and below 1")
        if not 0 <= self.freeze_stages <= 5:
            raise ValueError("freeze_stages must be between 0 and 5")
        if self.val is None and not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must be between 0 and 1")
        # The default start and backbone, spelled out in config.json.
        from fer8.models.registry import DEFAULT_MODEL

        if self.backbone_weights is None:
            if self.init_model is None and self.backbone in (None, _backbone_of(DEFAULT_MODEL)):
                object.__setattr__(self, "init_model", DEFAULT_MODEL)
            object.__setattr__(self, "backbone_weights", "none")
        if self.backbone is None:
            object.__setattr__(self, "backbone", _backbone_of(self.init_model)
                               if self.init_model else "resnet50")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "detector_options": dict(self.detector_options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["augmentation"] = Augmentation(**values.get("augmentation", {}))
        if "detector" not in values:  # runs before YuNet framed photos with Haar
            values["detector"] = "haar"
        return cls(**values)


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    model_path: Path | None
    epochs_done: int
    best_epoch: int | None
    best_val_accuracy: float | None
    stopped_early: bool
    interrupted: bool


@dataclass(frozen=True)
class _Split:
    """Crops and targets of one side of the run (train or validation), from one or more
    sources.

    Attributes:
        images: uint8 (N, S, S, C) crops.
        targets: (N, classes) target distributions.
        weights: (N,) loss weights against class imbalance.
        draws: (N,) how often each image is drawn per pass (its source's weight).
        source: (N,) index into ``names`` of each image's source.
        names: The sources' short names.
        summary: What was read and kept, per source.
    """

    images: NDArray[np.uint8]
    targets: NDArray[np.float32]
    weights: NDArray[np.float32]
    draws: NDArray[np.float32]
    source: NDArray[np.int32]
    names: tuple[str, ...]
    summary: dict[str, Any]


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
        StartError: ImageNet weights asked for another backbone than resnet50.
    """
    run_dir = Path(run_dir)
    config, state = _open_run(config, run_dir, resume)
    _set_precision(config.precision)
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
        raise Fer8Error(f"{', '.join(config.data)}: needs at least two classes, "
                        f"found {list(labels)}")
    if config.val is None:
        held_out = [(source, *_hold_out(dataset, config.val_fraction, config.seed))
                    for source, dataset in train_sets]
        train_sets = [(source, train_part) for source, train_part, _ in held_out]
        val_sets = [(source, val_part) for source, _, val_part in held_out]
    else:
        val_sets = [(source, source.read(fer2013_split="val"))
                    for source in map(parse_source, config.val)]
    weights = None if resume else _starting_weights(config, labels)
    teachers = []
    if config.teachers:  # before the crops, which may take minutes to prepare
        from fer8.training.distillation import load_teachers

        teachers = load_teachers(config.teachers, labels)
    cache_root = _cache_root(cache)
    train_split = _prepare(train_sets, labels, config, cache_root, workers, on_prepare, "train",
                           teachers=teachers)
    val_split = _prepare(val_sets, labels, config, cache_root, workers, on_prepare, "val",
                         for_validation=True)
    logger.info("%s", _summary_table("train", train_split, labels))
    logger.info("%s", _summary_table("val", val_split, labels))
    # Counted on what is trained on: after the validation share is held out and the
    # images without a face are left out (the data's own counts were larger).
    trained = _per_class(train_split)
    for label in labels:
        if trained.get(label, 0) < FEW_IMAGES:
            logger.warning("class %r has only %d training images; it will be poorly learnt",
                           label, trained.get(label, 0))

    steps = config.steps_per_epoch or max(
        1, int(train_split.draws.sum()) // config.batch_size)
    if resume:
        model = keras.saving.load_model(run_dir / CHECKPOINT_FILE)
        logger.info("resuming %s after epoch %d", run_dir, state["epochs_done"])
    else:
        model = _build_model(config, labels, steps, weights)
    created = not run_dir.exists()
    if not resume:
        _begin_run(run_dir, config, state)
    # A model that only ever saw gray faces turns colour input gray too (Preprocessing).
    preprocessing = _preprocessing(cast(str, config.backbone), gray=_grayscale(config, train_split),
                                   mask=_mask(config))
    train_ds = _dataset(train_split, config, preprocessing, training=True,
                        start_step=state["epochs_done"] * steps)
    val_ds = _dataset(val_split, config, preprocessing, training=False)

    recorder = _RunRecorder(run_dir, config, labels, state, train_split, val_split, preprocessing)
    validation = _Validation(val_ds, val_split, averaged=bool(config.ema_momentum))
    callbacks = [validation, recorder, _RepeatableDropout(config.seed, steps), *callbacks]
    if on_epoch is not None:  # first, so its bar is finished before the epoch's line
        callbacks.insert(0, _EpochProgress(on_epoch, config.epochs, steps))
    interrupted = False
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras draws its bars on stdout
            model.fit(train_ds, epochs=config.epochs, initial_epoch=state["epochs_done"],
                      steps_per_epoch=steps, callbacks=callbacks, shuffle=False,
                      verbose=verbose)
    except KeyboardInterrupt:
        interrupted = True
        if recorder.state["epochs_done"]:
            logger.warning("interrupted; %s holds epoch %d; continue with --resume",
                           run_dir / CHECKPOINT_FILE, recorder.state["epochs_done"])
    finally:
        for callback in callbacks:
            if isinstance(callback, _EpochProgress):
                callback.on_train_end()  # a bar cut short by Ctrl-C ends its line
        if not resume and recorder.state["epochs_done"] == 0:
            _undo_begin(run_dir, created)  # no epoch ended: leave --out as it was
    state = recorder.state
    finished = state["epochs_done"] >= config.epochs or recorder.stopped_early
    if finished and not interrupted and not keep_checkpoint:
        (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
        logger.info("run finished: %s removed (%s holds the best epoch; keep the checkpoint "
                    "with --keep-checkpoint to extend a run later)", CHECKPOINT_FILE, MODEL_FILE)
    model_path = run_dir / MODEL_FILE
    if finished and not interrupted and model_path.exists():
        _calibrate(model_path, val_split, preprocessing, config.batch_size)
    return TrainResult(run_dir, model_path if model_path.exists() else None,
                       state["epochs_done"], state["best_epoch"], state["best_val_accuracy"],
                       recorder.stopped_early, interrupted)


def _open_run(config: TrainConfig, run_dir: Path, resume: bool) -> tuple[TrainConfig, dict]:
    """Check the run folder against ``resume``; return the config and state to go on with."""
    config_path = run_dir / CONFIG_FILE
    if not resume:
        if run_dir.exists() and any(run_dir.iterdir()) and not _never_trained(run_dir):
            raise RunFolderError(f"{run_dir}: run folder exists and is not empty; pass "
                                 "--resume to continue it, or choose another --out")
        state = {"epochs_done": 0, "best_val_accuracy": None, "best_epoch": None,
                 "epochs_without_improvement": 0}
        return config, state  # written by _begin_run once the run can start
    if (config_path.exists() and (run_dir / MODEL_FILE).exists()
            and not (run_dir / CHECKPOINT_FILE).exists()):
        raise RunFolderError(f"{run_dir}: the run has ended and its {CHECKPOINT_FILE} was not "
                             "kept; start a new run with --init-model "
                             f"{run_dir / MODEL_FILE}, or pass --keep-checkpoint to be able "
                             "to extend runs")
    if not (run_dir / CHECKPOINT_FILE).exists() or not config_path.exists():
        raise RunFolderError(f"{run_dir}: nothing to resume (no {CHECKPOINT_FILE}; "
                             "a run writes it after its first epoch)")
    stored = TrainConfig.from_dict(json.loads(config_path.read_text()))
    for name in ("data", "val"):
        given, kept = getattr(config, name), getattr(stored, name)
        if given and kept and list(map(_resolved, given)) != list(map(_resolved, kept)):
            raise RunFolderError(f"{run_dir}: the run was trained on {name}="
                                 f"{' '.join(kept)}, not {' '.join(given)}")
    if config.epochs != stored.epochs:  # the one setting a resumed run may change
        stored = replace(stored, epochs=config.epochs)
        _write_json(config_path, stored.to_dict())
    return stored, json.loads((run_dir / STATE_FILE).read_text())


def _resolved(spec: str) -> str:
    """A source spec with its path made absolute, for comparing two specs."""
    source = parse_source(spec)
    return str(replace(source, path=source.path.resolve()))


def _begin_run(run_dir: Path, config: TrainConfig, state: dict) -> None:
    """Create the run folder with its recipe and state, when the run is about to start."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / CONFIG_FILE, config.to_dict())
    _write_json(run_dir / STATE_FILE, state)


def _undo_begin(run_dir: Path, created: bool) -> None:
    """Remove what :func:`_begin_run` wrote (and the folder, if this run made it)."""
    for name in (CONFIG_FILE, STATE_FILE):
        (run_dir / name).unlink(missing_ok=True)
    if created and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


def _never_trained(run_dir: Path) -> bool:
    """A run folder whose run stopped before its first epoch ended (or one that an
    older fer8 left after a failed start): starting it afresh loses nothing."""
    names = {p.name for p in run_dir.iterdir()}
    if not names <= {CONFIG_FILE, STATE_FILE}:
        return False
    try:
        return json.loads((run_dir / STATE_FILE).read_text())["epochs_done"] == 0
    except (OSError, ValueError, KeyError):
        return not (run_dir / STATE_FILE).exists()


def _set_precision(precision: str) -> None:
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
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _hold_out(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split off ``fraction`` of each class (at least one image) for validation."""
    rng = np.random.default_rng(seed)
    val_indices: set[int] = set()
    for label in data.labels:
        members = [i for i, s in enumerate(data.samples) if s.label == label]
        take = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        val_indices.update(rng.choice(members, take, replace=False).tolist())
    train = [s for i, s in enumerate(data.samples) if i not in val_indices]
    val = [s for i, s in enumerate(data.samples) if i in val_indices]
    return (replace(data, samples=tuple(train)),
            replace(data, samples=tuple(val), skipped={}, kind=f"{data.kind} (held out)"))


def _sources(split: _Split) -> dict[str, dict[str, Any]]:
    """Each source's summary (one source's is the split's own)."""
    return split.summary["sources"] if "sources" in split.summary else \
        {split.names[0]: split.summary}


def _per_class(split: _Split) -> Counter:
    """Images per class in ``split``, all sources together."""
    counts: Counter = Counter()
    for summary in _sources(split).values():
        counts.update(summary["per_class"])
    return counts


def _summary_table(title: str, split: _Split, labels: Sequence[str]) -> str:
    """The split's images per source and class, as a few aligned lines for the log."""
    from fer8.labels import display_name

    header = [f"{title} data", "images", *map(display_name, labels)]
    if title == "train":
        header.append("weight")
    rows = [header]
    for name, summary in _sources(split).items():
        row = [name, str(summary["images"]),
               *(str(summary["per_class"].get(label, 0)) for label in labels)]
        if title == "train":
            row.append(f"{summary['weight']:g}")
        rows.append(row)
    if len(rows) > 2:
        total = _per_class(split)
        rows.append(["all", str(sum(total.values())), *(str(total[label]) for label in labels),
                     *([""] if title == "train" else [])])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                                for i, (cell, width) in enumerate(zip(row, widths))).rstrip()
                      for row in rows)


def _cache_root(cache: str | os.PathLike | None) -> Path | None:
    if cache is not None:
        return Path(cache) if os.fspath(cache) else None
    from fer8.models.registry import cache_dir

    return cache_dir() / "crops"


def _prepare(sources: Sequence[tuple[DataSource, Dataset]], labels: tuple[str, ...],
             config: TrainConfig, cache_root, workers: int, on_prepare, title: str, *,
             for_validation: bool = False, teachers: Sequence = ()) -> _Split:
    """Frame every source's images and put them in one :class:`_Split`; with
    ``teachers`` (loaded models) their probabilities are blended into the targets."""
    from fer8.training.crops import PreparedCrops, prepare_crops

    columns = [EXPRESSIONS.index(label) for label in labels]
    parts, summaries = [], {}
    for index, (source, data) in enumerate(sources):
        samples = [s for s in data.samples if s.label in labels]
        if len(samples) < len(data.samples):
            logger.warning("%s: %d images of classes the training data lacks are left out",
                           source, len(data.samples) - len(samples))
        progress = (on_prepare(f"prepare {title} {source.name}", len(samples))
                    if on_prepare else None)
        crops = prepare_crops(samples, cache_root, image_size=config.image_size,
                              workers=workers, on_progress=progress, detector=config.detector,
                              detector_options=config.detector_options, mask=_mask(config))
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
        summaries[source.name] = {**data.summary(), "images": len(kept),
                                  "weight": source.weight,
                                  "per_class": dict(zip(labels, map(int, class_counts))),
                                  "crops": dict(crops.status)}
        if teachers:
            own = PreparedCrops(crops.images, np.arange(len(kept)))  # in the order of kept
            targets, summaries[source.name]["teachers"] = _taught(
                targets, kept, own, labels, teachers, config, cache_root, workers, source)
        parts.append((crops.images, targets, truth, index,
                      1.0 if for_validation else source.weight))
    channels = max(images.shape[-1] for images, *_ in parts)
    images = np.concatenate([np.repeat(i, channels, axis=-1) if i.shape[-1] < channels else i
                             for i, *_ in parts])
    targets = np.concatenate([t for _, t, _, _, _ in parts])
    truth = np.concatenate([c for _, _, c, _, _ in parts])
    source_ids = np.concatenate([np.full(len(t), i, np.int32) for _, t, _, i, _ in parts])
    draws = np.concatenate([np.full(len(t), w, np.float32) for _, t, _, _, w in parts])
    # Class weights from how often each class is drawn per pass, all sources together.
    drawn = np.bincount(truth, weights=draws, minlength=len(labels))
    weights = _class_weights(drawn, "none" if for_validation else config.class_weighting)
    names = tuple(source.name for source, _ in sources)
    summary = summaries[names[0]] if len(names) == 1 else {"sources": summaries,
                                                           "images": len(images)}
    return _Split(images, targets, weights[truth].astype(np.float32), draws, source_ids, names,
                  summary)


def _taught(targets: NDArray[np.float32], kept: Sequence, crops, labels: tuple[str, ...],
            teachers: Sequence, config: TrainConfig, cache_root, workers: int,
            source: DataSource) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """``targets`` blended with the teachers' probabilities, and how the teachers read
    the source (their agreement with its labels is a measure of label noise).
    ``crops`` are the run's own crops of ``kept``, which teachers of its input size read."""
    from fer8.training.distillation import blend, teacher_probabilities

    taught = teacher_probabilities(kept, labels, teachers, cache_root,
                                   detector=config.detector,
                                   detector_options=config.detector_options, workers=workers,
                                   framed={config.image_size: crops})
    read = ~np.isnan(taught).any(axis=1)
    agreement = (float(np.mean(taught[read].argmax(1) == targets[read].argmax(1)))
                 if read.any() else 0.0)
    logger.info("%s: the teachers read %d of %d faces and agree with %.1f%% of their labels",
                source, int(read.sum()), len(kept), 100 * agreement)
    return (blend(targets, taught, config.teacher_weight),
            {"read": int(read.sum()), "agreement": round(agreement, 4)})


def _class_weights(counts: NDArray[np.int64], mode: str) -> NDArray[np.float64]:
    """Per-class loss weights, normalised to average 1 over the samples.

    ``sqrt`` is the default: FER+ has 54 neutral faces per disgusted one, and full
    ``balanced`` weighting makes the rare classes' few faces dominate the gradient.
    """
    counts = np.maximum(np.asarray(counts, np.float64), 1)
    if mode == "none":
        return np.ones_like(counts)
    weights = (counts.max() / counts) ** (0.5 if mode == "sqrt" else 1.0)
    return weights * counts.sum() / (weights * counts).sum()


def _backbone_of(model: str) -> str:
    """The backbone of a model file or registered model (its spec only is read)."""
    from fer8.models.modelfile import read_spec
    from fer8.models.registry import resolve_model

    return read_spec(resolve_model(model)).backbone


def _mask(config: TrainConfig) -> str | None:
    """The run's mask: as asked, else as its start's (see :attr:`TrainConfig.mask`)."""
    if config.mask is not None:
        return None if config.mask == "none" else config.mask
    if config.init_model:
        from fer8.models.modelfile import read_spec
        from fer8.models.registry import resolve_model

        return read_spec(resolve_model(config.init_model)).preprocessing.mask
    return None


def _grayscale(config: TrainConfig, split: _Split) -> bool:
    if config.grayscale is not None:
        return config.grayscale
    if config.init_model:
        from fer8.models.modelfile import read_spec
        from fer8.models.registry import resolve_model

        if read_spec(resolve_model(config.init_model)).preprocessing.grayscale:
            return True
    return split.images.shape[-1] == 1


def _preprocessing(backbone: str, *, gray: bool, mask: str | None = None) -> Preprocessing:
    """The backbone's preprocessing; gray input too when every training face is gray,
    and the run's mask, which prediction must apply too."""
    from fer8.training.backbones import BACKBONES

    return replace(BACKBONES[backbone], grayscale=gray, mask=mask)


def _dataset(split: _Split, config: TrainConfig, preprocessing: Preprocessing, *,
             training: bool, start_step: int = 0):
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
    """
    import tensorflow as tf

    from fer8.training.augment import augment_batch

    images = split.images
    size = config.image_size
    seed = tf.constant(config.seed, tf.int64)

    def gather(indices):
        return images[indices]

    @tf.autograph.experimental.do_not_convert  # plain TF ops; nothing for AutoGraph to do
    def load(indices, step=None):
        batch = tf.numpy_function(gather, [indices], tf.uint8, stateful=False)
        batch = tf.reshape(batch, [-1, size, size, images.shape[-1]])
        batch = tf.cast(batch, tf.float32)
        if images.shape[-1] == 1:
            batch = tf.image.grayscale_to_rgb(batch)
        if step is not None:
            batch = augment_batch(batch, config.augmentation, tf.stack([seed, step]))
        batch = preprocess_tensor(preprocessing, batch)
        return (batch, tf.gather(split.targets, indices), tf.gather(split.weights, indices))

    if not training:
        dataset = tf.data.Dataset.range(len(images)).batch(config.batch_size).map(
            load, num_parallel_calls=tf.data.AUTOTUNE)
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
        return tf.data.Dataset.from_tensor_slices(
            tf.gather(indices, tf.argsort(keys, stable=True)))

    order = tf.data.Dataset.counter().flat_map(permutation)
    batches = order.batch(config.batch_size, drop_remainder=True).skip(start_step)
    steps = tf.data.Dataset.counter(start_step)
    # Parallel but in order (tf.data's default), so the model sees batch k at step k.
    return (tf.data.Dataset.zip(batches, steps).map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def _starting_weights(config: TrainConfig, labels: tuple[str, ...]) -> str | None:
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
            raise StartError(f"ImageNet weights exist for resnet50, not {config.backbone}; "
                             "pass --backbone-weights PATH or none")
        from fer8.training.backbones import imagenet_weights

        return str(imagenet_weights())
    if not Path(config.backbone_weights).is_file():
        raise FileNotFoundError(f"{config.backbone_weights}: no such weights file")
    return config.backbone_weights


def _build_model(config: TrainConfig, labels: tuple[str, ...], steps_per_epoch: int,
                 weights: str | None = None):
    from fer8.training.backbones import build_backbone, build_classifier

    if config.init_model:
        model = _from_model_file(config, labels)
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
        decay_steps=max(1, total_steps - warmup), alpha=0.01,
        warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup)
    optimizer = keras.optimizers.AdamW(
        schedule, weight_decay=config.weight_decay, use_ema=config.ema_momentum > 0,
        ema_momentum=config.ema_momentum)
    smoothing = 0.0 if config.soft_labels else config.label_smoothing
    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  jit_compile=_jit_compile())
    return model


def _jit_compile() -> bool | str:
    """Whether Keras compiles the training step: not on TensorFlow, where XLA on CPU
    trains ResNet50 at 17 img/s instead of 26 (112 px, bf16) and takes 36 s to compile
    instead of 24; Keras's own choice elsewhere, because JAX (``KERAS_BACKEND=jax``, the
    way to a GPU) runs an uncompiled step op by op, at half the speed even on a CPU."""
    return False if keras.backend.backend() == "tensorflow" else "auto"


def _from_model_file(config: TrainConfig, labels: tuple[str, ...]):
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
    logger.info("%s: %d classes kept their output weights; new: %s; dropped: %s",
                config.init_model, len(shared), ", ".join(new) or "none",
                ", ".join(dropped) or "none")
    return model


def _stage(layer_name: str) -> int | None:
    """ResNet stage (1-5) of a backbone layer, from its name (``conv3_block2_...``,
    ``conv3_2_1x1_reduce``, ``pool1_pool``), or FaceNet's part (1-4, see
    :func:`fer8.training.facenet.stage`); None for layers outside them."""
    from fer8.training.facenet import stage as facenet_stage

    match = re.match(r"(?:conv|pool)(\d)_", layer_name)
    return int(match.group(1)) if match else facenet_stage(layer_name)


class _RepeatableDropout(keras.callbacks.Callback):
    """Sets each dropout seed generator to where an uninterrupted run has it.

    Keras does not store seed generators in checkpoints, so a resumed run would
    otherwise draw other dropout masks than the run it continues. Each generator's
    state is (seed + its index, step); dropout advances the step once per batch.
    """

    def __init__(self, seed: int, steps_per_epoch: int) -> None:
        super().__init__()
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        generators = [v for v in self.model.non_trainable_variables
                      if v.name == "seed_generator_state"]
        for index, state in enumerate(generators):
            state.assign(np.array([self.seed + index, epoch * self.steps_per_epoch],
                                  dtype=state.dtype))


def _swap_in_average(model) -> None:
    """Exchange the trained weights with the optimizer's moving average of them.

    Calling it twice restores both exactly. (``keras.callbacks.SwapEMAWeights``, which
    reads the same two private optimizer lists, swaps through sums and differences on
    TensorFlow, which round the weights a little every time.)
    """
    optimizer = model.optimizer
    for variable, average in zip(optimizer._trainable_variables,
                                 optimizer._model_variables_moving_average):
        value = variable.numpy()
        variable.assign(average)
        average.assign(value)


class _EpochProgress(keras.callbacks.Callback):
    """Reports each training step to a progress callback made per epoch (``on_epoch``)."""

    def __init__(self, on_epoch: Callable[[str, int], Callable[[int], None]], epochs: int,
                 steps: int) -> None:
        super().__init__()
        self.on_epoch = on_epoch
        self.epochs = epochs
        self.steps = steps
        self._progress: Callable[[int], None] | None = None

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._progress = self.on_epoch(f"epoch {epoch + 1}/{self.epochs}", self.steps)

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        if self._progress is not None:
            self._progress(1)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self._finish()

    def on_train_end(self, logs=None) -> None:
        self._finish()

    def _finish(self) -> None:
        close = getattr(self._progress, "close", None)
        if close is not None:
            close()
        self._progress = None


class _Validation(keras.callbacks.Callback):
    """Validates after every epoch, on each validation source separately.

    ``val_accuracy`` (what selects the best epoch and stops early) is the mean of the
    sources' accuracies, so a small source counts as much as a large one;
    ``val_accuracy_<source>`` gives each, and ``val_loss`` is the cross-entropy of the
    true class over all images. With ``averaged`` the moving average of the weights
    (``ema_momentum``) is validated instead of the weights.
    """

    def __init__(self, dataset, split: _Split, *, averaged: bool) -> None:
        super().__init__()
        self.dataset = dataset
        self.split = split
        self.averaged = averaged

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self.averaged:
            _swap_in_average(self.model)
        try:
            probabilities = self.model.predict(self.dataset, verbose=0)
        finally:
            if self.averaged:
                _swap_in_average(self.model)
        truth = self.split.targets.argmax(axis=1)
        correct = probabilities.argmax(axis=1) == truth
        picked = probabilities[np.arange(len(truth)), truth]
        accuracies = {name: float(correct[self.split.source == i].mean())
                      for i, name in enumerate(self.split.names)}
        if logs is not None:
            logs["val_loss"] = float(-np.log(np.maximum(picked, 1e-7)).mean())
            logs["val_accuracy"] = float(np.mean(list(accuracies.values())))
            if len(accuracies) > 1:
                logs.update({f"val_accuracy_{name}": value for name, value in accuracies.items()})


class _RunRecorder(keras.callbacks.Callback):
    """Every epoch: history row, checkpoint, best model, curves, early stopping."""

    def __init__(self, run_dir: Path, config: TrainConfig, labels: tuple[str, ...],
                 state: dict, train_split: _Split, val_split: _Split,
                 preprocessing: Preprocessing) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.preprocessing = preprocessing
        self.config = config
        self.labels = labels
        self.state = dict(state)
        self.data_summary = {"train": train_split.summary, "val": val_split.summary}
        self.stopped_early = False
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = dict(logs or {})
        done = epoch + 1
        lr = float(self.model.optimizer.learning_rate)  # the schedule's value at this step
        row = {"epoch": done, "loss": logs.get("loss"), "accuracy": logs.get("accuracy"),
               "val_loss": logs.get("val_loss"), "val_accuracy": logs.get("val_accuracy"),
               "lr": lr, "seconds": round(time.monotonic() - self._started, 1),
               **{k: v for k, v in logs.items() if k.startswith("val_accuracy_")}}
        val_accuracy = float(row["val_accuracy"])
        best = self.state["best_val_accuracy"]
        improved = best is None or val_accuracy > best
        if improved:
            self.state.update(best_val_accuracy=val_accuracy, best_epoch=done,
                              epochs_without_improvement=0)
            self._save_model(row)
        else:
            self.state["epochs_without_improvement"] += 1
        self.state["epochs_done"] = done
        _save_atomically(self.model, self.run_dir / CHECKPOINT_FILE)
        _append_history(self.run_dir / HISTORY_FILE, row)
        _write_json(self.run_dir / STATE_FILE, self.state)
        try:
            from fer8.training.plots import plot_curves

            plot_curves(read_history(self.run_dir / HISTORY_FILE), self.run_dir / CURVES_FILE)
        except Exception:  # a picture must never cost a run
            logger.warning("could not draw %s", CURVES_FILE, exc_info=True)
        per_source = "".join(f", {k[len('val_accuracy_'):]} {v:.4f}" for k, v in row.items()
                             if k.startswith("val_accuracy_"))
        logger.info(
            "epoch %d/%d: loss %.4f, accuracy %.4f, val_loss %.4f, val_accuracy %.4f%s, "
            "lr %.2e, %.0f s%s", done, self.config.epochs, row["loss"], row["accuracy"],
            row["val_loss"], val_accuracy, per_source, lr, row["seconds"],
            " (best so far, saved)" if improved else "")
        if self.state["epochs_without_improvement"] >= self.config.patience:
            logger.info("no better val_accuracy for %d epochs: stopping early",
                           self.config.patience)
            self.stopped_early = True
            self.model.stop_training = True

    def _save_model(self, row: Mapping[str, Any]) -> None:
        from fer8.models.modelfile import ModelSpec
        from fer8.training.keras_models import save_model

        spec = ModelSpec(
            labels=self.labels, input_size=self.config.image_size,
            preprocessing=self.preprocessing,
            backbone=cast(str, self.config.backbone),
            name=self.run_dir.name,
            metadata={"data": self.data_summary, "epoch": row["epoch"],
                      "validation": {"accuracy": row["val_accuracy"], "loss": row["val_loss"],
                                     **{k[4:]: v for k, v in row.items()
                                        if k.startswith("val_accuracy_")}},
                      "training": self.config.to_dict()})
        averaged = bool(self.config.ema_momentum)
        if averaged:  # the weights that were validated
            _swap_in_average(self.model)
        try:
            save_model(self.model, spec, self.run_dir / MODEL_FILE)
        finally:
            if averaged:
                _swap_in_average(self.model)


def _calibrate(model_path: Path, split: _Split, preprocessing: Preprocessing,
               batch_size: int) -> None:
    """Fit the temperature of the run's best model on the validation crops, and store
    it with the ECE and likelihood before and after in the model's metadata
    (``calibration``; :func:`fer8.models.calibration.calibrate_model_file`).

    The saved file is run, through ONNX Runtime as ``fer8 predict`` runs it, rather than
    the network in memory, which holds the last epoch's weights, not the best one's.
    Each validation source weighs the same in the fit, as in ``val_accuracy``.
    """
    from fer8.models.calibration import calibrate_model_file
    from fer8.models.modelfile import read_model_file

    model = read_model_file(model_path).with_temperature(1.0)
    parts = []
    for start in range(0, len(split.images), batch_size):
        crops = split.images[start:start + batch_size]
        if crops.shape[-1] == 1:
            crops = np.repeat(crops, 3, axis=-1)
        parts.append(model(preprocessing.apply(crops)))
    summary = calibrate_model_file(model_path, model_path, np.concatenate(parts),
                                   split.targets.argmax(axis=1),
                                   [split.names[i] for i in split.source],
                                   fitted_on="validation")
    logger.info("calibrated on the validation crops: temperature %.3f, ECE %.1f%% -> %.1f%%",
                summary["temperature"], 100 * summary["ece_before"],
                100 * summary["ece_after"])


def preprocess_tensor(preprocessing: Preprocessing, crops):
    """:meth:`Preprocessing.apply` as TensorFlow ops on a float32 batch (inside tf.data),
    so training feeds the network exactly what prediction feeds it."""
    import tensorflow as tf

    from fer8.models.preprocessing import LUMA

    x = crops
    if preprocessing.grayscale:
        x = tf.repeat(tf.reduce_sum(x * tf.constant(LUMA), axis=-1, keepdims=True), 3, axis=-1)
    x = x[..., ::-1] if preprocessing.channel_order == "BGR" else x
    x = ((x - tf.constant(preprocessing.mean, tf.float32))
         / tf.constant(preprocessing.std, tf.float32))
    if preprocessing.standardize:
        mean, variance = tf.nn.moments(x, axes=[1, 2, 3], keepdims=True)
        pixels = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        x = (x - mean) / tf.maximum(tf.sqrt(variance), 1.0 / tf.sqrt(pixels))
    return x


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a run's ``history.csv`` as numbers."""
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(handle)]


def _append_history(path: Path, row: Mapping[str, Any]) -> None:
    rows = []
    if path.exists():  # a resumed run drops rows of epochs it is redoing
        rows = [r for r in read_history(path) if r["epoch"] < row["epoch"]]
    # Then one column per validation source, when there are several.
    columns = [*HISTORY_COLUMNS, *(k for k in row if k not in HISTORY_COLUMNS)]
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for r in [*rows, row]:
            writer.writerow({k: _format(r.get(k)) for k in columns})
    os.replace(partial, path)


def _format(value: Any) -> str:
    if value is None:
        return ""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e9 else f"{value:.6g}"


def _save_atomically(model, path: Path) -> None:
    partial = path.with_name(path.stem + ".partial.keras")
    model.save(partial)
    os.replace(partial, path)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(partial, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")

