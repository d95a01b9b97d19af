"""Labelled expression data in the layouts people have: class folders, FER+ and fer2013.csv.

:func:`read_dataset` turns any of them into a :class:`Dataset`: a list of
:class:`Sample` (where the image is, its class, optionally a vote distribution) and a
count of everything it left out and why. Nothing is dropped without being counted, and
a folder whose name is no known class is reported by name.

Layouts:

* **Class folders**: ``DIR/<class>/**/*.jpg``. Class names are matched
  case-insensitively with synonyms (``anger``, ``AN``, ``happiness``, ``worried`` ...).
* **FER+**: a folder with ``label.csv`` (no header: file name, face box, then 10 vote
  counts: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
  unknown, not-a-face).
* **FER2013**: ``fer2013.csv`` (columns emotion, pixels, Usage), or a folder holding it.
* **ExpW**: a folder with ``label.lst`` (``name face_id top left right bottom
  confidence label``) and the photos in ``Images/`` (or ``origin/``, as ExpW ships them).
  Every line is one labelled face of a photo; a photo may have several.

Any dataset can be split into a training and a validation part by a fixed rule
(:func:`split_of`): by photo for ExpW, by film for SFEW, by subject for JAFFE, so that
nothing seen in training is validated on. On the command line that is ``PATH@train`` and
``PATH@val`` (:func:`parse_source`). The readers of FER+, FER2013 and ExpW's own label
files are :mod:`fer8.training.dataset_layouts`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fer8.errors import Fer8Error
from fer8.labels import EXPRESSIONS
from fer8.pipeline.images import IMAGE_EXTENSIONS
from fer8.results import Box

logger = logging.getLogger(__name__)

#: Folder-name spellings of each class (compared lower-case).
SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "angry": ("angry", "anger", "an", "ang", "mad"),
    "disgusted": ("disgusted", "disgust", "di", "dis"),
    "fearful": ("fearful", "fear", "afraid", "scared", "fe"),
    "happy": ("happy", "happiness", "joy", "ha", "hap"),
    "neutral": ("neutral", "ne", "neu", "calm"),
    "sad": ("sad", "sadness", "sa"),
    "surprised": ("surprised", "surprise", "su", "sur"),
    "worry": ("worry", "worried", "wo", "anxious"),
}
_BY_SYNONYM = {name: label for label, names in SYNONYMS.items() for name in names}

_GENERIC_NAMES = {"train", "training", "val", "valid", "validation", "test", "images", "data"}
#: Share of groups (photos, films, subjects) that :func:`split_of` puts in validation.
VAL_SHARE = 0.2


class DatasetError(Fer8Error, ValueError):
    """A dataset path or file cannot be read as labelled data."""


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    Attributes:
        source: The image file, or ``"fer2013.csv:ROW"`` for a row of pixels.
        label: The class (the majority vote for FER+).
        cropped: True when the picture is one face already (framed with
            :func:`fer8.pipeline.faces.face_from_crop`), False for a photo to detect faces in.
        votes: FER+ only: vote fractions over :data:`fer8.labels.EXPRESSIONS` after
            dropping contempt, unknown and not-a-face votes.
        pixels: fer2013.csv only: the 48x48 grayscale image.
        box: The labelled face in a photo with several faces (ExpW), in the photo's
            pixels; None for the photo's largest face.
    """

    source: str
    label: str
    cropped: bool
    votes: tuple[float, ...] | None = None
    pixels: bytes | None = field(default=None, repr=False)
    box: Box | None = None

    def load(self, content: bytes | None = None) -> NDArray[np.uint8]:
        """The RGB image; from ``content`` (the file's bytes) when the caller has read them."""
        if self.pixels is not None:
            gray = np.frombuffer(self.pixels, np.uint8).reshape(48, 48)
            return np.repeat(gray[:, :, None], 3, axis=2)
        from fer8.pipeline.images import load_image

        if content is None:
            return load_image(self.source)
        named = io.BytesIO(content)
        named.name = self.source  # errors name the file, not "<N bytes>"
        return load_image(named)

    def content(self) -> bytes:
        """The raw bytes that identify this image (for cache keys)."""
        return self.pixels if self.pixels is not None else Path(self.source).read_bytes()


