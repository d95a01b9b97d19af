"""A model's feature bank built from its training data: faces of each class drawn
evenly from the sources, framed as the model frames faces, and their pooled features
(``scripts/feature_bank.py``). The bank's format is :mod:`fer8.models.feature_bank`;
``fer8 train --keep-classes`` (:mod:`fer8.training.new_class`) learns against it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fer8.models.feature_bank import FeatureBank, pooled_features
from fer8.models.modelfile import ExpressionModel
from fer8.training.datasets import DatasetError, Sample

#: Held-out faces per class of a bank that :func:`build_bank` makes, as a share.
HELD_OUT_SHARE = 0.2


def build_bank(
    model_path: str | os.PathLike,
    sources: Sequence[str],
    *,
    per_class: int = 200,
    held_out: float = HELD_OUT_SHARE,
    cache: str | os.PathLike | None = None,
    workers: int = 2,
    seed: int = 0,
    on_progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> FeatureBank:
    """A feature bank for a model from its training data: up to ``per_class`` faces of
    each of its classes, drawn evenly from ``sources`` (``PATH[@SPLIT]``), framed as the
    model frames faces; ``held_out`` of each class's rows are kept for validation.

    Raises:
        DatasetError: A source cannot be read, or a class has no faces in any.
    """
    import fer8
    from fer8.training.datasets import parse_source

    model = fer8.load_model(model_path)
    labels = model.labels
    random = np.random.default_rng(seed)
    datasets = [(parse_source(text).name, parse_source(text).read()) for text in sources]
    chosen: list[Sample] = []
    drawn: dict[str, dict[str, int]] = {}
    for label in labels:
        pools = [[s for s in dataset.samples if s.label == label] for _, dataset in datasets]
        quota = _even_shares(per_class, [len(pool) for pool in pools])
        for (name, _), pool, n in zip(datasets, pools, quota):
            picks = random.choice(len(pool), n, replace=False)
            chosen.extend(pool[i] for i in sorted(picks.tolist()))
            drawn.setdefault(name, {})[label] = int(n)
    if not chosen:
        raise DatasetError("no faces of the model's classes in the sources")
    found, kept, gray, status = face_features(
        model, chosen, cache, workers, "bank faces", on_progress
    )
    classes = np.array([labels.index(chosen[i].label) for i in kept], np.int64)
    flags = np.zeros(len(classes), bool)
    for index in range(len(labels)):
        rows = np.flatnonzero(classes == index)
        flags[random.choice(rows, int(round(held_out * len(rows))), replace=False)] = True
    about = {"sources": list(sources), "drawn": drawn, "crops": status, "seed": seed}
    return FeatureBank(tuple(labels), found, classes, flags, gray, about)


def _even_shares(total: int, available: Sequence[int]) -> list[int]:
    """Split ``total`` over pools as evenly as their sizes allow (a small pool gives
    all it has, the others make up for it)."""
    shares = [0] * len(available)
    left = total
    open_pools = [i for i, n in enumerate(available) if n]
    while left > 0 and open_pools:
        each = max(1, left // len(open_pools))
        for i in list(open_pools):
            take = min(each, available[i] - shares[i], left)
            shares[i] += take
            left -= take
            if shares[i] == available[i]:
                open_pools.remove(i)
            if left == 0:
                break
    return shares


def face_features(
    model: ExpressionModel,
    samples: Sequence[Sample],
    cache: str | os.PathLike | None,
    workers: int,
    title: str,
    on_progress: Callable[[str, int], Callable[[int], None]] | None,
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.bool_], dict[str, int]]:
    """Pooled features of the samples that gave a face, their indices, whether each
    crop is gray, and the crops' statuses."""
    from fer8.training.crops import prepare_crops

    if not samples:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, bool), {}
    cache_root = None
    if cache is None or os.fspath(cache):
        from fer8.models.registry import cache_dir

        cache_root = Path(cache) if cache is not None else cache_dir() / "crops"
    prepared = prepare_crops(
        samples,
        cache_root,
        image_size=model.spec.input_size,
        workers=workers,
        mask=model.spec.preprocessing.mask,
        on_progress=on_progress(title, len(samples)) if on_progress else None,
    )
    found = pooled_features(
        model,
        prepared.rgb(),
        on_progress=on_progress("features", len(prepared.kept)) if on_progress else None,
    )
    crops = prepared.images
    gray = (
        np.ones(len(crops), bool)
        if crops.shape[-1] == 1
        else ((crops[..., 0] == crops[..., 1]) & (crops[..., 0] == crops[..., 2])).all((1, 2))
    )
    return found, prepared.kept, gray, dict(prepared.status)
