"""What a model knows about its classes, without their images: a bank of pooled features.

A new class is learnt as one more row of the classifier, against the classes the model
has already (:mod:`fer8.training.new_class`). That needs faces of those classes as the
network sees them, and their training images may not be redistributed; what a model
file carries instead is a small bank of *pooled features*: for a few hundred training
faces per class, the vector that global average pooling makes of the last feature map
(what the classifier's dense layer reads), one byte per number. Those vectors cannot be
turned back into the faces.

A part of each class's rows is *held out*: never fitted, it measures how often faces of
the old classes keep their answer once a class is added.

The bank is the model file's member ``feature_bank.npz`` (:data:`BANK_MEMBER`):
``codes`` (N, K) ``uint8``, ``low`` and ``step`` (K,) ``float32`` (feature =
``low + step * code``, one scale per feature, so that features of small and large range
keep their resolution), ``classes`` (N,) indices into ``labels``, ``held_out`` (N,),
``gray`` (N,),
``labels`` (JSON), and a JSON ``about`` (how it was made).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ModelFormatError
from fer8.models.modelfile import BANK_MEMBER, ExpressionModel

#: Code values: features are quantised to 256 levels between each feature's extremes.
_LEVELS = 255


@dataclass(frozen=True)
class FeatureBank:
    """Pooled features of faces of known classes.

    Attributes:
        labels: Class names; ``classes`` index them.
        features: (N, K) pooled features, float32 (as stored: quantised).
        classes: (N,) class index of each row.
        held_out: (N,) True for rows kept for validation, never fitted.
        gray: (N,) True for faces that were gray crops (FER+'s 48 px faces): a model
            reads gray and colour faces differently, so a new class learnt from gray
            photos is checked against gray faces of the old classes too.
        about: How the bank was made (sources, faces per class), for reports.
    """

    labels: tuple[str, ...]
    features: NDArray[np.float32]
    classes: NDArray[np.int64]
    held_out: NDArray[np.bool_]
    gray: NDArray[np.bool_]
    about: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.features)
        if (
            self.features.ndim != 2
            or not len(self.classes) == len(self.held_out) == len(self.gray) == n
        ):
            raise ValueError(
                f"a bank needs (N, K) features with N classes, held-out and gray flags; got "
                f"{self.features.shape}, {len(self.classes)}, {len(self.held_out)}, "
                f"{len(self.gray)}"
            )
        if n and not 0 <= int(self.classes.min()) <= int(self.classes.max()) < len(self.labels):
            raise ValueError(f"class indices outside the {len(self.labels)} labels")

    @property
    def counts(self) -> dict[str, int]:
        """Rows per class (fitted and held out together)."""
        return {label: int((self.classes == i).sum()) for i, label in enumerate(self.labels)}

    def relabelled(self, labels: Sequence[str]) -> FeatureBank:
        """The same rows with class indices into ``labels`` (which holds every label of
        this bank, e.g. a model's labels in output order).

        Raises:
            ValueError: A label of the bank is not in ``labels``.
        """
        missing = [label for label in self.labels if label not in labels]
        if missing:
            raise ValueError(f"the bank's classes {missing} are not among {list(labels)}")
        mapping = np.array([list(labels).index(label) for label in self.labels], np.int64)
        return FeatureBank(
            tuple(labels),
            self.features,
            mapping[self.classes],
            self.held_out,
            self.gray,
            self.about,
        )

    def extended(
        self,
        features: NDArray[np.float32],
        classes: NDArray[np.int64],
        held_out: NDArray[np.bool_],
        gray: NDArray[np.bool_],
        labels: Sequence[str],
    ) -> FeatureBank:
        """This bank (relabelled to ``labels``) with more rows; ``classes`` index ``labels``."""
        base = self.relabelled(labels)
        return FeatureBank(
            tuple(labels),
            np.concatenate([base.features, np.asarray(features, np.float32)]),
            np.concatenate([base.classes, np.asarray(classes, np.int64)]),
            np.concatenate([base.held_out, np.asarray(held_out, bool)]),
            np.concatenate([base.gray, np.asarray(gray, bool)]),
            dict(self.about),
        )

    def to_bytes(self) -> bytes:
        """The bank as the ``.npz`` member; features quantised to one byte each."""
        features = np.asarray(self.features, np.float32)
        low = features.min(axis=0) if len(features) else np.zeros(features.shape[1], np.float32)
        high = features.max(axis=0) if len(features) else low
        step = np.where(high > low, (high - low) / _LEVELS, 1.0).astype(np.float32)
        codes = np.clip(np.rint((features - low) / step), 0, _LEVELS).astype(np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            codes=codes,
            low=low.astype(np.float32),
            step=step,
            classes=self.classes.astype(np.int16),
            held_out=self.held_out.astype(bool),
            gray=self.gray.astype(bool),
            labels=np.frombuffer(json.dumps(list(self.labels)).encode(), np.uint8),
            about=np.frombuffer(json.dumps(dict(self.about)).encode(), np.uint8),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureBank:
        """Read :meth:`to_bytes`'s member.

        Raises:
            ValueError: Not a feature bank.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                features = arrays["low"] + arrays["step"] * arrays["codes"].astype(np.float32)
                return cls(
                    tuple(json.loads(arrays["labels"].tobytes())),
                    features.astype(np.float32),
                    arrays["classes"].astype(np.int64),
                    arrays["held_out"].astype(bool),
                    arrays["gray"].astype(bool),
                    json.loads(arrays["about"].tobytes()),
                )
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise ValueError(f"not a feature bank ({exc})") from None


def read_feature_bank(path: str | Path) -> FeatureBank | None:
    """The feature bank inside a model file, or None when it has none.

    Raises:
        ModelFormatError: The file is no model file, or its bank cannot be read.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            if BANK_MEMBER not in archive.namelist():
                return None
            data = archive.read(BANK_MEMBER)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFormatError(f"{path}: not a fer8 model file ({exc})") from None
    try:
        return FeatureBank.from_bytes(data)
    except ValueError as exc:
        raise ModelFormatError(f"{path}: {BANK_MEMBER}: {exc}") from None


def pooled_features(
    model: ExpressionModel,
    crops: NDArray[np.uint8],
    *,
    batch_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> NDArray[np.float32]:
    """The pooled features (N, K) of framed crops (N, S, S, 3) of the model's input
    size: the mean of each channel of the network's last feature map, which is what the
    classifier's dense layer reads (its logits are ``features @ kernel + bias``).

    Raises:
        ExplanationError: The network has no feature-map output (its head is not global
            average pooling and dense layers).
    """
    parts = [np.zeros((0, 0), np.float32)]
    for start in range(0, len(crops), batch_size):
        chunk = crops[start : start + batch_size]
        _, maps = model.features(model.spec.preprocessing.apply(chunk))
        parts.append(maps.mean(axis=(2, 3), dtype=np.float32))
        if on_progress is not None:
            on_progress(len(chunk))
    if len(parts) == 1:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(parts[1:]).astype(np.float32, copy=False)