@dataclass(frozen=True)
class Dataset:
    """Samples read from one path, and what was left out of it.

    Attributes:
        root: The path read.
        kind: ``"folders"``, ``"ferplus"``, ``"fer2013"`` or ``"expw"``; with
            ``@train`` or ``@val`` when it is one part of a split.
        samples: The usable samples, in a stable order.
        skipped: Reason -> number of images left out (contempt, unknown, not a face,
            a folder that is no class ...).
    """

    root: Path
    kind: str
    samples: tuple[Sample, ...]
    skipped: Mapping[str, int] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Images per class, in :data:`EXPRESSIONS` order, classes without images left out."""
        counts = Counter(s.label for s in self.samples)
        return {label: counts[label] for label in EXPRESSIONS if counts[label]}

    @property
    def labels(self) -> tuple[str, ...]:
        """The classes present, in the fixed order."""
        return tuple(self.counts)

    def part(self, split: str) -> Dataset:
        """The samples that :func:`split_of` puts in ``split`` (``"train"`` or ``"val"``)."""
        samples = tuple(s for s in self.samples if split_of(s) == split)
        return replace(
            self,
            samples=samples,
            kind=f"{self.kind}@{split}",
            skipped=dict(self.skipped) if split == "train" else {},
        )

    def summary(self) -> dict:
        """A JSON-able description (stored in trained models' metadata)."""
        return {
            "path": str(self.root),
            "kind": self.kind,
            "images": len(self.samples),
            "per_class": self.counts,
            "skipped": dict(self.skipped),
        }


def match_class(name: str) -> str | None:
    """The class a folder name stands for (``"Happiness"`` -> ``"happy"``), or None."""
    key = re.sub(r"[^a-z]", "", name.lower())
    return _BY_SYNONYM.get(key)


def read_dataset(
    path: str | os.PathLike,
    *,
    split: str | None = None,
    fer2013_split: str = "train",
    cropped: bool | None = None,
) -> Dataset:
    """Read labelled images from any supported layout.

    Args:
        path: A class-folder tree, a FER+ folder (with ``label.csv``), an ExpW folder
            (with ``label.lst``), ``fer2013.csv`` or a folder holding it; or an archive
            of one (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``), or a folder inside an
            archive (``ferplus.tar.gz/FER2013Valid``), read from the folder it unpacks
            to (:mod:`fer8.training.archives`).
        split: ``"train"`` or ``"val"``: only that part of the fixed split
            (:func:`split_of`); for fer2013.csv, its ``Usage`` rows (``"test"`` too).
            None: everything (for fer2013.csv: ``fer2013_split``'s rows).
        fer2013_split: The fer2013.csv rows read when ``split`` is None.
        cropped: Whether the images are single faces already. None decides per layout:
            FER+ and FER2013 are crops, ExpW photos; in class folders, images whose
            shorter side is at most 128 px are taken as crops and larger ones as photos.

    Raises:
        DatasetError: Nothing usable at ``path``, a malformed label file, an archive
            that cannot be unpacked, or an unknown split.
    """
    from fer8.training.dataset_layouts import read_expw, read_fer2013, read_ferplus

    root = Path(path)
    if not root.is_dir():
        from fer8.training.archives import archive_part, dataset_folder

        if archive_part(root) is not None:  # an archive, or a path inside one
            folder = dataset_folder(root)
            try:
                dataset = read_dataset(
                    folder, split=split, fer2013_split=fer2013_split, cropped=cropped
                )
            except DatasetError as exc:  # named by the archive, not the cache folder
                raise DatasetError(str(exc).replace(str(folder), str(root))) from None
            return replace(dataset, root=root)
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    if split not in (None, "train", "val", "test"):
        raise DatasetError(f"{root}: unknown split {split!r}; use train or val")
    if root.is_file() or (root / "fer2013.csv").is_file():
        csv_path = root if root.is_file() else root / "fer2013.csv"
        dataset = read_fer2013(csv_path, split=split or fer2013_split)
    elif split == "test":
        raise DatasetError(f"{root}: only fer2013.csv has a test split; use train or val")
    else:
        if (root / "label.csv").is_file():
            dataset = read_ferplus(root)
        elif (root / "label.lst").is_file():
            dataset = read_expw(root)
        else:
            dataset = read_class_folders(root, cropped=cropped)
        if split is not None:
            dataset = dataset.part(split)
    if not dataset.samples:
        raise DatasetError(
            f"{root}: no labelled images found (skipped: {dict(dataset.skipped) or 'nothing'})"
        )
    return dataset


def read_class_folders(
    root: Path, *, cropped: bool | None = None, any_class: bool = False
) -> Dataset:
    """``root/<class>/**/<image>``; folders that name no class are counted and warned about.

    Args:
        any_class: A folder that names no known class is a class of its own, named as
            the folder is in lower case (``Contempt`` -> ``contempt``), for a model that
            learns new classes (``fer8 train --keep-classes``).
    """
    samples: list[Sample] = []
    skipped: Counter[str] = Counter()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(
            f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        )
        label = match_class(folder.name) or (folder.name.strip().lower() if any_class else None)
        if label is None:
            logger.warning(
                "%s: folder %r is no expression class (known: %s); its %d images are not used",
                root,
                folder.name,
                ", ".join(EXPRESSIONS),
                len(files),
            )
            skipped[f"folder {folder.name!r} is no class"] += len(files)
            continue
        for file in files:
            is_crop = cropped if cropped is not None else _looks_cropped(file)
            samples.append(Sample(str(file), label, is_crop))
    return Dataset(root, "folders", tuple(samples), dict(skipped))


@dataclass(frozen=True)
class DataSource:
    """A dataset named on the command line: ``PATH[@SPLIT][:WEIGHT]``.

    Attributes:
        path: The dataset.
        split: ``"train"``, ``"val"`` (:func:`split_of`), ``"test"`` (fer2013.csv), or
            None for all of it.
        weight: How often each of its images is drawn per epoch, relative to 1
            (``expw@train:3``: three times), so that a small source is not drowned by a
            large one.
    """

    path: Path
    split: str | None = None
    weight: float = 1.0

    @property
    def name(self) -> str:
        """A short name for tables and logs: the folder name and the split (with its
        parent's name for folders called like a split, such as SFEW's ``sfew/Train``)."""
        from fer8.training.archives import stem

        name = stem(self.path.name)  # jaffe.tar.gz: jaffe
        if name.lower() in _GENERIC_NAMES:
            name = f"{stem(self.path.parent.name)}-{name}"
        return name + (f"@{self.split}" if self.split else "")

    def __str__(self) -> str:
        return (
            str(self.path)
            + (f"@{self.split}" if self.split else "")
            + (f":{self.weight:g}" if self.weight != 1 else "")
        )

    def read(self, *, fer2013_split: str = "train") -> Dataset:
        """The samples of this source (:func:`read_dataset`)."""
        return read_dataset(self.path, split=self.split, fer2013_split=fer2013_split)


def parse_source(spec: str | os.PathLike) -> DataSource:
    """``"expw@train:3"`` -> ``DataSource(Path("expw"), "train", 3.0)``.

    Raises:
        DatasetError: A weight that is not a positive number, or an unknown split.
    """
    text = os.fspath(spec)
    weight = 1.0
    head, colon, tail = text.rpartition(":")
    if colon and head:
        try:
            weight = float(tail)
        except ValueError:
            head = text  # a colon that is part of the path
        else:
            if not weight > 0:
                raise DatasetError(f"{text}: the weight after ':' must be a positive number")
    else:
        head = text
    path, at, split = head.rpartition("@")
    if not at or not path:
        return DataSource(Path(head), None, weight)
    if split not in ("train", "val", "test"):
        raise DatasetError(f"{text}: unknown split {split!r} after '@'; use train or val")
    return DataSource(Path(path), split, weight)


def draw_samples(datasets: Sequence[Dataset], count: int, *, seed: int = 0) -> list[Sample]:
    """``count`` samples drawn at random across ``datasets``, an equal share from each
    (all of a dataset smaller than its share), each share in its dataset's order: the
    same faces every time for the same data and ``seed``.

    Args:
        datasets: What to draw from; each weighs the same, whatever its size.
        count: How many samples at most.
        seed: The random generator's seed.
    """
    rng = np.random.default_rng(seed)
    drawn: list[Sample] = []
    for index, dataset in enumerate(datasets):
        share = count // len(datasets) + (index < count % len(datasets))
        chosen = rng.choice(len(dataset.samples), min(share, len(dataset.samples)), replace=False)
        drawn += [dataset.samples[i] for i in sorted(chosen)]
    return drawn


def group_of(sample: Sample) -> str:
    """What must stay on one side of a split: the photo, film or person an image shows.

    * ExpW (a face box given): the photo, the name without ``_fN`` (a crop's face index);
    * SFEW (``<film>_<digits>_<digits>.png``, a few with ``-`` before the first digits): the film;
    * JAFFE (``KA.AN1.39.tiff``): the subject;
    * anything else: the file itself.
    """
    if sample.pixels is not None:
        return sample.source
    stem = Path(sample.source).stem
    if sample.box is not None:
        return re.sub(r"_f\d+$", "", stem)
    if match := re.fullmatch(r"(.+?)[_-]\d+_\d+", stem):
        return match.group(1)
    if match := re.fullmatch(r"([A-Z]{2})\.[A-Z]{2}\d*\.\d+", stem):
        return match.group(1)
    return stem


def split_of(sample: Sample) -> str:
    """``"val"`` for about a fifth of the groups (:func:`group_of`), ``"train"`` for the rest.

    The rule depends only on the group's name (its SHA-256), not on a seed or on what
    else is in the dataset, so it is the same in every run, on every machine, and a
    dataset that grows keeps its earlier images on their side.
    """
    digest = hashlib.sha256(group_of(sample).encode()).digest()
    return "val" if int.from_bytes(digest[:4], "big") % 100 < VAL_SHARE * 100 else "train"


def _looks_cropped(path: Path) -> bool:
    """Small images are face crops; photos are larger. Unreadable files count as photos
    (they are reported when loaded)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return min(image.size) <= 128
    except Exception:
        return False
