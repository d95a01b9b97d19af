"""Reading images: every input becomes an RGB ``uint8`` array of shape (H, W, 3).

This is the only place where files are decoded. Everything downstream can rely on one
representation, so colour conversions and orientation fixes happen exactly once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Union

import numpy as np
from numpy.typing import NDArray

from fer8.errors import InvalidImageError

logger = logging.getLogger(__name__)

#: What :func:`load_image` accepts: a path, encoded bytes, a binary file object or an array.
ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], NDArray]

#: Largest image accepted, in pixels. A 100-megapixel photo decodes to 300 MB of RGB; a
#: "decompression bomb" (a small file declaring a huge canvas) is refused before decoding.
MAX_PIXELS = 100_000_000

#: Raising Pillow's own limit is a change to a global; one decode at a time does it.
_pillow_limit_lock = threading.Lock()

#: File extensions that folder walks treat as images.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


def describe_source(source: object) -> str:
    """Return a short human-readable name for an image source, used in messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {'x'.join(map(str, source.shape))}>"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str) else "<file object>"


def load_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS) -> NDArray[np.uint8]:
    """Read an image into an RGB ``uint8`` array of shape (H, W, 3).

    Files are decoded with Pillow: the EXIF orientation is applied (phone photos are
    stored sideways), grayscale, palette, RGBA (composited over white), CMYK and 16-bit
    images are converted, and animations give their first frame. Arrays are taken as RGB.

    Args:
        source: A path, the encoded bytes of an image, a binary file object, or an
            array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8, uint16 or floats
            in [0, 1].
        max_pixels: Images with more pixels are refused before they are decoded
            (``fer8 predict --max-pixels``). Pillow's own limit (about 179 megapixels)
            is raised to this for the decode when it is higher.

    Returns:
        A C-contiguous RGB ``uint8`` array of shape (H, W, 3).

    Raises:
        InvalidImageError: The source is missing, empty, truncated, corrupt, not an
            image, or larger than ``max_pixels``. The message names the source.
    """
    name = describe_source(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    data = _read_bytes(source, name)
    if not data:
        raise InvalidImageError(name, "empty file")
    return _decode(data, name, max_pixels)


def iter_image_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Expand files and folders into image files, folders recursively and in sorted order.

    Files named explicitly are yielded whatever their extension, so that a mistyped or
    corrupt file gets a clear error later instead of being skipped without a word;
    inside folders only files with an image extension are taken.
    """
    for path in map(Path, paths):
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in IMAGE_EXTENSIONS:
                    yield child
        else:
            yield path


def _read_bytes(source: ImageSource, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            return Path(source).read_bytes()
        except FileNotFoundError:
            raise InvalidImageError(name, "no such file") from None
        except IsADirectoryError:
            raise InvalidImageError(name, "is a directory, not an image file") from None
        except OSError as exc:
            raise InvalidImageError(name, f"cannot read file ({exc.strerror or exc})") from None
    if hasattr(source, "read"):
        data = source.read()
        if isinstance(data, str):
            raise InvalidImageError(name, "file object is in text mode; open it with 'rb'")
        return bytes(data)
    raise InvalidImageError(name, f"unsupported image source type {type(source).__name__}")


def _decode(data: bytes, name: str, max_pixels: int) -> NDArray[np.uint8]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings(), _pillow_limit(max_pixels):
            # Pillow only warns below twice its own limit; fer8 has its own limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidImageError(
                name, f"image is too large ({width}x{height} pixels, limit {max_pixels:,}; "
                      "raise it with --max-pixels, or max_pixels=)"
            )
        if width == 0 or height == 0:
            raise InvalidImageError(name, "image has no pixels")
        image.load()  # decodes the first frame of animations
        image = ImageOps.exif_transpose(image)
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError(name, "not an image, or an image format fer8 cannot read "
                                      "(it reads JPEG, PNG, GIF, BMP, TIFF, WebP and PPM)") from None
    except Image.DecompressionBombError:
        raise InvalidImageError(name, f"image is too large (over {max_pixels:,} pixels; "
                                      "raise the limit with --max-pixels, or max_pixels=)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data through all of these.
        raise InvalidImageError(name, f"corrupt or truncated image ({exc})") from None
    return _to_rgb(image, name)


@contextlib.contextmanager
def _pillow_limit(max_pixels: int):
    """Let Pillow open images up to ``max_pixels`` (fer8 checks that limit itself).

    Pillow refuses images over twice ``Image.MAX_IMAGE_PIXELS`` (178,956,970 pixels by
    default) in ``Image.open``, with no per-call setting. Only when ``max_pixels`` is
    above that is the global raised, for the ``open`` alone, under a lock.
    """
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is None or max_pixels <= 2 * Image.MAX_IMAGE_PIXELS:
        yield
        return
    with _pillow_limit_lock:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels // 2 + 1
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _to_rgb(image, name: str) -> NDArray[np.uint8]:
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's own convert() clips 16-bit values at 255; scale the range instead.
        array = np.asarray(image)
        return _from_array(array, name)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _from_array(array: NDArray, name: str) -> NDArray[np.uint8]:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidImageError(name, f"array of shape {array.shape} is not an image")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidImageError(name, "image has no pixels")
    array = _to_uint8(array, name)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[:, :, 3:].astype(np.float32) / 255.0
        array = (array[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def _to_uint8(array: NDArray, name: str) -> NDArray[np.uint8]:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InvalidImageError(name, "image contains NaN or infinite values")
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(array * scale, 0, 255).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.max(initial=0) > 255:
            # 16-bit data (or 32-bit holding 16-bit values): keep the high byte.
            bits = 16 if array.max() <= 0xFFFF else 32
            return (array.astype(np.uint64) >> (bits - 8)).astype(np.uint8)
        return np.clip(array, 0, 255).astype(np.uint8)
    raise InvalidImageError(name, f"unsupported array dtype {array.dtype}")
