"""Teach a model a class it does not know from a few dozen photos, in minutes.

``fer8 train --data DIR --keep-classes`` (:func:`add_classes`): the start model keeps
its network and its classes; each new class (a folder of ``DIR`` that is not one of
them) becomes one more output, a new column of the classifier's dense layer, learnt
against what the model knows about its other classes: the pooled features of faces of
theirs that its file carries (:mod:`fer8.models.feature_bank`), never their images.

1. The photos are framed as ``fer8 predict`` frames faces (:mod:`fer8.training.crops`,
   the model's input size and mask), and the network computes their pooled features
   once, with ONNX Runtime. The backbone stays as it is, so nothing the model answered
   before changes but what the new column takes over.
2. The new columns are fitted by softmax regression over all classes with the old
   columns held fixed (numpy; no TensorFlow), each class weighted equally.
3. One offset is added to the new classes' logits: the largest that costs each old
   class at most ``max_old_drop`` points of recall on held-out faces of its own (the
   bank's held-out rows, ``--val``, the ``@val`` photos of old classes), its gray crops
   and its colour photos each on their own, so that a face of an old class is rarely read
   as a new one. With the bank alone (about 40 held-out faces a class) that is: no
   held-out face that the model read right changes its answer, and the offset stays
   under the normal tail of their margins at that rate (40 faces cannot show it).
4. The columns are written into the ONNX graph (and the Keras config, and the int8
   network where the start model has one: the features were computed by the network
   prediction runs, so prediction reads them as they were fitted), so the result is an
   ordinary model file; the new classes' features join its bank, so that a further
   class can be learnt against them too.

The fit and the offset are :mod:`fer8.training.new_columns`; the bank of a model's
own classes is built by :mod:`fer8.training.bank`. The report
(:mod:`fer8.training.new_class_report`, ``report.json`` in the run folder) gives the new
classes' precision and
recall on the ``@val`` part of the photos (:func:`fer8.training.datasets.split_of`), and
the old classes' accuracy before and after on their held-out faces.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import Fer8Error, ModelFormatError
from fer8.models.feature_bank import FeatureBank, read_feature_bank
from fer8.models.modelfile import ModelSpec
from fer8.options.training import KeepClassesOptions
from fer8.training.bank import face_features
from fer8.training.datasets import Dataset, DatasetError, Sample
from fer8.training.new_class_report import (
    KeepClassesReport,
    OldAccuracy,
    class_figures,
)
from fer8.training.new_columns import fit_new_columns, guarded_offset, linear_logits

logger = logging.getLogger(__name__)


class NoFeatureBankError(Fer8Error, ValueError):
    """The start model carries no feature bank to learn a new class against."""


class RunFolderExistsError(Fer8Error, FileExistsError):
    """The run folder holds something already (a run is never overwritten)."""


def add_classes(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    init_model: str | os.PathLike | None = None,
    val: Sequence[str] = (),
    cache: str | os.PathLike | None = None,
    workers: int = 2,
    options: KeepClassesOptions | None = None,
    on_progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> tuple[Path, KeepClassesReport]:
    """Learn the classes of ``data`` that the start model lacks; write ``OUT/model.fer8``
    and ``OUT/report.json``.

    Args:
        data: Class folders (``DATA/<class>/*.jpg``); a folder that names no known class
            is a new class named after it. Folders of the model's own classes add faces
            of those classes to the fit.
        out_dir: The run folder.
        init_model: The start model (a file or a registered name); the bundled one by
            default.
        val: More validation faces of the model's classes (``PATH[@SPLIT]``).
        cache: Crop cache folder (default ``crops/`` in the fer8 cache); ``""``: none.
        workers: Threads framing photos.
        options: Fit settings.
        on_progress: Given a title and a total, returns a callable that takes the number
            of items just done (a progress bar).

    Returns:
        The model file and the report.

    Raises:
        DatasetError: ``data`` holds no usable photos, or no class the model lacks.
        NoFeatureBankError: The start model has no feature bank.
        RunFolderExistsError: ``out_dir`` exists and is not empty.
    """
    import fer8
    from fer8.models.classifier_head import head_weights
    from fer8.models.modelfile import NETWORK_MEMBER, read_graph, read_network_config, read_spec
    from fer8.models.registry import resolve_model
    from fer8.training.datasets import parse_source, read_class_folders

    started = time.monotonic()
    options = options or KeepClassesOptions()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise RunFolderExistsError(
            f"{out}: run folder exists and is not empty; choose another --out"
        )
    source = resolve_model(init_model)
    spec = read_spec(source)
    bank = read_feature_bank(source)
    if bank is None:
        raise NoFeatureBankError(
            f"{source}: the model file has no feature bank to learn new classes against; "
            "add one with scripts/feature_bank.py (it needs training faces of its classes)"
        )
    root = Path(data)
    if not root.is_dir():
        raise DatasetError(f"{root}: --keep-classes needs a folder of class folders")
    photos = read_class_folders(root, any_class=True)
    if not photos.samples:
        raise DatasetError(f"{root}: no images in class folders")
    found = sorted({s.label for s in photos.samples})
    new_labels = tuple(label for label in found if label not in spec.labels)
    if not new_labels:
        raise DatasetError(
            f"{root}: every class in it ({', '.join(found)}) is one the model has; "
            "--keep-classes adds classes (name a folder after the new one)"
        )
    labels = (*spec.labels, *new_labels)
    model = fer8.load_model(source)
    graph = read_graph(source)
    config = read_network_config(source)
    if config is None:
        raise NoFeatureBankError(f"{source}: no {NETWORK_MEMBER} to add classes to")
    old_kernel, old_bias = head_weights(graph, config)
    bank = bank.relabelled(labels)

    def features_of(samples: Sequence[Sample], title: str) -> tuple[_Faces, dict[str, int]]:
        found, kept, gray, status = face_features(
            model, samples, cache, workers, title, on_progress
        )
        classes = np.array([labels.index(samples[i].label) for i in kept], np.int64)
        return _Faces(found, classes, gray), status

    train_part, val_part = photos.part("train"), photos.part("val")
    if not any(s.label in new_labels for s in train_part.samples):
        # Too few photos for the fixed split to leave any in training: fit on all.
        train_part, val_part = photos, Dataset(photos.root, "folders@val", ())
    fit, crops = features_of(train_part.samples, "framing photos")
    held, val_crops = features_of(val_part.samples, "framing @val photos")
    crops = {k: crops.get(k, 0) + val_crops.get(k, 0) for k in {*crops, *val_crops}}
    missing = [label for label in new_labels if not (fit.classes == labels.index(label)).any()]
    if missing:
        raise DatasetError(f"{root}: no face found in the photos of {', '.join(missing)}")

    old_sets: dict[str, _Faces] = {}
    kept = bank.held_out & (bank.classes < len(spec.labels))
    if kept.any():
        old_sets["held-out bank"] = _Faces(bank.features[kept], bank.classes[kept], bank.gray[kept])
    for spec_text in val:
        source_name = parse_source(spec_text).name
        usable = [s for s in parse_source(spec_text).read().samples if s.label in labels]
        old_sets[source_name] = features_of(usable, f"framing {source_name}")[0]
    own_old = held.classes < len(spec.labels)
    if own_old.any():
        old_sets[f"{root.name}@val"] = held.subset(own_old)

    fitted = ~bank.held_out
    kernel, bias = fit_new_columns(
        np.concatenate([bank.features[fitted], fit.features]),
        np.concatenate([bank.classes[fitted], fit.classes]),
        old_kernel,
        old_bias,
        len(new_labels),
        l2=options.l2,
        steps=options.steps,
    )
    # What the file will hold: float16 columns in a compact graph.
    kernel = kernel.astype(np.float16).astype(np.float64)
    guard = _Faces.joined(list(old_sets.values()))
    # Each old class, and its gray crops apart from its colour photos, is guarded on its
    # own: a validation set's mix of classes and kinds of faces is not the bank's (FER+
    # Valid is 38% neutral, all gray), and a class learnt from gray photos takes gray
    # neutral faces over first.
    offset = guarded_offset(
        linear_logits(guard.features, old_kernel, old_bias),
        linear_logits(guard.features, kernel, bias),
        guard.classes,
        guard.gray,
        options.max_old_drop,
    )
    bias = bias + offset
    full_kernel = np.concatenate([old_kernel, kernel], 1)
    full_bias = np.concatenate([old_bias, bias])

    old_accuracy = {
        name: _old_accuracy(faces, (old_kernel, old_bias), (full_kernel, full_bias))
        for name, faces in old_sets.items()
    }
    # Positives: the new classes' @val photos; negatives: every old-class face held out.
    judged = _Faces.joined([held.subset(~own_old), guard])
    predicted = linear_logits(judged.features, full_kernel, full_bias).argmax(1)
    figures = {
        label: class_figures(predicted, judged.classes, labels.index(label)) for label in new_labels
    }

    new_bank = bank.extended(
        np.concatenate([fit.features, held.features]),
        np.concatenate([fit.classes, held.classes]),
        np.concatenate([np.zeros(len(fit.classes), bool), np.ones(len(held.classes), bool)]),
        np.concatenate([fit.gray, held.gray]),
        labels,
    )
    report = KeepClassesReport(
        labels=labels,
        new_labels=new_labels,
        photos={label: int((fit.classes == labels.index(label)).sum()) for label in found},
        new_classes=figures,
        old_accuracy=old_accuracy,
        offset=float(offset),
        max_old_drop=options.max_old_drop,
        seconds=time.monotonic() - started,
        crops=crops,
    )
    metadata = dict(spec.metadata)
    metadata["keep_classes"] = [*metadata.get("keep_classes", []), report.to_dict()]
    new_spec = replace(
        spec, labels=labels, name=f"{spec.name}+{'+'.join(new_labels)}", metadata=metadata
    )
    out.mkdir(parents=True, exist_ok=True)
    path = _write_widened(
        source, out / "model.fer8", new_spec, (graph, config), (kernel, bias), new_bank
    )
    report = replace(report, seconds=time.monotonic() - started)
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path, report


def _write_widened(
    source: Path,
    path: Path,
    spec: ModelSpec,
    network: tuple[bytes, dict[str, Any]],
    columns: tuple[NDArray[np.floating], NDArray[np.floating]],
    bank: FeatureBank,
) -> Path:
    """Write the start model ``source`` (its float graph and Keras config: ``network``)
    with the new ``columns`` (kernel and bias) in its classifier as ``path``: the graph,
    the config and, where it has one, its int8 network (whose features the columns were
    fitted on) all widened."""
    from fer8.models.classifier_head import add_classes as widen_graph
    from fer8.models.modelfile import network_precision, read_graph
    from fer8.models.writer import write_model_file

    graph, config = network
    graph, new_config = widen_graph(graph, config, *columns)
    stored = json.loads(_network_json(source))
    if "config" in stored:
        stored["config"] = new_config
    else:
        stored = new_config
    int8 = None
    if network_precision(source, "auto") == "int8":
        try:
            int8, _ = widen_graph(read_graph(source, precision="int8"), config, *columns)
        except ModelFormatError as exc:  # its classifier quantized too: no float kernel
            logger.warning(
                "%s: the int8 network is not carried over (%s); make it again with "
                "fer8 quantize --model %s",
                source,
                exc,
                path,
            )
    return write_model_file(path, spec, json.dumps(stored), graph, bank=bank.to_bytes(), int8=int8)


def _old_accuracy(
    faces: _Faces,
    before: tuple[NDArray[np.floating], NDArray[np.floating]],
    after: tuple[NDArray[np.floating], NDArray[np.floating]],
) -> OldAccuracy:
    """The old classes' accuracy on ``faces`` by the head ``before`` and ``after``
    (kernel and bias each)."""
    if not len(faces.classes):
        return OldAccuracy(0, math.nan, math.nan)
    return OldAccuracy(
        len(faces.classes),
        float((linear_logits(faces.features, *before).argmax(1) == faces.classes).mean()),
        float((linear_logits(faces.features, *after).argmax(1) == faces.classes).mean()),
    )


@dataclass(frozen=True)
class _Faces:
    """Pooled features of faces, their class indices and whether each crop is gray."""

    features: NDArray[np.float32]
    classes: NDArray[np.int64]
    gray: NDArray[np.bool_]

    def subset(self, rows: NDArray[np.bool_]) -> _Faces:
        return _Faces(self.features[rows], self.classes[rows], self.gray[rows])

    @staticmethod
    def joined(parts: Sequence[_Faces]) -> _Faces:
        parts = [part for part in parts if len(part.classes)]
        if not parts:
            return _Faces(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
        return _Faces(
            np.concatenate([part.features for part in parts]),
            np.concatenate([part.classes for part in parts]),
            np.concatenate([part.gray for part in parts]),
        )


def _network_json(path: Path) -> str:
    """The start model's ``network.json``; warns about members the new file will lack
    (any made from the old network that fer8 does not know how to widen: they must be
    made again; the int8 network is widened with the float one)."""
    import zipfile

    from fer8.models.modelfile import (
        BANK_MEMBER,
        INT8_MEMBER,
        NETWORK_MEMBER,
        ONNX_MEMBER,
        SPEC_MEMBER,
    )

    carried = {SPEC_MEMBER, NETWORK_MEMBER, ONNX_MEMBER, BANK_MEMBER, INT8_MEMBER}
    with zipfile.ZipFile(path) as archive:
        left = set(archive.namelist()) - carried
        if left:
            logger.warning(
                "%s: %s not carried over to the new model (made from the old network); "
                "make them again from the new model file",
                path,
                ", ".join(sorted(left)),
            )
        return archive.read(NETWORK_MEMBER).decode()
