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
    command,
    exit_missing_extra,
    fail,
    verbosity,
)
from fer8.options.training import KeepClassesOptions, RunOptions
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
        exit_missing_extra("fer8 train", "train", exc.name)


@command(RunOptions, "run")
def train(run: RunOptions) -> None:
    """Train a model on labelled faces; the best epoch is saved as OUT/model.fer8.

    Photos go through the same detect -> landmarks -> align steps as fer8 predict;
    pre-cropped faces (FER+, fer2013.csv, small images) are framed like predict frames
    them. Crops are cached, so a second run starts training at once.
    """
    if run.keep_classes:
        from fer8.cli.keep_classes import keep_classes as run_keep_classes

        init_model = None if run.training.init_model is None else Path(run.training.init_model)
        run_keep_classes(run.data, run.out, init_model, run.val, run.cache, run.workers, run.keep)
        return
    if run.keep != KeepClassesOptions():
        click.echo("fer8: error: --max-old-drop applies to --keep-classes only", err=True)
        sys.exit(EXIT_USAGE)
    _import_tensorflow_quietly()
    from fer8.training.loop import StartError, TrainConfig, check_image_size
    from fer8.training.loop import train as run_training

    training = run.training
    # Absolute paths: a resumed run may be started from another folder.
    absolute = {
        "teachers": tuple(map(_teacher, training.teachers)),
        "init_model": training.init_model and str(Path(training.init_model).resolve()),
    }
    if training.backbone_weights not in (None, "imagenet", "none"):
        absolute["backbone_weights"] = str(Path(training.backbone_weights).resolve())
    config = TrainConfig(
        **{**training.to_kwargs(), **absolute},
        data=tuple(map(_absolute, run.data)),
        val=tuple(map(_absolute, run.val)) or None,
        **run.detection.detector_kwargs(),
    )
    try:  # a usage error, found before anything is read or written
        check_image_size(config)
    except StartError as exc:
        fail(exc, EXIT_USAGE)
    if verbosity() == 0:  # the per-epoch summary lines are the command's progress report
        logging.getLogger("fer8.training.loop").setLevel(logging.INFO)
    result = run_training(
        config,
        run.out,
        resume=run.resume,
        cache=run.cache,
        workers=run.workers,
        on_prepare=ProgressBar,
        on_epoch=ProgressBar,
        keep_checkpoint=run.keep_checkpoint,
    )
    if result.model_path is None:
        click.echo(f"fer8: no epoch finished; nothing saved in {run.out}", err=True)
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
