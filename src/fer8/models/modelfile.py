"""The fer8 model file: a trained network plus everything needed to use it.

A ``.fer8`` file is a zip archive:

* ``fer8.json``: the :class:`ModelSpec` (labels in output order, input size, the exact
  preprocessing, backbone name, free-form metadata such as training figures);
* ``model.onnx``: the network as an ONNX graph, which ONNX Runtime runs to predict
  (no TensorFlow needed) and from which ``fer8 train --init-model`` reads the weights
  back into Keras; its layers and weights are named as in Keras;
* ``network.json``: the Keras model config, so that Keras can rebuild the network to
  train it further;
* ``feature_bank.npz`` (optional): pooled features of faces of its classes, which
  ``fer8 train --keep-classes`` learns a new class against
  (:mod:`fer8.models.feature_bank`).
* ``model.int8.onnx`` (optional): the same network quantized to int8 by ``fer8 quantize``
  (:mod:`fer8.models.quantize`), about twice as fast on a CPU. Prediction runs it when it
  is there; training and the classifier weights of explanations read the float graph.

The weights are stored once, in the graph: a *compact* file (the bundled one) keeps
kernels as float16 (95 -> 47 MB), everything else as float32. Files written by fer8
before the graph existed (format version 1: ``model.keras``, or ``network.json`` with
``weights.npz``) still load when the ``train`` extra is installed, and ``fer8 export
--format fer8`` converts them once.

Loading never guesses labels or preprocessing from a file name: a file without a valid
``fer8.json`` is refused. This module reads model files; :mod:`fer8.models.writer`
writes them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ModelFormatError
from fer8.models.preprocessing import Preprocessing
from fer8.models.temperature_rule import TemperatureRule

logger = logging.getLogger(__name__)

FORMAT = "fer8-model"
#: 2: the network as an ONNX graph (``model.onnx``); 1: Keras weights only.
FORMAT_VERSION = 2
SPEC_MEMBER = "fer8.json"
ONNX_MEMBER = "model.onnx"
NETWORK_MEMBER = "network.json"
#: Members of format version 1 files, read through Keras (the ``train`` extra).
KERAS_MEMBER = "model.keras"
WEIGHTS_MEMBER = "weights.npz"
#: Pooled features of faces of the model's classes (:mod:`fer8.models.feature_bank`).
BANK_MEMBER = "feature_bank.npz"
#: The int8 network for prediction (optional, see :mod:`fer8.models.quantize`).
INT8_MEMBER = "model.int8.onnx"
#: Which network of a file to run: ``auto`` (int8 where the file has it), ``float``, ``int8``.
PRECISIONS = ("auto", "float", "int8")


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
        temperature: Divides the network's logits before its softmax, fitted so that
            confidences match accuracy (:mod:`fer8.models.calibration`); every runtime
            applies it. 1 (the default, and what a file without one means) leaves the
            network's probabilities as they are.
        temperature_rule: A temperature per crop, from its colour and detail
            (:class:`~fer8.models.temperature_rule.TemperatureRule`), applied instead of
            ``temperature`` where set; None (the default, and what a file without one
            means) applies ``temperature`` to every crop.
    """

    labels: tuple[str, ...]
    input_size: int
    preprocessing: Preprocessing
    backbone: str
    name: str = "fer8-model"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    temperature: float = 1.0
    temperature_rule: TemperatureRule | None = None

    def __post_init__(self) -> None:
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be non-empty and unique, got {self.labels!r}")
        if not isinstance(self.input_size, int) or self.input_size < 16:
            raise ValueError(f"input_size must be an integer >= 16, got {self.input_size!r}")
        if not (isinstance(self.temperature, (int, float)) and 0 < self.temperature < math.inf):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")

    def to_dict(self) -> dict[str, Any]:
        from fer8 import __version__

        # Written only when set, so that the spec of an uncalibrated model (and the
        # bytes of its file) stays what it was before temperatures existed.
        calibration: dict[str, Any] = (
            {"temperature": self.temperature} if self.temperature != 1.0 else {}
        )
        if self.temperature_rule is not None:
            calibration["temperature_rule"] = self.temperature_rule.to_dict()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "labels": list(self.labels),
            "input_size": self.input_size,
            "preprocessing": self.preprocessing.to_dict(),
            "backbone": self.backbone,
            **calibration,
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
            temperature=float(data.get("temperature", 1.0)),
            temperature_rule=(
                TemperatureRule.from_dict(data["temperature_rule"])
                if "temperature_rule" in data
                else None
            ),
        )


