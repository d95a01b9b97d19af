"""Teachers' predictions as training targets (knowledge distillation).

Averaging the probabilities of several trained models (an ensemble) reads faces better
than any one of them, but costs each of their networks at prediction time. Training one
network on the ensemble's probabilities (Hinton et al., "Distilling the knowledge in a
neural network", 2015) keeps much of the ensemble's gain at one network's cost. On
noisy labels (ExpW's are: several of its "happy" faces do not smile) the teachers'
probabilities also say how sure a label is, where a one-hot target cannot.

Teachers read the clean (unaugmented) training crops once, when a run starts, each at
its own input size and colour, on its own runtime (ONNX Runtime for format-2 files);
the blend is fixed for the run, so a resumed run sees the same targets. Each teacher's
reading is kept in the crop cache, so a resumed run does not read every face again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fer8.errors import Fer8Error
from fer8.training.datasets import Sample

if TYPE_CHECKING:
    from fer8.models.modelfile import ExpressionModel
    from fer8.training.crops import PreparedCrops

logger = logging.getLogger(__name__)


class TeacherError(Fer8Error, ValueError):
    """A teacher model cannot teach this run (it lacks one of the run's classes)."""


def load_teachers(names: Sequence[str], labels: tuple[str, ...]) -> list[ExpressionModel]:
    """The teacher models, loaded once for the whole run.

    Raises:
        TeacherError: A teacher lacks one of ``labels``.
        ModelNotFoundError: A teacher is neither a file nor a model name.
    """
    from fer8.models.registry import load_model

    teachers = []
    for name in names:
        model = load_model(name)
        missing = [label for label in labels if label not in model.labels]
        if missing:
            raise TeacherError(
                f"{name}: teacher has no class {', '.join(missing)}; "
                f"it knows {', '.join(model.labels)}"
            )
        teachers.append(model)
    return teachers


def teacher_probabilities(
    samples: Sequence[Sample],
    labels: tuple[str, ...],
    teachers: Sequence[ExpressionModel],
    cache_root,
    *,
    detector: str,
    detector_options,
    workers: int = 2,
    framed: Mapping[tuple[int, str | None], PreparedCrops] | None = None,
) -> NDArray[np.float32]:
    """The teachers' mean probabilities over ``labels`` for each sample.

    Each teacher's probabilities are renormalised over ``labels`` (a teacher may know
    more classes than the run; :func:`load_teachers` checks it knows these). A sample a
    teacher could not frame gets a NaN row; framing is the run's own (``detector``),
    so it fails for the same samples. ``framed`` holds crops of ``samples`` already
    made, by input size and mask (the run's own): a teacher that frames faces that
    way reads them instead of the cache, and teachers that frame alike share crops
    (a teacher that masks faces never reads unmasked crops, nor the other way round).
    """
    from fer8.pipeline.classification import classify
    from fer8.training.crops import prepare_crops

    framed = dict(framed or {})
    total = np.zeros((len(samples), len(labels)), np.float64)
    for model in teachers:
        started = time.perf_counter()
        stored = _stored_path(model, samples, labels, cache_root, detector, detector_options)
        if stored is not None and stored.is_file():
            total += np.load(stored)
            logger.info("a teacher's reading of %d faces was read from %s", len(samples), stored)
            continue
        size, mask = model.spec.input_size, model.spec.preprocessing.mask
        if (size, mask) not in framed:
            framed[size, mask] = prepare_crops(
                samples,
                cache_root,
                image_size=size,
                workers=workers,
                detector=detector,
                detector_options=detector_options,
                mask=mask,
            )
        crops = framed[size, mask]
        probabilities = np.full((len(samples), len(labels)), np.nan)
        if len(crops.kept):
            columns = [model.labels.index(label) for label in labels]
            read = classify(crops.rgb(), model)[:, columns].astype(np.float64)
            probabilities[crops.kept] = read / np.maximum(read.sum(1, keepdims=True), 1e-12)
        total += probabilities
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            partial = stored.with_suffix(".partial.npy")
            np.save(partial, probabilities)
            partial.replace(stored)
        logger.info(
            "a teacher read %d faces in %.0f s", len(crops.kept), time.perf_counter() - started
        )
    return (total / len(teachers)).astype(np.float32)


def _stored_path(
    model: ExpressionModel,
    samples: Sequence[Sample],
    labels: tuple[str, ...],
    cache_root,
    detector: str,
    detector_options,
) -> Path | None:
    """Where a teacher's reading of ``samples`` is kept in the crop cache, so that a
    resumed or repeated run does not read every face again (an hour on a busy 2-core
    machine for a large set); None when there is no cache or the teacher has no file.

    The key covers everything the reading depends on: the teacher file's bytes, the
    run's classes, its framing (detector and options) and the samples in order.
    """
    if cache_root is None or model.source is None:
        return None
    digest = hashlib.sha256()
    with open(model.source, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    digest.update(repr((labels, detector, sorted(dict(detector_options or {}).items()))).encode())
    for sample in samples:
        digest.update(f"{sample.source}|{sample.box}|{sample.cropped}\n".encode())
    return Path(cache_root) / "teachers" / f"{digest.hexdigest()[:32]}.npy"


def blend(
    targets: NDArray[np.float32], taught: NDArray[np.float32], weight: float
) -> NDArray[np.float32]:
    """``(1 - weight) * targets + weight * taught``, row by row; rows the teachers could
    not read (NaN) keep their targets."""
    read = ~np.isnan(taught).any(axis=1)
    out = targets.copy()
    out[read] = (1 - weight) * targets[read] + weight * taught[read]
    return out
