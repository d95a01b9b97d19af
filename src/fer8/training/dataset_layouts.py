"""The published datasets' own label files, read into a :class:`~fer8.training.datasets.Dataset`:
FER+ (``label.csv``: vote counts per image), FER2013 (``fer2013.csv``: pixels in a
CSV) and ExpW (``label.lst``: labelled face boxes in photos).
:func:`~fer8.training.datasets.read_dataset` picks the reader by the files it finds.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from fer8.labels import EXPRESSIONS
from fer8.results import Box
from fer8.training.datasets import Dataset, DatasetError, Sample

logger = logging.getLogger(__name__)

#: FER+ vote columns, in file order.
FERPLUS_COLUMNS = (
    "neutral",
    "happy",
    "surprised",
    "sad",
    "angry",
    "disgusted",
    "fearful",
    "contempt",
    "unknown",
    "not_a_face",
)


#: FER2013's ``emotion`` codes.
FER2013_CODES = ("angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral")


#: ``Usage`` values of fer2013.csv for each split name.
FER2013_SPLITS = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


#: ExpW's label codes (``label.lst``'s last column).
EXPW_CODES = ("angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral")


#: Folders of an ExpW download that hold its photos: this project's layout, ExpW's own.
EXPW_IMAGE_FOLDERS = ("Images", "images", "origin", "image/origin")


def read_ferplus(root: Path) -> Dataset:
    """A FER+ split folder: majority labels and vote distributions from ``label.csv``.

    The majority is the class with most votes, ties going to the earlier FER+ column
    (neutral first), as FER+'s own counts do. Images whose majority is contempt (no
    fer8 class), unknown or not-a-face are left out and counted; so are images whose
    file is missing. ``votes`` keeps the seven classes' votes, normalised.
    """
    samples: list[Sample] = []
    skipped: Counter[str] = Counter()
    fer8_columns = [EXPRESSIONS.index(name) for name in FERPLUS_COLUMNS[:7]]
    label_file = root / "label.csv"
    with label_file.open(newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), 1):
            if not row:
                continue
            try:
                votes = [float(v) for v in row[2:12]]
                if len(votes) != 10:
                    raise ValueError(f"{len(votes)} vote columns, expected 10")
            except ValueError as exc:
                raise DatasetError(f"{label_file}:{line_number}: {exc}") from None
            winner = FERPLUS_COLUMNS[int(np.argmax(votes))]
            if winner in ("contempt", "unknown", "not_a_face"):
                skipped[winner] += 1
                continue
            image = root / row[0]
            if not image.is_file():
                skipped["missing file"] += 1
                continue
            distribution = [0.0] * len(EXPRESSIONS)
            for column, index in enumerate(fer8_columns):
                distribution[index] = votes[column]
            total = sum(distribution)
            samples.append(Sample(str(image), winner, True, tuple(v / total for v in distribution)))
    if skipped["missing file"]:
        logger.warning(
            "%s: %d files listed in label.csv are missing", root, skipped["missing file"]
        )
    return Dataset(root, "ferplus", tuple(samples), dict(skipped))


def read_fer2013(csv_path: Path, *, split: str = "train") -> Dataset:
    """Rows of fer2013.csv whose ``Usage`` is ``split``'s (Training, PublicTest, PrivateTest)."""
    if split not in FER2013_SPLITS:
        raise ValueError(f"split must be one of {', '.join(FER2013_SPLITS)}, not {split!r}")
    usage = FER2013_SPLITS[split]
    samples: list[Sample] = []
    skipped: Counter[str] = Counter()
    try:
        with csv_path.open(newline="") as handle:
            _read_fer2013_rows(csv_path, csv.DictReader(handle), usage, samples, skipped)
    except (UnicodeDecodeError, csv.Error):  # an archive or an image given as --data
        raise DatasetError(
            f"{csv_path}: not a fer2013.csv (not text); datasets are folders, "
            "fer2013.csv files and .tar.gz, .tgz, .tar or .zip archives"
        ) from None
    return Dataset(csv_path, "fer2013", tuple(samples), dict(skipped))


def _read_fer2013_rows(
    csv_path: Path,
    reader: csv.DictReader,
    usage: str,
    samples: list[Sample],
    skipped: Counter[str],
) -> None:
    missing = {"emotion", "pixels"} - set(reader.fieldnames or ())
    if missing:
        raise DatasetError(
            f"{csv_path}: not a fer2013.csv (no {', '.join(sorted(missing))} column)"
        )
    for row_number, row in enumerate(reader, 2):
        if row.get("Usage", usage) != usage:
            continue
        name = f"{csv_path}:{row_number}"
        try:
            pixels = bytes(int(v) for v in row["pixels"].split())
            label = FER2013_CODES[int(row["emotion"])]
        except (ValueError, IndexError):
            skipped["malformed row"] += 1
            logger.warning("%s: malformed row, skipped", name)
            continue
        if len(pixels) != 48 * 48:
            skipped["malformed row"] += 1
            logger.warning("%s: %d pixels, expected 2304; skipped", name, len(pixels))
            continue
        samples.append(Sample(name, label, True, pixels=pixels))


def read_expw(root: Path) -> Dataset:
    """ExpW's layout: ``label.lst`` and a folder of photos, one sample per labelled face.

    Boxes in ``label.lst`` are top, left, right, bottom; they become :class:`Box` values
    clipped to nothing (they are checked against the photo when it is framed). Lines
    whose photo is missing, or that are malformed, are counted and left out.
    """
    images = next((root / name for name in EXPW_IMAGE_FOLDERS if (root / name).is_dir()), None)
    if images is None:
        raise DatasetError(
            f"{root}: label.lst but no photo folder ({' or '.join(EXPW_IMAGE_FOLDERS)})"
        )
    samples: list[Sample] = []
    skipped: Counter[str] = Counter()
    label_file = root / "label.lst"
    with label_file.open() as handle:
        for line_number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                name = fields[0]
                top, left, right, bottom = (int(float(v)) for v in fields[2:6])
                label = EXPW_CODES[int(fields[7])]
                if right <= left or bottom <= top:
                    raise ValueError("empty face box")
            except (ValueError, IndexError) as exc:
                raise DatasetError(
                    f"{label_file}:{line_number}: malformed line ({exc}); "
                    "expected: name face_id top left right bottom confidence "
                    "label"
                ) from None
            path = images / name
            if not path.is_file():
                skipped["missing file"] += 1
                continue
            samples.append(
                Sample(str(path), label, False, box=Box(left, top, right - left, bottom - top))
            )
    if skipped["missing file"]:
        logger.warning(
            "%s: %d photos listed in label.lst are missing", root, skipped["missing file"]
        )
    return Dataset(root, "expw", tuple(samples), dict(skipped))
