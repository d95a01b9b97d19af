"""Which files a distributed run reads: folders, globs and URIs, listed on the driver.

Listing here, rather than handing folders to Ray, keeps ``--engine ray`` to the rules of
plain ``fer8 predict``: a folder gives its image files (by extension, recursively, in
sorted order), a file named explicitly is read whatever its extension (so a wrong file
gets an error row instead of vanishing), and each row's ``source`` is the name the user
would see from plain ``fer8 predict``. It also gives the run's length for the progress
bar before any work starts. Remote URIs (``s3://``, ``gs://``, anything
:func:`pyarrow.fs.FileSystem.from_uri` knows) are listed through pyarrow.

A distributed run reads photos only: a video named on its own is refused before the
run starts (plain ``fer8 predict`` reads it), and the videos a folder or a glob holds
are left out with one warning line, where plain ``fer8 predict`` would read them.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from fer8.errors import InvalidVideoError
from fer8.pipeline.images import IMAGE_EXTENSIONS, iter_image_files
from fer8.pipeline.video import VIDEO_EXTENSIONS, is_video

logger = logging.getLogger(__name__)

#: Why a video is not read: said in the error and the warning.
PHOTOS_ONLY = "--engine ray reads photos only; predict videos without it"

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputFile:
    """One file to read.

    Attributes:
        path: What Ray reads: an absolute local path, or the URI of a remote file.
        source: The name in the results: the path as plain ``fer8 predict`` prints it
            (relative when it was given relative), or the URI.
    """

    path: str
    source: str


def list_inputs(args: Iterable[str]) -> list[InputFile]:
    """Expand files, folders, globs and URIs into the image files they name.

    Raises:
        FileNotFoundError: A folder or glob that matches no image file, or a URI that
            does not exist; a missing local file is left in (it gives an error row, as
            in plain ``fer8 predict``).
        InvalidVideoError: A file named on its own is a video (videos in folders and
            globs are left out, with a warning).
    """
    files: list[InputFile] = []
    for arg in args:
        if _URI.match(arg) and not arg.startswith("file://"):
            found = _list_uri(arg)
        elif _GLOB.search(arg) and not os.path.exists(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            found = _local(arg, matches)
        else:
            local = arg.removeprefix("file://")
            if os.path.isfile(local) and is_video(local):
                raise InvalidVideoError(local, f"is a video: {PHOTOS_ONLY}")
            found = _local(arg, [local])
        if not found:
            raise FileNotFoundError(f"{arg}: no image files found")
        files.extend(found)
    return files


def _local(arg: str, paths: list[str]) -> list[InputFile]:
    """The image files of local files and folders, the videos among them left out."""
    found = iter_image_files(paths, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    photos, videos = [], 0
    for path in found:
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            videos += 1
        else:
            photos.append(InputFile(os.path.abspath(path), str(path)))
    if videos:
        logger.warning(
            "%s: left out %d video%s (%s)", arg, videos, "s" if videos > 1 else "", PHOTOS_ONLY
        )
    return photos


def _list_uri(uri: str) -> list[InputFile]:
    """A remote file, folder or glob (``s3://bucket/photos/**/*.jpg``), listed with pyarrow."""
    from pyarrow import fs

    scheme = uri[: uri.index("://") + 3]
    pattern = _GLOB.search(uri)
    base = uri if pattern is None else uri[: uri.rfind("/", 0, pattern.start()) + 1]
    filesystem, root = fs.FileSystem.from_uri(base)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.File and pattern is None:
        return [InputFile(uri, uri)]
    if info.type != fs.FileType.Directory:
        raise FileNotFoundError(f"{uri}: no such file or folder")
    # pyarrow gives paths without the scheme ("bucket/key"); the URI is put back so that
    # the result names and Ray's reads both have it.
    listed = sorted(
        entry.path
        for entry in filesystem.get_file_info(fs.FileSelector(root, recursive=True))
        if entry.type == fs.FileType.File
    )
    if pattern is None:
        names = [path for path in listed if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS]
    else:
        glob_path = uri[len(scheme) :]
        names = [
            path
            for path in listed
            if fnmatch.fnmatchcase(path, glob_path)
            and os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS
        ]
    return [InputFile(scheme + name, scheme + name) for name in names]
