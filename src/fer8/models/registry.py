"""Finding model files: bundled models, published models (downloaded once), local paths.

Published models are listed with a URL and a SHA-256. A download is verified before it is
used and a mismatch is an error; a cached file that no longer matches is fetched again.
Models bundled inside the package are verified the same way on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fer8.errors import ChecksumMismatchError, ModelNotFoundError
from fer8.models.modelfile import ExpressionModel, read_model_file
from fer8.paths import cache_dir

logger = logging.getLogger(__name__)

#: The model used when none is named.
DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class RegisteredModel:
    """A named model: a file inside the package (``bundled``) or one to download (``url``).

    Attributes:
        name: What users type after ``--model``.
        sha256: Hex digest of the file; checked on every load of a bundled file and
            after every download.
        url: Where to download it from (``https://`` or ``file://``).
        bundled: File name under ``fer8/models/`` when the wheel ships it.
        description: One line for ``--help`` and error messages.
    """

    name: str
    sha256: str
    url: str | None = None
    bundled: str | None = None
    description: str = ""


#: Every named model. ``default`` ships inside the package (see MODEL_CARD.md); it is
#: made by ``scripts/train_default.sh``, packed by ``scripts/pack_model.py`` and given its
#: int8 network by ``fer8 quantize``; ``sha256sum`` of the result goes here.
MODELS: dict[str, RegisteredModel] = {
    "default": RegisteredModel(
        name="default",
        sha256="8b8507e11e119644eed8729d589c94d8a8b97d3487dc4dff328a542646fceb89",
        bundled="default.fer8",
        description="FaceNet (Inception-ResNet-v1) trained by fer8 train on an "
        "AffectNet-like set, FER+, ExpW, SFEW and JAFFE, taught by two earlier models; "
        "7 classes, no worry; non-commercial research use (see MODEL_CARD.md)",
    ),
}


def resolve_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    cache: str | os.PathLike | None = None,
    registry: Mapping[str, RegisteredModel] | None = None,
) -> Path:
    """Turn a model name or path into the path of a verified model file.

    Args:
        name_or_path: A path to a ``.fer8`` file, a registered name, or ``None`` for
            the default model.
        cache: Folder for downloads (see :func:`cache_dir`).
        registry: The named models; :data:`MODELS` when omitted.

    Raises:
        ModelNotFoundError: Neither an existing file nor a registered name.
        ChecksumMismatchError: A bundled or downloaded file has the wrong SHA-256.
    """
    registry = MODELS if registry is None else registry
    name = DEFAULT_MODEL if name_or_path is None else os.fspath(name_or_path)
    if name in registry:
        return _fetch(registry[name], cache_dir(cache))
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_dir() and (path / "model.fer8").is_file():
        return path / "model.fer8"  # a training run folder
    if name_or_path is None:
        raise ModelNotFoundError(
            "no model is installed: no default model is registered; "
            "pass --model with a .fer8 model file (model=... in Python)"
        )
    known = ", ".join(sorted(registry)) or "none"
    raise ModelNotFoundError(
        f"{name}: no such model file, and not a model name (known names: {known})"
    )


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    cache: str | os.PathLike | None = None,
    threads: int = 0,
) -> ExpressionModel:
    """Load a model by path or registered name (``None``: the default model).

    Args:
        name_or_path: See :func:`resolve_model`.
        cache: Folder for downloads.
        threads: ONNX Runtime threads per operator; 0 uses every core.

    Raises:
        ModelNotFoundError: No such file or name.
        ModelFormatError: The file is not a valid fer8 model.
        ChecksumMismatchError: A bundled or downloaded file has the wrong SHA-256.
    """
    return read_model_file(resolve_model(name_or_path, cache=cache), threads=threads)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, destination: str | os.PathLike, sha256: str) -> Path:
    """Download ``url`` to ``destination``, verifying its SHA-256 before it takes that name.

    Raises:
        ChecksumMismatchError: The downloaded bytes have another digest; nothing is kept.
        OSError: The download failed (``urllib.error.URLError`` is an ``OSError``).
    """
    import urllib.request  # 20 ms of imports (http, email) that only a download needs

    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s", url)
    digest = hashlib.sha256()
    fd, partial = tempfile.mkstemp(dir=destination.parent, prefix=destination.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256.lower():
            raise ChecksumMismatchError(
                f"{url}: SHA-256 is {digest.hexdigest()}, expected {sha256}; the download "
                "is corrupt or the file was replaced, so it was not used"
            )
        os.replace(partial, destination)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return destination


def _fetch(entry: RegisteredModel, cache: Path) -> Path:
    if entry.bundled:
        path = Path(str(resources.files("fer8") / "models" / entry.bundled))
        if not path.is_file():
            raise ModelNotFoundError(
                f"bundled model {entry.name} ({path}) is missing from the package"
            )
        _verify(path, entry.sha256, f"bundled model {entry.name!r}", cache)
        return path
    if entry.url is None:
        raise ModelNotFoundError(f"model {entry.name!r} has neither a bundled file nor a URL")
    path = cache / f"{entry.name}.fer8"
    if path.is_file():
        if _has_digest(path, entry.sha256, cache):
            return path
        logger.warning("cached %s does not match its SHA-256; downloading it again", path)
    return download(entry.url, path, entry.sha256)


def _verify(path: Path, sha256: str, what: str, cache: Path) -> None:
    if not _has_digest(path, sha256, cache):
        actual = sha256_file(path)
        raise ChecksumMismatchError(f"{what} at {path} has SHA-256 {actual}, expected {sha256}")


def _has_digest(path: Path, sha256: str, cache: Path) -> bool:
    """Whether the file's SHA-256 is ``sha256``, hashing it only when it changed since it
    was last found to be: hashing the 70 MB bundled model took 50-60 ms of every
    ``fer8 predict``. A file checked once leaves a stamp in ``cache`` (``verified/``)
    with its size, inode, modification and change times; a file that still has them
    all is the file that was hashed (rewriting or replacing it changes its change
    time, which no one can set back)."""
    sha256 = sha256.lower()
    try:
        facts = os.stat(path)
    except OSError:
        return sha256_file(path) == sha256  # raises the reason
    where = str(Path(path).resolve())
    # A stamp per file and digest: two installs of one model keep a stamp each.
    name = f"{sha256[:16]}-{hashlib.sha256(where.encode()).hexdigest()[:16]}.json"
    stamp = cache / "verified" / name
    seen = {
        "path": where,
        "size": facts.st_size,
        "inode": facts.st_ino,
        "mtime_ns": facts.st_mtime_ns,
        "ctime_ns": facts.st_ctime_ns,
    }
    try:
        if json.loads(stamp.read_text()) == seen:
            return True
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        logger.warning("ignoring a damaged checksum stamp %s (%s); hashing the file", stamp, exc)
    if sha256_file(path) != sha256:
        return False
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        partial = stamp.with_name(f"{stamp.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(seen))
        os.replace(partial, stamp)  # concurrent processes never read half a stamp
    except OSError as exc:
        logger.debug("not stamping %s as verified: %s", path, exc)
    return True
