"""``fer8 train``: a run folder from data sources (the train extra)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from fer8.cli.common import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    cli,
    detection_options,
    fail,
    handle_errors,
    install_command,
    verbosity,
)
from fer8.progress import ProgressBar


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up chatter hidden (see :mod:`fer8.training.backend`)
    and its later C++ errors too: on a command line they bury the one line that matters.
    ``-vv`` keeps the chatter. Without the train extra, exits with a one-line message
    saying what to install.
    """
    if verbosity() < 2:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from fer8.training.backend import import_keras

    try:
        import_keras()
        import onnx  # noqa: F401  (model files are written as ONNX graphs)
    except ImportError as exc:
        click.echo(
            f"fer8: error: fer8 train needs the train extra ({exc.name} is missing): "
            f"{install_command('train')}",
            err=True,
        )
        sys.exit(EXIT_USAGE)


@cli.command()
@click.option(
    "--data",
    "sources",
    required=True,
    multiple=True,
    metavar="PATH[@SPLIT][:WEIGHT]",
    help="Training data: class folders, a FER+ folder (label.csv), an ExpW folder "
    "(label.lst) or fer2013.csv, or an archive of one (.tar.gz, .zip; "
    "ARCHIVE/FOLDER for one of several inside). Repeat for several sources; @train or @val "
    "takes one side of the fixed split (by photo, film or subject); :WEIGHT "
    "draws each image that many times per epoch (e.g. expw@train:3).",
)
@click.option(
    "--out",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder: checkpoints, model.fer8, history.csv, curves.png.",
)
@click.option(
    "--val",
    "val_sources",
    multiple=True,
    metavar="PATH[@SPLIT]",
    help="Validation data; repeat for several (the best epoch has the best mean "
    "accuracy over them). Default: --val-fraction of each --data, per class.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.1,
    show_default=True,
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Epochs at most. With --resume a larger value extends the run (the "
    "learning-rate schedule fixed at its start is kept).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--image-size",
    type=click.IntRange(min=32),
    default=224,
    show_default=True,
    help="Side of the model input; 112 trains about 4x faster on CPUs. At least "
    "75 for facenet, 32 for resnet50.",
)
@click.option(
    "--backbone",
    type=click.Choice(["resnet50", "vggface-resnet50", "facenet"]),
    default=None,
    help="facenet: FaceNet's Inception-ResNet-v1, trained to recognise faces "
    "(start it from --backbone-weights facenet_keras.h5, see docs/training.md). "
    "Default: the --init-model's, else the bundled model's when no "
    "--backbone-weights are given, else resnet50.",
)
@click.option(
    "--backbone-weights",
    default=None,
    metavar="imagenet|PATH|none",
    help="Starting weights instead of a model: 'imagenet' (resnet50 only; "
    "downloaded once by Keras), a weight file (a keras-vggface .h5 for "
    "vggface-resnet50, facenet_keras.h5 for facenet), or 'none'. Default: "
    "the bundled model's backbone starts from the bundled model (no "
    "download), another from none.",
)
@click.option(
    "--init-model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from a trained .fer8 model, e.g. to fine-tune on your faces or "
    "at a larger --image-size; classes it lacks (say worry) start fresh.",
)
@click.option(
    "--freeze-stages",
    type=click.IntRange(0, 5),
    default=0,
    show_default=True,
    help="Keep the first N stages of the backbone frozen (ResNet50: 1-5; FaceNet: 1-4, "
    "its parts; faster, less overfitting).",
)
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=3e-4,
    show_default=True,
    help="Peak AdamW learning rate (warm-up, then cosine decay).",
)
@click.option(
    "--warmup-epochs",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Epochs of linear learning-rate warm-up.",
)
@click.option("--label-smoothing", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option(
    "--ema-momentum",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Validate and save an exponential moving average of the weights with "
    "this momentum (e.g. 0.999; 0: the weights themselves).",
)
@click.option(
    "--soft-labels",
    is_flag=True,
    help="Train on FER+ vote distributions instead of majority labels.",
)
@click.option(
    "--class-weighting",
    type=click.Choice(["sqrt", "balanced", "none"]),
    default="sqrt",
    show_default=True,
    help="Loss weights against class imbalance.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Stop after N epochs without a better validation accuracy.",
)
@click.option(
    "--steps-per-epoch",
    type=click.IntRange(min=1),
    help="Steps per epoch (default: one pass over the training data).",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "float32", "bfloat16"]),
    default="auto",
    show_default=True,
    help="auto: mixed bfloat16 where the CPU has AVX512-BF16/AMX.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out at its next epoch.")
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="Crop cache folder (default: crops/ in the fer8 cache, see FER8_HOME).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Threads detecting and aligning faces while preparing crops.",
)
@click.option(
    "--keep-checkpoint",
    is_flag=True,
    help="Keep checkpoint.keras when the run ends, to extend it later with "
    "--resume --epochs N (by default only model.fer8 is kept).",
)
@click.option(
    "--grayscale/--colour",
    "grayscale",
    default=None,
    help="Whether the model sees faces in gray (default: gray when every training "
    "face is gray or --init-model's model is gray).",
)
@click.option(
    "--teacher",
    "teachers",
    multiple=True,
    metavar="NAME|PATH",
    help="A trained model whose probabilities on each training face are blended "
    "into its target (knowledge distillation); repeat for several, whose "
    "mean is used.",
)
@click.option(
    "--teacher-weight",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="The teachers' share of each target; the label keeps the rest.",
)
@click.option(
    "--mask",
    type=click.Choice(["contour", "random", "none"]),
    default=None,
    help="contour: cut every face out along its landmark contour onto black, in "
    "training and (recorded in the model) at prediction, so that sources cut "
    "out differently (the AffectNet-like set) look alike. random: cut each "
    "training face out so half the time, drawn afresh each time it is seen; "
    "validation and prediction unmasked. Default: as the model the run starts "
    "from does.",
)
@click.option(
    "--keep-classes",
    is_flag=True,
    help="Add the classes of --data (one folder of class folders, e.g. DATA/worry/) "
    "to the start model's, in minutes and without TensorFlow: the network stays, a "
    "new classifier row is learnt against the feature bank in the model file. "
    "Uses --init-model, --val, --cache and --workers only; see docs/training.md.",
)
@detection_options
@handle_errors
def train(
    sources: tuple[str, ...],
    run_dir: Path,
    val_sources: tuple[str, ...],
    val_fraction: float,
    epochs: int,
    batch_size: int,
    image_size: int,
    backbone: str | None,
    backbone_weights: str | None,
    init_model: Path | None,
    freeze_stages: int,
    learning_rate: float,
    warmup_epochs: float,
    label_smoothing: float,
    ema_momentum: float,
    soft_labels: bool,
    class_weighting: str,
    patience: int,
    steps_per_epoch: int | None,
    precision: str,
    seed: int,
    resume: bool,
    cache: Path | None,
    workers: int,
    keep_checkpoint: bool,
    grayscale: bool | None,
    teachers: tuple[str, ...],
    teacher_weight: float,
    mask: str | None,
    keep_classes: bool,
    detection: dict,
) -> None:
    """Train a model on labelled faces; the best epoch is saved as OUT/model.fer8.

    Photos go through the same detect -> landmarks -> align steps as fer8 predict;
    pre-cropped faces (FER+, fer2013.csv, small images) are framed like predict frames
    them. Crops are cached, so a second run starts training at once.
    """
    if keep_classes:
        from fer8.cli.keep_classes import keep_classes as run_keep_classes

        run_keep_classes(sources, run_dir, init_model, val_sources, cache, workers)
        return
    _import_tensorflow_quietly()
    from fer8.training.loop import StartError, TrainConfig, check_image_size
    from fer8.training.loop import train as run_training

    if backbone_weights not in (None, "imagenet", "none"):
        backbone_weights = str(Path(backbone_weights).resolve())
    config = TrainConfig(
        # Absolute paths: a resumed run may be started from another folder.
        data=tuple(map(_absolute, sources)),
        val=tuple(map(_absolute, val_sources)) or None,
        val_fraction=val_fraction,
        grayscale=grayscale,
        **detection,
        epochs=epochs,
        batch_size=batch_size,
        image_size=image_size,
        backbone=backbone,
        backbone_weights=backbone_weights,
        init_model=str(init_model.resolve()) if init_model else None,
        freeze_stages=freeze_stages,
        learning_rate=learning_rate,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        ema_momentum=ema_momentum,
        soft_labels=soft_labels,
        class_weighting=class_weighting,
        patience=patience,
        steps_per_epoch=steps_per_epoch,
        precision=precision,
        seed=seed,
        teachers=tuple(map(_teacher, teachers)),
        teacher_weight=teacher_weight,
        mask=mask,
    )
    try:  # a usage error, found before anything is read or written
        check_image_size(config)
    except StartError as exc:
        fail(exc, EXIT_USAGE)
    if verbosity() == 0:  # the per-epoch summary lines are the command's progress report
        logging.getLogger("fer8.training.loop").setLevel(logging.INFO)
    result = run_training(
        config,
        run_dir,
        resume=resume,
        cache=cache,
        workers=workers,
        on_prepare=ProgressBar,
        on_epoch=ProgressBar,
        keep_checkpoint=keep_checkpoint,
    )
    if result.model_path is None:
        click.echo(f"fer8: no epoch finished; nothing saved in {run_dir}", err=True)
        sys.exit(130 if result.interrupted else EXIT_INPUT_FAILED)
    click.echo(
        f"fer8: best val_accuracy {result.best_val_accuracy:.4f} at epoch "
        f"{result.best_epoch}; model: {result.model_path}",
        err=True,
    )
    sys.exit(130 if result.interrupted else EXIT_OK)


def _teacher(name: str) -> str:
    """A --teacher model: a path made absolute (resumed runs may start elsewhere), or a
    registered name as it is."""
    from fer8.models.registry import MODELS

    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if name in MODELS:
        return name
    raise click.BadParameter(
        f"{name}: no such model file, and not a model name", param_hint="--teacher"
    )


def _absolute(spec: str) -> str:
    """A --data/--val spec with its path absolute; a missing path is a usage error."""
    from dataclasses import replace

    from fer8.training.archives import archive_part
    from fer8.training.datasets import DatasetError, parse_source

    try:
        source = parse_source(spec)
    except DatasetError as exc:
        raise click.BadParameter(str(exc)) from None
    if not source.path.exists() and archive_part(source.path) is None:
        raise click.BadParameter(f"{source.path}: no such file or folder")
    return str(replace(source, path=source.path.resolve()))