class ExpressionModel:
    """A loaded model: its spec and a network that maps preprocessed crops to probabilities.

    Build one with :func:`fer8.load_model` (from a file). ``network`` is any callable
    from a preprocessed batch (N, S, S, 3) to probabilities (N, C): ONNX Runtime
    (:class:`~fer8.models.runtime.OnnxNetwork`) when loaded from a file, or a Keras
    model wrapped by ``keras_expression_model`` (the training package's ``keras_models``).

    Raises:
        ValueError: The network's input or output does not fit ``spec``.
    """

    def __init__(
        self,
        network: Callable[[NDArray[np.float32]], NDArray[np.float32]],
        spec: ModelSpec,
        *,
        runtime: str = "onnxruntime",
        source: Path | None = None,
    ):
        self.spec = spec
        self.runtime = runtime
        #: The model file it was loaded from (None: built in memory), which explanations
        #: read the classifier head's weights from.
        self.source = source
        self._run = network
        size = spec.input_size
        shape = tuple(getattr(network, "input_shape", None) or (size, size, 3))
        if shape != (size, size, 3):
            raise ValueError(f"network input {shape} does not match input_size {size}")
        # A network that declares its classes (ONNX Runtime's) is checked without a
        # forward pass, which would cost a one-photo `fer8 predict` a second run of it.
        classes = (getattr(network, "output_shape", None) or (None,))[-1]
        if not isinstance(classes, int):
            probe = self(np.zeros((1, spec.input_size, spec.input_size, 3), np.float32))
            classes = probe.shape[-1] if probe.shape[:-1] == (1,) else None
        if classes != len(spec.labels):
            raise ValueError(
                f"network gives {classes} outputs for an input of "
                f"{spec.input_size} px, but the spec has {len(spec.labels)} labels"
            )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def concurrent(self, runners: int) -> ExpressionModel | None:
        """The same model for ``runners`` batches run at once in threads of their own,
        sharing the cores its network was given (ONNX Runtime's
        :meth:`~fer8.models.runtime.OnnxNetwork.for_runners`), with the same answers;
        None when its network has no such form (one thread, Keras, a GPU)."""
        split = getattr(self._run, "for_runners", None)
        network = split(runners) if split is not None else None
        if network is None:
            return None
        if network is self._run:
            return self
        return ExpressionModel(network, self.spec, runtime=self.runtime, source=self.source)

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Probabilities (N, C) for a preprocessed batch (N, S, S, 3), calibrated by the
        spec's temperature (or its temperature rule, per crop). Both runtimes (ONNX
        Runtime and Keras) are wrapped in this class, so this is the one place the
        temperature is applied."""
        return self._calibrated(np.asarray(self._run(batch), np.float32), batch)

    def _calibrated(
        self, probabilities: NDArray[np.float32], batch: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        from fer8.models.calibration import apply_temperature

        if self.spec.temperature_rule is not None:
            return apply_temperature(probabilities, self.spec.temperature_rule.temperatures(batch))
        if self.spec.temperature != 1.0:
            return apply_temperature(probabilities, self.spec.temperature)
        return probabilities

    def with_temperature(self, temperature: float) -> ExpressionModel:
        """The same network with another temperature, the same for every crop (1: its
        uncalibrated probabilities, which calibration is fitted on); a temperature
        rule is dropped."""
        return ExpressionModel(
            self._run,
            replace(self.spec, temperature=float(temperature), temperature_rule=None),
            runtime=self.runtime,
            source=self.source,
        )

    def features(
        self, batch: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Probabilities (N, C) and the last feature map (N, K, h, w), the input of the
        global average pooling before the classifier, from one forward pass.

        Raises:
            ExplanationError: The network cannot give its feature map (its head is not
                pooling and dense layers, or it is not run by ONNX Runtime).
        """
        from fer8.errors import ExplanationError

        run = getattr(self._run, "features", None)
        found = run(batch) if run is not None else None
        if found is None:
            raise ExplanationError(
                f"{self.spec.name}: the network gives no feature map to explain its "
                f"predictions with (runtime {self.runtime}); explanations need a model "
                "file whose head is global average pooling followed by dense layers"
            )
        probabilities, features = found
        # The same probabilities as __call__ gives.
        probabilities = self._calibrated(np.asarray(probabilities, np.float32), batch)
        return probabilities, np.asarray(features, np.float32)

    def __repr__(self) -> str:
        return (
            f"ExpressionModel(name={self.spec.name!r}, backbone={self.spec.backbone!r}, "
            f"labels={list(self.labels)}, input_size={self.spec.input_size}, "
            f"runtime={self.runtime!r})"
        )


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


def read_graph(path: str | os.PathLike, *, precision: str = "float") -> bytes:
    """The network of a model file as a serialized ONNX graph.

    ``precision``: ``float`` (the default) is the float network, the one training and
    explanations read; ``int8`` the int8 network (an error for a file without one);
    ``auto`` the one prediction runs (:func:`network_precision`).

    A format version 1 file (Keras weights only) is translated through Keras, which
    needs the ``train`` extra; without it the error says how to convert the file. A
    graph written before fer8 gave it the ``features`` output (the last feature map,
    for explanations) is given it here, when its head allows one.

    Raises:
        ModelFormatError: Not a model file, or no network fer8 can read inside.
    """
    if network_precision(path, precision) == "int8":
        try:
            with zipfile.ZipFile(path) as archive:
                return archive.read(INT8_MEMBER)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelFormatError(f"{path}: cannot read the int8 network ({exc})") from None
    return _read_parts(Path(path))[1]


