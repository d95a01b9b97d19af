"""The Keras callbacks of a training run: dropout seeds that repeat on ``--resume``, the
per-epoch progress bar, validation (with the EMA weights swapped in), and the recorder that
writes history, state, checkpoint and the best model after each epoch.

Their loggers are children of ``fer8.training.loop``, so ``fer8 train`` shows the
per-epoch lines this module logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from fer8.models.preprocessing import Preprocessing
from fer8.training.backend import import_keras
from fer8.training.loop.run_folder import (
    CHECKPOINT_FILE,
    CURVES_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    STATE_FILE,
    TrainConfig,
    append_history,
    read_history,
    save_atomically,
    write_json,
)
from fer8.training.loop.splits import Split

if TYPE_CHECKING:
    import keras  # untyped: Any to mypy; the names in annotations need a module
else:
    keras = import_keras()

logger = logging.getLogger(__name__)


class RepeatableDropout(keras.callbacks.Callback):
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
        generators = [
            v for v in self.model.non_trainable_variables if v.name == "seed_generator_state"
        ]
        for index, state in enumerate(generators):
            state.assign(
                np.array([self.seed + index, epoch * self.steps_per_epoch], dtype=state.dtype)
            )


def _swap_in_average(model) -> None:
    """Exchange the trained weights with the optimizer's moving average of them.

    Calling it twice restores both exactly. (``keras.callbacks.SwapEMAWeights``, which
    reads the same two private optimizer lists, swaps through sums and differences on
    TensorFlow, which round the weights a little every time.)
    """
    optimizer = model.optimizer
    for variable, average in zip(
        optimizer._trainable_variables, optimizer._model_variables_moving_average
    ):
        value = variable.numpy()
        variable.assign(average)
        average.assign(value)


class EpochProgress(keras.callbacks.Callback):
    """Reports each training step to a progress callback made per epoch (``on_epoch``)."""

    def __init__(
        self, on_epoch: Callable[[str, int], Callable[[int], None]], epochs: int, steps: int
    ) -> None:
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


class Validation(keras.callbacks.Callback):
    """Validates after every epoch, on each validation source separately.

    ``val_accuracy`` (what selects the best epoch and stops early) is the mean of the
    sources' accuracies, so a small source counts as much as a large one;
    ``val_accuracy_<source>`` gives each, and ``val_loss`` is the cross-entropy of the
    true class over all images. With ``averaged`` the moving average of the weights
    (``ema_momentum``) is validated instead of the weights.
    """

    def __init__(self, dataset, split: Split, *, averaged: bool) -> None:
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
        accuracies = {
            name: float(correct[self.split.source == i].mean())
            for i, name in enumerate(self.split.names)
        }
        if logs is not None:
            logs["val_loss"] = float(-np.log(np.maximum(picked, 1e-7)).mean())
            logs["val_accuracy"] = float(np.mean(list(accuracies.values())))
            if len(accuracies) > 1:
                logs.update({f"val_accuracy_{name}": value for name, value in accuracies.items()})


class RunRecorder(keras.callbacks.Callback):
    """Every epoch: history row, checkpoint, best model, curves, early stopping."""

    def __init__(
        self,
        run_dir: Path,
        config: TrainConfig,
        labels: tuple[str, ...],
        state: dict,
        train_split: Split,
        val_split: Split,
        preprocessing: Preprocessing,
    ) -> None:
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
        row = {
            "epoch": done,
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_loss"),
            "val_accuracy": logs.get("val_accuracy"),
            "lr": lr,
            "seconds": round(time.monotonic() - self._started, 1),
            **{k: v for k, v in logs.items() if k.startswith("val_accuracy_")},
        }
        val_accuracy = float(row["val_accuracy"])
        best = self.state["best_val_accuracy"]
        improved = best is None or val_accuracy > best
        if improved:
            self.state.update(
                best_val_accuracy=val_accuracy, best_epoch=done, epochs_without_improvement=0
            )
            self._save_model(row)
        else:
            self.state["epochs_without_improvement"] += 1
        self.state["epochs_done"] = done
        save_atomically(self.model, self.run_dir / CHECKPOINT_FILE)
        append_history(self.run_dir / HISTORY_FILE, row)
        write_json(self.run_dir / STATE_FILE, self.state)
        try:
            from fer8.training.plots import plot_curves

            plot_curves(read_history(self.run_dir / HISTORY_FILE), self.run_dir / CURVES_FILE)
        except Exception:  # a picture must never cost a run
            logger.warning("could not draw %s", CURVES_FILE, exc_info=True)
        per_source = "".join(
            f", {k[len('val_accuracy_') :]} {v:.4f}"
            for k, v in row.items()
            if k.startswith("val_accuracy_")
        )
        logger.info(
            "epoch %d/%d: loss %.4f, accuracy %.4f, val_loss %.4f, val_accuracy %.4f%s, "
            "lr %.2e, %.0f s%s",
            done,
            self.config.epochs,
            row["loss"],
            row["accuracy"],
            row["val_loss"],
            val_accuracy,
            per_source,
            lr,
            row["seconds"],
            " (best so far, saved)" if improved else "",
        )
        if self.state["epochs_without_improvement"] >= self.config.patience:
            logger.info(
                "no better val_accuracy for %d epochs: stopping early", self.config.patience
            )
            self.stopped_early = True
            self.model.stop_training = True

    def _save_model(self, row: Mapping[str, Any]) -> None:
        from fer8.models.modelfile import ModelSpec
        from fer8.training.keras_models import save_model

        spec = ModelSpec(
            labels=self.labels,
            input_size=self.config.image_size,
            preprocessing=self.preprocessing,
            backbone=cast(str, self.config.backbone),
            name=self.run_dir.name,
            metadata={
                "data": self.data_summary,
                "epoch": row["epoch"],
                "validation": {
                    "accuracy": row["val_accuracy"],
                    "loss": row["val_loss"],
                    **{k[4:]: v for k, v in row.items() if k.startswith("val_accuracy_")},
                },
                "training": self.config.to_dict(),
            },
        )
        averaged = bool(self.config.ema_momentum)
        if averaged:  # the weights that were validated
            _swap_in_average(self.model)
        try:
            save_model(self.model, spec, self.run_dir / MODEL_FILE)
        finally:
            if averaged:
                _swap_in_average(self.model)


def calibrate_run(
    model_path: Path, split: Split, preprocessing: Preprocessing, batch_size: int
) -> None:
    """Fit the temperature of the run's best model on the validation crops, and store
    it with the ECE and likelihood before and after in the model's metadata
    (``calibration``; :func:`fer8.models.calibration.calibrate_model_file`).

    The saved file is run, through ONNX Runtime as ``fer8 predict`` runs it, rather than
    the network in memory, which holds the last epoch's weights, not the best one's.
    Each validation source weighs the same in the fit, as in ``val_accuracy``. A fitted
    temperature that would raise the error on these crops is not kept (a warning says
    so, with both figures).
    """
    from fer8.models.calibration import calibrate_model_file
    from fer8.models.modelfile import read_model_file

    model = read_model_file(model_path).with_temperature(1.0)
    parts = []
    for start in range(0, len(split.images), batch_size):
        crops = split.images[start : start + batch_size]
        if crops.shape[-1] == 1:
            crops = np.repeat(crops, 3, axis=-1)
        parts.append(model(preprocessing.apply(crops)))
    summary = calibrate_model_file(
        model_path,
        model_path,
        np.concatenate(parts),
        split.targets.argmax(axis=1),
        [split.names[i] for i in split.source],
        fitted_on="validation",
    )
    logger.info(
        "calibrated on the validation crops: temperature %.3f, ECE %.1f%% -> %.1f%%",
        summary["temperature"],
        100 * summary["ece_before"],
        100 * summary["ece_after"],
    )
