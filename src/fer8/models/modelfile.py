"""The fer8 model file: a trained network plus everything needed to use it.

A ``.fer8`` file is a zip archive with two members:

* ``fer8.json``: the :class:`ModelSpec` (labels in output order, input size, the exact
  preprocessing, backbone name, free-form metadata such as training figures);
* ``model.keras``: the network in Keras 3's native format; or, in a *compact* file,
  ``network.json`` (the Keras model config) and ``weights.npz``, where convolution and
  dense kernels are stored as float16 and everything else (BatchNorm statistics,
  biases) as float32. That halves a ResNet50 (95 -> 47 MB) so it can ship inside the
  package; float16 would overflow BatchNorm's moving variances, hence the split.

Loading never guesses labels or preprocessing from a file name: a file without a valid
``fer8.json`` is refused.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ModelFormatError
from fer8.models.preprocessing import Preprocessing

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

FORMAT = "fer8-model"
FORMAT_VERSION = 1
SPEC_MEMBER = "fer8.json"
KERAS_MEMBER = "model.keras"
NETWORK_MEMBER = "network.json"
WEIGHTS_MEMBER = "weights.npz"
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class ModelSpec:
    """What a model predicts and how its input must look.

    Attributes:
        labels: Class names in the order of the model's outputs.
        input_size: Side of the square input crop, in pixels.
        preprocessing: How ``uint8`` RGB crops become model input.
        backbone: The backbone's name, e.g. ``"resnet50"``.
        name: A short name for messages.
        metadata: Anything else worth keeping (data summary, epochs, validation figures).
    """

    labels: tuple[str, ...]
    input_size: int
    preprocessing: Preprocessing
    backbone: str
    name: str = "fer8-model"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be non-empty and unique, got {self.labels!r}")
        if not isinstance(self.input_size, int) or self.input_size < 16:
            raise ValueError(f"input_size must be an integer >= 16, got {self.input_size!r}")

    def to_dict(self) -> dict[str, Any]:
        from fer8 import __version__

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "labels": list(self.labels),
            "input_size": self.input_size,
            "preprocessing": self.preprocessing.to_dict(),
            "backbone": self.backbone,
            "metadata": dict(self.metadata),
            "fer8_version": __version__,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"format version {data['format_version']} is newer than this fer8 reads "
                f"({FORMAT_VERSION}); upgrade fer8"
            )
        return cls(
            labels=tuple(str(label) for label in data["labels"]),
            input_size=int(data["input_size"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            backbone=str(data["backbone"]),
            name=str(data.get("name", "fer8-model")),
            metadata=dict(data.get("metadata", {})),
        )


class ExpressionModel:
    """A loaded model: its spec and a network that maps preprocessed crops to probabilities.

    Build one with :func:`fer8.load_model` (from a file) or directly from a Keras model.
    ``keras_model`` is the network as stored (for saving and further training); predictions
    come from a copy with BatchNorm folded in (:mod:`fer8.training.inference`), made here, so a
    change to ``keras_model``'s weights needs a new ``ExpressionModel`` to take effect.
    """

    def __init__(self, keras_model: keras.Model, spec: ModelSpec, *, precision: str = "float32"):
        _check_compatible(keras_model, spec)
        self.spec = spec
        self.precision = precision
        self.keras_model = with_precision(keras_model, precision)
        from fer8.training.inference import inference_function

        self._run = inference_function(self.keras_model, spec.input_size)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Probabilities (N, C) for a preprocessed batch (N, S, S, 3)."""
        return self._run(batch)

    def __repr__(self) -> str:
        return (f"ExpressionModel(name={self.spec.name!r}, backbone={self.spec.backbone!r}, "
                f"labels={list(self.labels)}, input_size={self.spec.input_size}, "
                f"precision={self.precision!r})")


