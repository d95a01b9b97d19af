"""Datasets shipped as archives (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``, as Kaggle and
most dataset sites ship them): unpacked once into fer8's cache, then read as the folder
they hold.

``--data jaffe.tar.gz`` reads the dataset inside; ``--data ferplus.tar.gz/FER2013Valid``
one folder of an archive that holds several (FER+'s Train and Valid). A folder that is
all an archive holds (``jaffe/``) is stepped into, so ``jaffe.tar.gz`` reads like the
extracted ``jaffe/``; an archive holding exactly one dataset among other files reads
that one.

Archives are unpacked to ``<fer8 cache>/datasets/<name>-<key>/`` (see ``FER8_HOME``),
where the key is the archive's name, size and modification time: a changed archive is
unpacked afresh, an unchanged one never again. Unpacking goes to a temporary folder that
is renamed when complete, so an interrupted one is never mistaken for a dataset. Members
whose path would land outside that folder (absolute, or through ``..``) refuse the whole
archive; links and device files are skipped.
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from fer8.training.datasets import DatasetError, match_class

logger = logging.getLogger(__name__)

#: File name endings read as archives (compared lower-case).
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")

#: What a folder holding a dataset has (besides class folders): see read_dataset.
_DATASET_FILES = ("label.csv", "label.lst", "fer2013.csv")

#: Entries that archivers add and that are no part of a dataset.
_IGNORED = ("__MACOSX",)


def is_archive(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name is that of an archive fer8 reads."""
    return os.fspath(path).lower().endswith(ARCHIVE_SUFFIXES)


def stem(name: str) -> str:
    """``name`` without its archive suffix (``jaffe.tar.gz``: ``jaffe``), else as it is."""
    suffix = next((s for s in ARCHIVE_SUFFIXES if name.lower().endswith(s)), "")
    return name[: len(name) - len(suffix)] or name


def archive_part(path: str | os.PathLike) -> tuple[Path, PurePosixPath] | None:
    """The archive file that ``path`` is or lies in, and the path inside it.

    ``ferplus.tar.gz/FER2013Valid`` -> ``(Path("ferplus.tar.gz"), PurePosixPath("FER2013Valid"))``;
    ``jaffe.tar.gz`` -> ``(Path("jaffe.tar.gz"), PurePosixPath("."))``; None when no
    part of ``path`` is an archive file.
    """
    path = Path(path)
    for candidate in (path, *path.parents):
        if is_archive(candidate.name) and candidate.is_file():
            return candidate, PurePosixPath(*path.relative_to(candidate).parts)
    return None


def dataset_folder(path: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """The folder to read for ``path``, an archive or a path inside one, unpacking the
    archive into the cache on first use.

    Args:
        path: ``ARCHIVE`` or ``ARCHIVE/PATH/INSIDE``.
        cache: fer8's cache folder (default: :func:`fer8.models.registry.cache_dir`).

    Raises:
        DatasetError: ``path`` is no archive, the archive cannot be unpacked (corrupt,
            truncated, a member outside its folder), the path inside is not there, or
            the archive holds several datasets and ``path`` names none of them.
    """
    found = archive_part(path)
    if found is None:
        raise DatasetError(f"{path}: not an archive ({', '.join(ARCHIVE_SUFFIXES)})")
    archive, inside = found
    root = unpacked(archive, cache)
    top = _step_in(root)
    if inside.parts:
        for base in (top, root):
            candidate = base.joinpath(*inside.parts)
            if candidate.exists():
                return candidate
        raise DatasetError(
            f"{archive}: holds no {inside} (its top level: {', '.join(_entries(top)) or 'nothing'})"
        )
    if _is_dataset(top):
        return top
    datasets = [child for child in _entries_paths(top) if child.is_dir() and _is_dataset(child)]
    if len(datasets) > 1:
        names = ", ".join(f"{archive}/{child.name}" for child in datasets)
        raise DatasetError(f"{archive}: holds {len(datasets)} datasets; name one: {names}")
    if datasets:
        logger.info("%s: reading %s, the one dataset inside", archive, datasets[0].name)
        return datasets[0]
    return top  # read_dataset says what it found there


def unpacked(archive: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """The folder ``archive`` unpacks to in the cache, unpacked there on first use.

    Raises:
        DatasetError: The archive cannot be unpacked.
    """
    from fer8.models.registry import cache_dir

    archive = Path(archive)
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    target = cache_dir(cache) / "datasets" / f"{stem(archive.name)}-{key.hexdigest()[:16]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("unpacking %s into %s (once)", archive, target)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        skipped = _unpack(archive, partial)
        try:
            partial.rename(target)
        except OSError:  # another process unpacked it meanwhile
            if not target.is_dir():
                raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise DatasetError(f"{archive}: cannot unpack ({_reason(exc)})") from None
    except OSError as exc:  # a truncated .gz or .bz2, or the cache's disk is full
        raise DatasetError(f"{archive}: cannot unpack ({_reason(exc)})") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    if skipped:
        logger.warning("%s: %d links or special files skipped", archive, skipped)
    return target


def _unpack(archive: Path, folder: Path) -> int:
    """Write the archive's files and folders under ``folder``; return how many members
    (links, devices) were skipped.

    Raises:
        DatasetError: A member's path would land outside ``folder``.
    """
    skipped = 0
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                target = _member_path(archive, folder, info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
        return skipped
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:  # streamed: a .tar.gz is read once, front to back
            target = _member_path(archive, folder, member.name)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                contents = tar.extractfile(member)
                assert contents is not None  # a regular file always has contents
                with contents, open(target, "wb") as out:
                    shutil.copyfileobj(contents, out, 1 << 20)
            else:
                skipped += 1
    return skipped


def _member_path(archive: Path, folder: Path, name: str) -> Path:
    """Where member ``name`` goes under ``folder``; the archive is refused when that is
    outside it (an absolute path, a drive, ``..``)."""
    inside = PurePosixPath(name.replace("\\", "/"))
    if inside.is_absolute() or ".." in inside.parts or (inside.parts and ":" in inside.parts[0]):
        raise DatasetError(f"{archive}: member {name!r} would land outside its folder; not read")
    return folder.joinpath(*inside.parts)


def _step_in(folder: Path) -> Path:
    """Into the one folder that is all ``folder`` holds, as long as it is no dataset."""
    while not _is_dataset(folder):
        entries = _entries_paths(folder)
        if len(entries) != 1 or not entries[0].is_dir():
            break
        folder = entries[0]
    return folder


def _is_dataset(folder: Path) -> bool:
    """A folder read_dataset reads: a label file, fer2013.csv, or class folders."""
    if any((folder / name).is_file() for name in _DATASET_FILES):
        return True
    return any(child.is_dir() and match_class(child.name) for child in _entries_paths(folder))


def _entries_paths(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in _IGNORED
    )


def _entries(folder: Path) -> list[str]:
    return [p.name + ("/" if p.is_dir() else "") for p in _entries_paths(folder)]


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__
