"""Reading images: every input becomes an RGB ``uint8`` array of shape (H, W, 3).

This is the only place where files are decoded. Everything downstream can rely on one
representation, so colour conversions and orientation fixes happen exactly once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import threading
import warnings
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import IO, Union

import numpy as np
from numpy.typing import NDArray

from fer8.errors import InvalidImageError
from fer8.pipeline.image_headers import MAX_JPEG_SCANS, png_has_exif, too_many_jpeg_scans

logger = logging.getLogger(__name__)

#: What :func:`load_image` accepts: a path, encoded bytes, a binary file object or an array.
ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], NDArray]

#: Largest image accepted, in pixels. A 100-megapixel photo decodes to 300 MB of RGB; a
#: "decompression bomb" (a small file declaring a huge canvas) is refused before decoding.
MAX_PIXELS = 100_000_000

#: Raising Pillow's own limit is a change to a global; one decode at a time does it.
_pillow_limit_lock = threading.Lock()

#: Longest side accepted, in pixels: the most a JPEG or GIF can declare. A 97 kB PNG of
#: 1 x 100,000,000 pixels is within ``MAX_PIXELS`` but costs Pillow a row pointer and a
#: decoder call per row (12 s, 1.2 GB); 100,000,000 x 1 made Pillow raise MemoryError.
MAX_SIDE = 65_535

#: The decoders tried, by Pillow's format names: the formats of ``IMAGE_EXTENSIONS`` (JPEG
#: includes MPO, the multi-picture JPEG of phones, which Pillow opens through JPEG).
#: Pillow has forty more, each more code reading strangers' bytes, and one (EPS) hands
#: the file to Ghostscript; a file in any other format is "not an image" to fer8.
FORMATS = ("JPEG", "PNG", "GIF", "TIFF", "WEBP", "BMP", "PPM")

#: A string starting with one of these is a URL that :func:`load_image` downloads, not
#: a path.
URL_SCHEMES = ("http://", "https://")
#: Most bytes downloaded for one image, and the most seconds a download may take (the
#: connection, and the whole transfer).
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
DOWNLOAD_TIMEOUT = 30.0

#: File extensions that folder walks treat as images.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


def is_url(source: object) -> bool:
    """Whether ``source`` is an http(s) URL, which :func:`load_image` downloads."""
    return isinstance(source, str) and source.lower().startswith(URL_SCHEMES)


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
        source: A path, an http(s) URL (downloaded: at most ``MAX_DOWNLOAD_BYTES`` in
            ``DOWNLOAD_TIMEOUT`` seconds), the encoded bytes of an image, a binary file
            object, or an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8,
            uint16 or floats in [0, 1].
        max_pixels: Images with more pixels are refused before they are decoded
            (``fer8 predict --max-pixels``). Pillow's own limit (about 179 megapixels)
            is raised to this for the decode when it is higher.

    Returns:
        A C-contiguous RGB ``uint8`` array of shape (H, W, 3).

    Raises:
        InvalidImageError: The source is missing, cannot be downloaded, empty,
            truncated, corrupt, not an
            image in a format of ``FORMATS``, larger than ``max_pixels`` or ``MAX_SIDE``,
            or a JPEG of more than ``MAX_JPEG_SCANS`` scans. The message is one line
            and starts with the source's name. No other exception escapes for any
            content of a file, bytes or file object (the fuzz tests hold it to that).
    """
    name = describe_source(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    data = _read_bytes(source, name)
    if not data:
        raise InvalidImageError(name, "empty file")
    return _decode(data, name, max_pixels)


def iter_image_files(
    paths: Iterable[str | os.PathLike], extensions: Collection[str] = IMAGE_EXTENSIONS
) -> Iterator[Path]:
    """Expand files and folders into image files, folders recursively and in sorted order.

    Files named explicitly are yielded whatever their extension, so that a mistyped or
    corrupt file gets a clear error later instead of being skipped without a word;
    inside folders only files with one of ``extensions`` are taken (``fer8 predict``
    adds the video extensions).
    """
    for path in map(Path, paths):
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in extensions:
                    yield child
        else:
            yield path


def _read_bytes(source: ImageSource, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if is_url(source):
        return _download(str(source), name)
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
        try:
            data = source.read()
        except OSError as exc:
            raise InvalidImageError(name, f"cannot read file ({exc.strerror or exc})") from None
        if isinstance(data, str):
            raise InvalidImageError(name, "file object is in text mode; open it with 'rb'")
        return bytes(data)
    raise InvalidImageError(name, f"unsupported image source type {type(source).__name__}")


def _download(url: str, name: str) -> bytes:
    """The bytes at ``url``, within ``MAX_DOWNLOAD_BYTES`` and ``DOWNLOAD_TIMEOUT``."""
    import http.client
    import time
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    from fer8 import __version__

    deadline = time.monotonic() + DOWNLOAD_TIMEOUT
    request = Request(url, headers={"User-Agent": f"fer8/{__version__}"})
    chunks: list[bytes] = []
    size = 0
    too_large = f"larger than {MAX_DOWNLOAD_BYTES:,} bytes; download it and pass the file"
    try:
        with urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
                raise InvalidImageError(name, too_large)
            while chunk := response.read(1 << 16):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise InvalidImageError(name, too_large)
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunks.append(chunk)
    except HTTPError as exc:
        raise InvalidImageError(name, f"cannot download (HTTP {exc.code} {exc.reason})") from None
    except TimeoutError:
        raise InvalidImageError(
            name, f"cannot download (no answer within {DOWNLOAD_TIMEOUT:g} s)"
        ) from None
    except (URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = " ".join(str(getattr(exc, "reason", None) or exc).split())
        raise InvalidImageError(name, f"cannot download ({reason})") from None
    return b"".join(chunks)


def _decode(data: bytes, name: str, max_pixels: int) -> NDArray[np.uint8]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns about corrupt metadata ("Corrupt EXIF data", "Truncated File
            # Read") and below twice its own pixel limit (fer8 has its own): the image
            # either decodes or raises, and under ``-W error`` a warning would escape as
            # an exception of its own.
            warnings.simplefilter("ignore")
            with _pillow_limit(max_pixels):
                image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > max_pixels or max(width, height) > MAX_SIDE:
                raise InvalidImageError(
                    name,
                    f"image is too large ({width}x{height} pixels, limit "
                    f"{max_pixels:,} pixels and {MAX_SIDE:,} a side; raise the pixel "
                    "limit with --max-pixels, or max_pixels=)",
                )
            if width == 0 or height == 0:
                raise InvalidImageError(name, "image has no pixels")
            if image.format in ("JPEG", "MPO") and too_many_jpeg_scans(data):
                raise InvalidImageError(
                    name,
                    f"JPEG has more than {MAX_JPEG_SCANS} scans; refused, as decoding "
                    "them could take minutes",
                )
            plain = _decoded_by_opencv(image, data)
            if plain is not None:
                return plain
            image.load()  # decodes the first frame of animations
            ImageOps.exif_transpose(image, in_place=True)  # a copy otherwise, even if upright
            return _to_rgb(image, name)
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError(
            name, f"not an image, or not a format fer8 reads ({', '.join(FORMATS)})"
        ) from None
    except Image.DecompressionBombError as exc:
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared.group(1)):,} pixels, " if declared else ""
        raise InvalidImageError(
            name,
            f"image is too large ({size}limit {max_pixels:,}; raise "
            "it with --max-pixels, or max_pixels=)",
        ) from None
    except MemoryError:
        raise InvalidImageError(name, "not enough memory to decode the image") from None
    except Exception as exc:
        # Pillow reports truncated and corrupt data mostly as OSError, SyntaxError,
        # ValueError or EOFError, but fuzzing found more (a TIFF strip offset typed as a
        # float raised TypeError); whatever a file's bytes make a decoder raise means
        # the file cannot be read.
        logger.debug("decoding %s failed", name, exc_info=True)
        kind = (
            ""
            if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError))
            else (f"{type(exc).__name__}: ")
        )
        raise InvalidImageError(
            name, f"corrupt or truncated image ({kind}{_one_line(exc)})"
        ) from None


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Pixels converted at a time. The RGB array is filled band by band, so a 100-megapixel
#: image costs Pillow's decoded copy plus the result (7 bytes a pixel, 700 MB), not also
#: a converted copy and the bytes numpy reads it from (11 bytes a pixel).
_BAND_PIXELS = 1 << 20


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