def save_model(keras_model: keras.Model, spec: ModelSpec, path: str | os.PathLike, *,
               compact: bool = False) -> Path:
    """Write ``keras_model`` and ``spec`` as a ``.fer8`` file (written to a temporary name
    first, so an interrupted save never leaves a truncated model behind).

    Args:
        compact: Store kernels as float16 (half the size; for shipping). Predictions
            change by about 1e-3 in probability. A compact file is byte-for-byte the
            same for the same network and spec (its members carry a fixed date), so
            repacking a run reproduces its SHA-256; a full file embeds Keras's save
            time.
    """
    _check_compatible(keras_model, spec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if getattr(keras_model, "optimizer", None) is not None:
        keras_model = _without_optimizer(keras_model)
    partial = path.with_name(path.name + ".partial")
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(partial, "w") as archive:
        _write_member(archive, SPEC_MEMBER, json.dumps(spec.to_dict(), indent=2).encode())
        if compact:
            _write_member(archive, NETWORK_MEMBER, keras_model.to_json().encode())
            weights = Path(tmp) / WEIGHTS_MEMBER
            np.savez_compressed(weights, *[_compact(w) for w in keras_model.get_weights()])
            _write_member(archive, WEIGHTS_MEMBER, weights.read_bytes(), stored=True)
        else:
            inner = Path(tmp) / KERAS_MEMBER
            keras_model.save(inner)
            # model.keras is already a compressed zip: store it as is.
            _write_member(archive, KERAS_MEMBER, inner.read_bytes(), stored=True)
    os.replace(partial, path)
    return path


def _write_member(archive: zipfile.ZipFile, name: str, data: bytes, *,
                  stored: bool = False) -> None:
    """Add ``data`` as ``name`` with a fixed date (zip's earliest), so that the same
    content always makes the same archive bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16  # rw-r--r--, instead of writestr's default of none
    archive.writestr(info, data)


def _compact(array: NDArray) -> NDArray:
    """Kernels (2-D and up) as float16; vectors (biases, BatchNorm) stay float32."""
    return array.astype(np.float16) if array.ndim >= 2 else array.astype(np.float32)


def read_spec(path: str | os.PathLike) -> ModelSpec:
    """Read only the spec of a model file (fast: does not load the network)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return ModelSpec.from_dict(json.loads(archive.read(SPEC_MEMBER)))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not a fer8 model file ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: invalid {SPEC_MEMBER}: {exc}") from None


def read_model_file(path: str | os.PathLike, *, precision: str = "float32") -> ExpressionModel:
    """Load a ``.fer8`` file from disk (see :func:`fer8.load_model` for names and caching)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    path = Path(path)
    spec = read_spec(path)
    from fer8.training.backend import import_keras

    keras = import_keras()

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as archive:
        members = set(archive.namelist())
        try:
            if KERAS_MEMBER in members:
                inner = archive.extract(KERAS_MEMBER, tmp)
                keras_model = keras.saving.load_model(inner, compile=False)
            elif {NETWORK_MEMBER, WEIGHTS_MEMBER} <= members:
                keras_model = keras.models.model_from_json(archive.read(NETWORK_MEMBER))
                with np.load(archive.open(WEIGHTS_MEMBER)) as stored:
                    keras_model.set_weights([stored[f"arr_{i}"].astype(np.float32)
                                             for i in range(len(stored.files))])
            else:
                raise ModelFormatError(f"{path}: no network inside (neither {KERAS_MEMBER} "
                                       f"nor {NETWORK_MEMBER} and {WEIGHTS_MEMBER})")
        except ModelFormatError:
            raise
        except Exception as exc:  # Keras raises many kinds on a damaged archive
            raise ModelFormatError(f"{path}: cannot load the network ({exc})") from exc
    try:
        return ExpressionModel(keras_model, spec, precision=precision)
    except ValueError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None


def _check_compatible(keras_model: keras.Model, spec: ModelSpec) -> None:
    input_shape = tuple(keras_model.input_shape[1:])
    if input_shape != (spec.input_size, spec.input_size, 3):
        raise ValueError(f"network input {input_shape} does not match input_size {spec.input_size}")
    outputs = keras_model.output_shape[-1]
    if outputs != len(spec.labels):
        raise ValueError(f"network has {outputs} outputs but {len(spec.labels)} labels")


def with_precision(keras_model: keras.Model, precision: str) -> keras.Model:
    """The network computing in ``precision`` (``"float32"`` or ``"bfloat16"``).

    bfloat16 means mixed precision: variables stay float32 and the output layer
    computes in float32. A model already in the wanted precision is returned as is;
    otherwise a copy with the same weights.
    """
    import keras

    policy = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    layers = [layer for layer in keras_model.layers if layer.name not in keras_model.output_names]
    if all(layer.dtype_policy.name == policy for layer in layers if layer.weights):
        return keras_model

    def clone(layer):
        config = layer.get_config()
        if layer.name not in keras_model.output_names:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(keras_model, clone_function=clone)
    copy.set_weights(keras_model.get_weights())
    return copy


def _without_optimizer(keras_model: keras.Model) -> keras.Model:
    """An uncompiled copy: Keras 3 saves a compiled model's optimizer state too, which
    triples the file (Adam keeps two moments per weight) and is useless for prediction.
    (``clone_model`` would keep the optimizer; rebuilding from the config does not.)"""
    copy = keras_model.__class__.from_config(keras_model.get_config())
    copy.set_weights(keras_model.get_weights())
    return copy