def network_precision(path: str | os.PathLike, precision: str = "auto") -> str:
    """Which network of the model file ``path`` to run for ``precision`` (one of
    :data:`PRECISIONS`): ``int8`` where asked for or, for ``auto``, where the file has
    an int8 network; else ``float``.

    Raises:
        ModelFormatError: ``int8`` asked for and the file has none.
        ValueError: An unknown ``precision``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float":
        return "float"
    try:
        with zipfile.ZipFile(path) as archive:
            present = INT8_MEMBER in archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFormatError(f"{path}: not a fer8 model file ({exc})") from None
    if precision == "int8" and not present:
        raise ModelFormatError(f"{path}: the file has no int8 network; make one with fer8 quantize")
    return "int8" if present else "float"


def read_network_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The Keras functional config stored in a model file (``network.json``), or None
    for a file that has none (a format version 1 ``model.keras`` file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if NETWORK_MEMBER not in archive.namelist():
                return None
            network = json.loads(archive.read(NETWORK_MEMBER))
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: cannot read {NETWORK_MEMBER} ({exc})") from None
    return network.get("config", network)


def _read_parts(path: Path) -> tuple[ModelSpec, bytes]:
    """The spec and the ONNX graph of a model file (see :func:`read_graph`)."""
    spec = read_spec(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            if ONNX_MEMBER in members:
                graph = archive.read(ONNX_MEMBER)
                if NETWORK_MEMBER in members:
                    # Graphs written before the feature-map output get it here, from
                    # the stored graph (see fer8.models.classifier_head.add_feature_output).
                    from fer8.models.classifier_head import add_feature_output

                    config = json.loads(archive.read(NETWORK_MEMBER))
                    graph = add_feature_output(graph, config.get("config", config))
                return spec, graph
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFormatError(f"{path}: cannot read the network ({exc})") from None
    if not (KERAS_MEMBER in members or {NETWORK_MEMBER, WEIGHTS_MEMBER} <= members):
        raise ModelFormatError(f"{path}: no network inside (no {ONNX_MEMBER})")
    from fer8.models.legacy import legacy_reader

    try:
        reader = legacy_reader()
    except ImportError:
        raise ModelFormatError(
            f"{path}: written by an older fer8 (Keras weights, no {ONNX_MEMBER}); install "
            "the train extra (pip install 'fer8[train]') to read it, and convert it once "
            "with: fer8 export --model OLD.fer8 --format fer8 --out NEW.fer8"
        ) from None
    logger.warning(
        "%s has no ONNX graph (an older fer8 wrote it); building one through "
        "Keras. Convert it once to load faster: fer8 export --model %s "
        "--format fer8 --out NEW.fer8",
        path,
        path,
    )
    return reader.read_graph(path)


def read_model_file(
    path: str | os.PathLike, *, threads: int = 0, precision: str = "auto"
) -> ExpressionModel:
    """Load a ``.fer8`` file to predict with ONNX Runtime (see :func:`fer8.load_model`
    for names and caching).

    Args:
        threads: ONNX Runtime threads per operator; 0 uses every core.
        precision: Which network to run (:func:`network_precision`): by default the
            int8 one where the file has it.
    """
    from fer8.models.runtime import OnnxNetwork

    path = Path(path)
    spec = read_spec(path)
    chosen = network_precision(path, precision)
    # Older files (no fingerprint) have their graph built through Keras, and not cached.
    network = OnnxNetwork.cached(
        lambda: read_graph(path, precision=chosen),
        _fingerprint(path, chosen),
        threads=threads,
        source=str(path),
    )
    runtime = "onnxruntime (int8)" if chosen == "int8" else "onnxruntime"
    try:
        return ExpressionModel(network, spec, runtime=runtime, source=path)
    except ValueError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None


def _fingerprint(path: Path, precision: str = "float") -> str | None:
    """Identifies a format 2 file's graph (the float or the int8 one) and spec by the
    CRC-32s and sizes its zip directory records, without reading either; None for
    other files."""
    member = INT8_MEMBER if precision == "int8" else ONNX_MEMBER
    try:
        with zipfile.ZipFile(path) as archive:
            graph, spec = archive.getinfo(member), archive.getinfo(SPEC_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError):
        return None
    # "-f": the graph as read_graph gives it, with the feature-map output (optimised
    # graphs cached before it existed lack that output and are not reused).
    return f"{graph.CRC:08x}{spec.CRC:08x}-{graph.file_size:x}-f"
