"""A training run's folder: its configuration (``config.json``), its progress
(``state.json``), the history of its epochs (``history.csv``), and what ``--resume`` and a
second run in the same folder are allowed to do there.

Writes are atomic (a temporary file, then a rename), so Ctrl-C or a crash never leaves a
file half-written.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from fer8.errors import Fer8Error
from fer8.options.training import TrainOptions
from fer8.pipeline.detection import DEFAULT_DETECTOR
from fer8.training.augment import Augmentation
from fer8.training.datasets import parse_source

CONFIG_FILE = "config.json"


STATE_FILE = "state.json"


CHECKPOINT_FILE = "checkpoint.keras"


MODEL_FILE = "model.fer8"


HISTORY_FILE = "history.csv"


CURVES_FILE = "curves.png"


HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


class RunFolderError(Fer8Error, FileExistsError):
    """The run folder holds another run, or has nothing to resume."""


class StartError(Fer8Error, ValueError):
    """The starting weights or model do not fit the backbone or the data."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig(TrainOptions):
    """Everything that decides a training run (stored in ``config.json``): the settings
    of :class:`~fer8.options.training.TrainOptions` (their defaults, ranges and help are
    there), its data and its detector.

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
        image_size: Side of the model input, at least what the backbone takes
            (:data:`fer8.training.backbones.MIN_INPUT_SIZE`: 75 for FaceNet, 32 for
            ResNet50); :func:`train` refuses a smaller one before it reads any data.
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
        freeze_stages: Backbone stages kept frozen, from the input on (ResNet50 1-5, FaceNet 1-4).
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
            preprocessing so that prediction cuts faces out the same way. ``"random"``:
            each training face cut out so half the time, drawn afresh each time it is
            seen, and prediction (and validation) unmasked, so that black around a face
            is no cue to its source. ``"none"``: as aligned. None: as ``init_model`` does
            (a fine-tuned model frames faces as its start did), else as aligned.
    """

    data: tuple[str, ...]
    val: tuple[str, ...] | None = None
    augmentation: Augmentation = field(default_factory=Augmentation)
    detector: str = DEFAULT_DETECTOR
    detector_options: Mapping[str, Any] = field(default_factory=dict)

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
        super().__post_init__()  # each setting's range and choices (fer8.options.training)
        # The default start and backbone, spelled out in config.json.
        from fer8.models.registry import DEFAULT_MODEL

        if self.backbone_weights is None:
            if self.init_model is None and self.backbone in (None, _backbone_of(DEFAULT_MODEL)):
                object.__setattr__(self, "init_model", DEFAULT_MODEL)
            object.__setattr__(self, "backbone_weights", "none")
        if self.backbone is None:
            object.__setattr__(
                self, "backbone", _backbone_of(self.init_model) if self.init_model else "resnet50"
            )

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


def check_image_size(config: TrainConfig) -> None:
    """Refuse an image size below what the backbone takes
    (:data:`fer8.training.backbones.MIN_INPUT_SIZE`), which Keras would only find when
    it builds the network, after the data is prepared.

    Raises:
        StartError: ``config.image_size`` is too small for ``config.backbone``.
    """
    from fer8.training.backbones import MIN_INPUT_SIZE

    smallest = MIN_INPUT_SIZE.get(cast(str, config.backbone), 1)
    if config.image_size < smallest:
        raise StartError(
            f"image size {config.image_size} is below the smallest input of the "
            f"{config.backbone} backbone: use --image-size {smallest} or more"
        )


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


def open_run(config: TrainConfig, run_dir: Path, resume: bool) -> tuple[TrainConfig, dict]:
    """Check the run folder against ``resume``; return the config and state to go on with."""
    config_path = run_dir / CONFIG_FILE
    if not resume:
        if run_dir.exists() and any(run_dir.iterdir()) and not _never_trained(run_dir):
            raise RunFolderError(
                f"{run_dir}: run folder exists and is not empty; pass "
                "--resume to continue it, or choose another --out"
            )
        state = {
            "epochs_done": 0,
            "best_val_accuracy": None,
            "best_epoch": None,
            "epochs_without_improvement": 0,
        }
        return config, state  # written by begin_run once the run can start
    if (
        config_path.exists()
        and (run_dir / MODEL_FILE).exists()
        and not (run_dir / CHECKPOINT_FILE).exists()
    ):
        raise RunFolderError(
            f"{run_dir}: the run has ended and its {CHECKPOINT_FILE} was not "
            "kept; start a new run with --init-model "
            f"{run_dir / MODEL_FILE}, or pass --keep-checkpoint to be able "
            "to extend runs"
        )
    if not (run_dir / CHECKPOINT_FILE).exists() or not config_path.exists():
        raise RunFolderError(
            f"{run_dir}: nothing to resume (no {CHECKPOINT_FILE}; "
            "a run writes it after its first epoch)"
        )
    stored = TrainConfig.from_dict(json.loads(config_path.read_text()))
    for name in ("data", "val"):
        given, kept = getattr(config, name), getattr(stored, name)
        if given and kept and list(map(_resolved, given)) != list(map(_resolved, kept)):
            raise RunFolderError(
                f"{run_dir}: the run was trained on {name}={' '.join(kept)}, not {' '.join(given)}"
            )
    if config.epochs != stored.epochs:  # the one setting a resumed run may change
        stored = replace(stored, epochs=config.epochs)
        write_json(config_path, stored.to_dict())
    return stored, json.loads((run_dir / STATE_FILE).read_text())


def _resolved(spec: str) -> str:
    """A source spec with its path made absolute, for comparing two specs."""
    source = parse_source(spec)
    return str(replace(source, path=source.path.resolve()))


def begin_run(run_dir: Path, config: TrainConfig, state: dict) -> None:
    """Create the run folder with its recipe and state, when the run is about to start."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG_FILE, config.to_dict())
    write_json(run_dir / STATE_FILE, state)


def undo_begin(run_dir: Path, created: bool) -> None:
    """Remove what :func:`begin_run` wrote (and the folder, if this run made it)."""
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


def _backbone_of(model: str) -> str:
    """The backbone of a model file or registered model (its spec only is read)."""
    from fer8.models.modelfile import read_spec
    from fer8.models.registry import resolve_model

    return read_spec(resolve_model(model)).backbone


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a run's ``history.csv`` as numbers."""
    with open(path, newline="") as handle:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(handle)
        ]


def append_history(path: Path, row: Mapping[str, Any]) -> None:
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


def save_atomically(model, path: Path) -> None:
    partial = path.with_name(path.stem + ".partial.keras")
    model.save(partial)
    os.replace(partial, path)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(partial, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