def _decoded_by_opencv(image, data: bytes) -> NDArray[np.uint8] | None:
    """The pixels of a plain PNG (8-bit RGB or grey, opaque, one frame, no EXIF),
    decoded by OpenCV once Pillow has read and checked its header, or None for Pillow
    to decode.

    OpenCV's PNG decoder gives the same pixels (PNG is lossless) in about 60% of
    Pillow's CPU time (the astronaut 3.7 against 6.2 ms; a folder's photos spent more
    time decoding than finding landmarks), and like Pillow refuses a file whose
    checksums fail. Anything else takes Pillow's way, which knows it: EXIF (an
    orientation), transparency, 16 bits ("RGB;16B" to Pillow), a palette, an animation, and a
    file that does not end where a PNG ends (Pillow reports a truncated file; OpenCV
    would fill it with black). JPEGs too: OpenCV's libjpeg prints its warnings about
    corrupt data to stderr, and decodes some files that Pillow reports as corrupt.
    """
    import cv2

    if (
        image.format != "PNG"
        or image.mode not in ("RGB", "L")
        or not image.tile
        or image.tile[0][3] != image.mode
        or "transparency" in image.info
        or getattr(image, "n_frames", 1) != 1
        or not data.endswith(b"IEND\xaeB`\x82")
        # EXIF (an orientation) may follow the pixels, where Pillow finds it only by
        # decoding them: a file with such a chunk anywhere is Pillow's.
        or png_has_exif(data)
    ):
        return None
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if pixels is None or pixels.shape[:2] != (image.height, image.width):
        return None
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB, dst=pixels)  # in place


def _to_rgb(image, name: str) -> NDArray[np.uint8]:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's own convert() clips 16-bit values at 255; scale the range instead.
        array = np.asarray(image)
        return _from_array(array, name)
    width, height = image.size
    rows = max(1, _BAND_PIXELS // width)
    if height <= rows:
        return np.ascontiguousarray(_band_to_rgb(image))
    rgb = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        rgb[top:bottom] = _band_to_rgb(image.crop((0, top, width, bottom)))
    return rgb


def _band_to_rgb(image) -> NDArray[np.uint8]:
    from PIL import Image

    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(image, dtype=np.uint8)


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
