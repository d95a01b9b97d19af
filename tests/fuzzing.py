"""Hostile image files built from the example photos, and the rule every input must obey.

Used by ``test_fuzz_images.py`` (a bounded Hypothesis run in the normal suite) and by
``scripts/fuzz.py`` (long runs, coverage-guided with atheris). Everything here is plain
Python on bytes, so an input that once failed can be rebuilt from its recipe.

The rule (:func:`check_load`, :func:`check_predict`): every input either gives a result
(RGB ``uint8`` (H, W, 3), at most ``max_pixels``), or raises
:class:`fer8.errors.InvalidImageError` with a one-line message that names the source.
No other exception, no input slower than the time limit, no memory blow-up.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: One input may take at most this long to be refused or decoded (the suite's limit; the
#: slowest legitimate input, a 100-megapixel bomb below the limit, takes about 2 s).
TIME_LIMIT_S = 10.0

#: Decoding one input may raise the process's peak memory by at most this much: 16 bytes
#: for each of the ``MAX_PIXELS`` (100 MP) an image may have. Measured at 10000 x 10000:
#: JPEG, PNG, GIF, TIFF about 7.7 bytes a pixel (Pillow's copy at 4 and the RGB array at
#: 3; 4 for gray and palette images), lossless WebP 15.3 (libwebp's canvas, the frame
#: Pillow copies out of it and Pillow's image). Anything past this is a leak or a bomb
#: that got through.
MEMORY_LIMIT_MB = 16 * 100_000_000 // 2**20


# --- seeds -------------------------------------------------------------------------------


def _photo(name: str, box: tuple[int, int, int, int], size: int):
    from PIL import Image

    with Image.open(EXAMPLES / name) as image:
        return image.convert("RGB").crop(box).resize((size, size))


def _encode(image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def make_seeds() -> dict[str, bytes]:
    """Small valid files of every format fer8 reads, made from the example photos.

    The Hopper crop is 160 pixels with a face of about 110, so the predictor's inputs
    reach detection, landmarks and the classifier; the astronaut crop is smaller still.
    """
    from PIL import Image

    hopper = _photo("grace_hopper.jpg", (90, 40, 440, 390), 160)
    astro = _photo("astronaut.png", (140, 20, 320, 200), 96)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate on load
    exif[0x010F] = "fer8"
    frames = [astro.rotate(angle) for angle in (0, 90, 180)]
    rgba = astro.convert("RGBA")
    rgba.putalpha(128)
    seeds = {
        "jpeg": _encode(hopper, "JPEG", quality=90),
        "jpeg-progressive-exif": _encode(
            hopper, "JPEG", quality=80, progressive=True, exif=exif.tobytes()
        ),
        "jpeg-cmyk": _encode(astro.convert("CMYK"), "JPEG"),
        "png": _encode(hopper, "PNG"),
        "png-rgba": _encode(rgba, "PNG"),
        "png-palette": _encode(astro.convert("P"), "PNG", transparency=0),
        "png-16bit": _encode(
            Image.fromarray(np.asarray(astro.convert("L"), np.uint16) * 257), "PNG"
        ),
        "png-exif": _encode(astro, "PNG", exif=exif.tobytes()),
        "apng": _encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0),
        "tiff": _encode(hopper, "TIFF"),
        "tiff-lzw": _encode(astro, "TIFF", compression="tiff_lzw"),
        "tiff-pages": _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "webp": _encode(hopper, "WEBP", quality=80),
        "webp-lossless": _encode(astro, "WEBP", lossless=True),
        "webp-animated": _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "bmp": _encode(hopper, "BMP"),
        "ppm": _encode(astro, "PPM"),
    }
    return seeds


# --- mutations ---------------------------------------------------------------------------


def truncate(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def flip_bits(data: bytes, positions: Sequence[int]) -> bytes:
    """Flip bit ``p % 8`` of byte ``p // 8 % len(data)`` for each position."""
    if not data:
        return data
    raw = bytearray(data)
    for p in positions:
        raw[(p // 8) % len(raw)] ^= 1 << (p % 8)
    return bytes(raw)


def overwrite(data: bytes, offset: int, chunk: bytes) -> bytes:
    offset %= max(1, len(data))
    return data[:offset] + chunk + data[offset + len(chunk) :]


def insert(data: bytes, offset: int, chunk: bytes) -> bytes:
    offset %= max(1, len(data))
    return data[:offset] + chunk + data[offset:]


def delete(data: bytes, offset: int, length: int) -> bytes:
    offset %= max(1, len(data))
    return data[:offset] + data[offset + length :]


def swap_header(data: bytes, other: bytes, length: int = 16) -> bytes:
    """The start of another format's file on this file's body: a wrong magic number."""
    return other[:length] + data[length:]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def set_dimensions(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the width and height a file declares, in whatever format it is.

    Checksums are fixed where the format has them (PNG's CRCs), so the decoder believes
    the new size and the rest of the file no longer matches it. Values are wrapped to
    the field's width; unknown formats come back unchanged.
    """
    if data.startswith(b"\x89PNG") and len(data) >= 33:
        header = struct.pack(">II", width % 2**32, height % 2**32) + data[24:29]
        return data[:8] + _chunk(b"IHDR", header) + data[33:]
    if data.startswith(b"\xff\xd8"):
        return _jpeg_dimensions(data, width, height)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif_dimensions(data, width, height)
    if data.startswith(b"BM") and len(data) >= 26:
        w = (width + 2**31) % 2**32 - 2**31
        h = (height + 2**31) % 2**32 - 2**31
        return data[:18] + struct.pack("<ii", w, h) + data[26:]
    if data[:4] in (b"II*\0", b"MM\0*"):
        return _tiff_dimensions(data, width, height)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp_dimensions(data, width, height)
    if data[:2] in (b"P5", b"P6"):
        fields = data.split(maxsplit=4)
        if len(fields) == 5:
            return b"%s\n%d %d\n%s\n" % (fields[0], width, height, fields[3]) + fields[4]
    return data


def _jpeg_dimensions(data: bytes, width: int, height: int) -> bytes:
    offset = 2
    while offset + 9 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        length = struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            size = struct.pack(">HH", height % 2**16, width % 2**16)
            return data[: offset + 5] + size + data[offset + 9 :]
        offset += 2 + length
    return data


def _gif_dimensions(data: bytes, width: int, height: int) -> bytes:
    size = struct.pack("<HH", width % 2**16, height % 2**16)
    raw = bytearray(data[:6] + size + data[10:])
    flags = raw[10]
    offset = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while offset < len(raw):  # skip extensions to the first image descriptor
        if raw[offset] == 0x2C and offset + 9 <= len(raw):
            raw[offset + 5 : offset + 9] = size
            break
        if raw[offset] != 0x21:
            break
        offset += 2
        while offset < len(raw) and raw[offset]:
            offset += raw[offset] + 1
        offset += 1
    return bytes(raw)


def _tiff_dimensions(data: bytes, width: int, height: int) -> bytes:
    order = "<" if data[:2] == b"II" else ">"
    raw = bytearray(data)
    ifd = struct.unpack(order + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return data
    count = struct.unpack(order + "H", data[ifd : ifd + 2])[0]
    for index in range(count):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(raw):
            break
        tag = struct.unpack(order + "H", raw[entry : entry + 2])[0]
        if tag in (256, 257):
            value = (width if tag == 256 else height) % 2**32
            raw[entry + 2 : entry + 12] = struct.pack(order + "HII", 4, 1, value)  # LONG
    return bytes(raw)


def _webp_dimensions(data: bytes, width: int, height: int) -> bytes:
    raw = bytearray(data)
    kind = bytes(raw[12:16])
    w, h = (width - 1) % 2**24, (height - 1) % 2**24
    if kind == b"VP8X" and len(raw) >= 30:
        raw[24:30] = w.to_bytes(3, "little") + h.to_bytes(3, "little")
    elif kind == b"VP8L" and len(raw) >= 25:
        bits = int.from_bytes(raw[21:25], "little")
        bits = (bits & ~0xFFFFFFF) | (w % 2**14) | ((h % 2**14) << 14)
        raw[21:25] = bits.to_bytes(4, "little")
    elif kind == b"VP8 " and len(raw) >= 30:
        raw[26:30] = struct.pack("<HH", width % 2**14, height % 2**14)
    return bytes(raw)


# --- hand-made hostile files -------------------------------------------------------------


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` black gray pixels, compressed to almost nothing."""
    compressor = zlib.compressobj(6)
    row = b"\0" * (width + 1)  # a filter byte, then the pixels
    rows = max(1, (1 << 20) // len(row))  # compressed about a megabyte at a time
    body = [compressor.compress(row * rows) for _ in range(height // rows)]
    body.append(compressor.compress(row * (height % rows)) + compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(body))
        + _chunk(b"IEND", b"")
    )


def many_frames(format: str, frames: int, size: int = 8) -> bytes:
    """An animation of ``frames`` tiny frames (GIF, PNG (APNG), WEBP) or pages (TIFF)."""
    from PIL import Image

    images = [
        Image.new("RGB", (size, size), (i % 256, (i * 7) % 256, (i * 13) % 256))
        for i in range(frames)
    ]
    options = {"loop": 0} if format in ("GIF", "WEBP") else {}
    return _encode(images[0], format, save_all=True, append_images=images[1:], **options)


def tiff_entry(order: str, tag: int, kind: int, count: int, value: bytes) -> bytes:
    return struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\0")


def exif_blob(entries: int, loop: bool = False, orientation: bytes | None = None) -> bytes:
    """A TIFF-structured EXIF block (``Exif\\0\\0`` not included) with ``entries`` tags.

    ``loop`` points the next-IFD offset and an ExifIFD pointer back at IFD0 itself;
    ``orientation`` sets the raw 4 value bytes of an Orientation tag typed LONG.
    """
    order = "<"
    table = []
    if orientation is not None:
        table.append(tiff_entry(order, 0x0112, 4, 1, orientation))
    if loop:
        table.append(tiff_entry(order, 0x8769, 4, 1, struct.pack("<I", 8)))
    for index in range(entries):
        table.append(
            tiff_entry(order, 0xC000 + index % 0x3000, 3, 1, struct.pack("<H", index % 65536))
        )
    table.sort(key=lambda entry: struct.unpack("<H", entry[:2])[0])
    next_ifd = 8 if loop else 0
    return (
        b"II*\0"
        + struct.pack("<I", 8)
        + struct.pack("<H", len(table) % 65536)
        + b"".join(table)
        + struct.pack("<I", next_ifd)
    )


def jpeg_with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """A JPEG with an extra APP1 segment right after SOI (the payload is cut to 65533 bytes)."""
    payload = payload[:65533]
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def png_with_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """A PNG with an extra chunk right after IHDR."""
    return png[:33] + _chunk(kind, payload) + png[33:]


def hostile_files() -> dict[str, Callable[[], bytes]]:
    """The issue's list, by hand: each recipe makes a file a stranger could send."""
    from fer8.pipeline.images import MAX_PIXELS

    seeds = make_seeds()
    jpeg, png = seeds["jpeg"], seeds["png"]
    return {
        "empty": lambda: b"",
        "one-byte": lambda: b"\xff",
        "jpeg-soi-only": lambda: b"\xff\xd8",
        "png-signature-only": lambda: b"\x89PNG\r\n\x1a\n",
        "jpeg-truncated-half": lambda: truncate(jpeg, 0.5),
        "png-truncated-after-ihdr": lambda: png[:33],
        "png-header-on-jpeg": lambda: swap_header(jpeg, png),
        "eps-for-ghostscript": lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n" * 4,
        "jpeg-65535x65535": lambda: set_dimensions(jpeg, 65535, 65535),
        "jpeg-0x0": lambda: set_dimensions(jpeg, 0, 0),
        "png-2^31x2^31": lambda: set_dimensions(png, 2**31 - 1, 2**31 - 1),
        "png-1x100M": lambda: set_dimensions(png, 1, MAX_PIXELS),
        "bmp-negative-width": lambda: set_dimensions(seeds["bmp"], -160, 160),
        "bmp-2^31-high": lambda: set_dimensions(seeds["bmp"], 160, -(2**31)),
        "gif-65535x65535": lambda: set_dimensions(seeds["gif"], 65535, 65535),
        "tiff-2^32-1-wide": lambda: set_dimensions(seeds["tiff"], 2**32 - 1, 1),
        "webp-16383x16383": lambda: set_dimensions(seeds["webp"], 16383, 16383),
        "webp-lossless-16384x16384": lambda: set_dimensions(seeds["webp-lossless"], 16384, 16384),
        "webp-vp8x-2^24": lambda: set_dimensions(seeds["webp-animated"], 2**24, 2**24),
        "jpeg-9000x9000-from-10kB": lambda: set_dimensions(jpeg, 9000, 9000),
        "bomb-png-20000x20000": lambda: set_dimensions(png_bomb(100, 100), 20_000, 20_000),
        "bomb-png-10000x10000": lambda: png_bomb(10_000, 10_000),
        "bomb-png-100Mx1": lambda: png_bomb(MAX_PIXELS, 1),
        "thin-png-1x20000": lambda: png_bomb(1, 20_000),
        "thin-png-20000x1": lambda: png_bomb(20_000, 1),
        "tiny-png-1x1": lambda: png_bomb(1, 1),
        "jpeg-huge-exif": lambda: jpeg_with_app1(jpeg, b"Exif\0\0" + exif_blob(5000)),
        "jpeg-exif-loop": lambda: jpeg_with_app1(
            jpeg, b"Exif\0\0" + exif_blob(3, loop=True, orientation=b"\6\0\0\0")
        ),
        "jpeg-exif-orientation-2^32-1": lambda: jpeg_with_app1(
            jpeg, b"Exif\0\0" + exif_blob(1, orientation=b"\xff\xff\xff\xff")
        ),
        "jpeg-300-app1-segments": lambda: (
            jpeg[:2] + b"".join(b"\xff\xe1\xff\xff" + bytes(65533) for _ in range(300)) + jpeg[2:]
        ),
        "png-exif-8MB": lambda: png_with_chunk(png, b"eXIf", exif_blob(8 * 1024 * 1024 // 12)),
        "png-exif-loop": lambda: png_with_chunk(png, b"eXIf", exif_blob(2, loop=True)),
        "png-ztxt-bomb": lambda: png_with_chunk(
            png, b"zTXt", b"comment\0\0" + zlib.compress(b"A" * 50_000_000)
        ),
        "png-iccp-bomb": lambda: png_with_chunk(
            png, b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * 50_000_000)
        ),
        "gif-5000-frames": lambda: many_frames("GIF", 5000),
        "apng-3000-frames": lambda: many_frames("PNG", 3000),
        "webp-2000-frames": lambda: many_frames("WEBP", 2000),
        "tiff-500-pages": lambda: many_frames("TIFF", 500),
        "apng-claims-2^31-frames": lambda: _apng_frame_count(seeds["apng"], 2**31),
        "jpeg-progressive-2000-scans": lambda: progressive_jpeg_scans(2000),
    }


def progressive_jpeg_scans(extra: int, side: int = 64) -> bytes:
    """A progressive gray JPEG with one of its AC scans repeated ``extra`` more times.

    Such a scan is an end-of-band run of 14 bytes whatever the image size, and libjpeg
    decodes every scan over the whole image: on 8000 x 8000 pixels, 2,000 of them took
    33 s (``set_dimensions`` does not work on these; use ``side``).
    """
    from PIL import Image

    data = _encode(Image.new("L", (side, side), 128), "JPEG", progressive=True)
    scans = []
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xD9:
            break
        end = position + 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
        if marker == 0xDA:
            while not (data[end] == 0xFF and data[end + 1] not in (0, *range(0xD0, 0xD8))):
                end += 1
            scans.append((position, end))
        position = end
    start, end = min(scans[1:], key=lambda scan: scan[1] - scan[0])
    return data[:start] + data[start:end] * (extra + 1) + data[end:]


def _apng_frame_count(apng: bytes, frames: int) -> bytes:
    start = apng.index(b"acTL") - 4
    return (
        apng[:start] + _chunk(b"acTL", struct.pack(">II", frames % 2**32, 0)) + apng[start + 20 :]
    )


# --- the rule ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one input did: ``result`` or the ``error`` message, and how long it took."""

    result: object = None
    error: str | None = None
    seconds: float = 0.0


def _run(call: Callable[[], object]) -> Outcome:
    from fer8.errors import InvalidImageError

    start = time.perf_counter()
    try:
        result = call()
    except InvalidImageError as exc:
        return Outcome(error=str(exc), seconds=time.perf_counter() - start)
    return Outcome(result=result, seconds=time.perf_counter() - start)


def _check_error(message: str, source: str) -> None:
    assert message.startswith(source + ": "), message
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    assert len(message) < 500, f"message too long: {message[:200]!r}..."


def check_load(
    data: bytes, *, max_pixels: int | None = None, time_limit: float = TIME_LIMIT_S
) -> Outcome:
    """``fer8.load_image(data)`` obeys the rule; other exceptions propagate to the caller."""
    import fer8
    from fer8.pipeline.images import MAX_PIXELS

    limit = MAX_PIXELS if max_pixels is None else max_pixels
    outcome = _run(lambda: fer8.load_image(data, max_pixels=limit))
    if outcome.error is not None:
        _check_error(outcome.error, f"<{len(data)} bytes>")
    else:
        image = outcome.result
        assert isinstance(image, np.ndarray) and image.dtype == np.uint8
        assert image.ndim == 3 and image.shape[2] == 3 and image.flags.c_contiguous
        assert 0 < image.shape[0] * image.shape[1] <= limit
    assert outcome.seconds < time_limit, f"took {outcome.seconds:.1f} s"
    return outcome


def check_predict(
    predictor, data: bytes, *, detect: bool = True, time_limit: float = TIME_LIMIT_S
) -> Outcome:
    """``predictor.predict(data)`` obeys the rule and its result is well formed."""
    outcome = _run(lambda: predictor.predict(data, detect=detect))
    if outcome.error is not None:
        _check_error(outcome.error, f"<{len(data)} bytes>")
    else:
        result = outcome.result
        assert result.error is None
        for face in result.faces:
            assert face.box.w > 0 and face.box.h > 0 and face.box.x >= 0 and face.box.y >= 0
            assert list(face.probabilities) == list(predictor.labels)
            assert abs(sum(face.probabilities.values()) - 1) < 1e-3
            assert all(np.isfinite(p) for p in face.probabilities.values())
    assert outcome.seconds < time_limit, f"took {outcome.seconds:.1f} s"
    return outcome


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports kB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- Hypothesis: a seed and a few mutations ----------------------------------------------

#: Sizes that decoders meet rarely: zero, one, the edges of 8, 16 and 32-bit fields.
ODD_SIZES = (
    0,
    1,
    2,
    3,
    7,
    8,
    48,
    255,
    256,
    4096,
    32767,
    32768,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32 - 1,
)


def mutation_strategy(seed_names: Sequence[str]):
    """A Hypothesis strategy of one mutation, as a tuple naming it (see :func:`mutate`).

    Offsets are drawn mostly from the first 4 kB, where the headers are.
    """
    from hypothesis import strategies as st

    offset = st.one_of(st.integers(0, 4096), st.integers(0, 2**20))
    size = st.one_of(st.sampled_from(ODD_SIZES), st.integers(1, 20_000))
    return st.one_of(
        st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
        st.tuples(
            st.just("flip"),
            st.lists(
                st.one_of(st.integers(0, 8 * 4096), st.integers(0, 2**23)), min_size=1, max_size=16
            ),
        ),
        st.tuples(
            st.just("overwrite"),
            offset,
            st.one_of(
                st.sampled_from(
                    [
                        b"\0",
                        b"\xff",
                        b"\x7f",
                        b"\x80",
                        b"\xff\xff",
                        b"\0\0\0\0",
                        b"\xff\xff\xff\xff",
                    ]
                ),
                st.binary(min_size=1, max_size=8),
            ),
        ),
        st.tuples(st.just("insert"), offset, st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("delete"), offset, st.integers(1, 512)),
        st.tuples(st.just("header"), st.sampled_from(sorted(seed_names)), st.integers(1, 40)),
        st.tuples(st.just("dimensions"), size, size),
    )


def mutate(seeds: dict[str, bytes], seed: str, mutations: Sequence[tuple]) -> bytes:
    """Apply ``mutations`` (drawn by :func:`mutation_strategy`) to ``seeds[seed]``."""
    data = seeds[seed]
    for kind, *args in mutations:
        if kind == "truncate":
            data = truncate(data, *args)
        elif kind == "flip":
            data = flip_bits(data, *args)
        elif kind == "overwrite":
            data = overwrite(data, *args)
        elif kind == "insert":
            data = insert(data, *args)
        elif kind == "delete":
            data = delete(data, *args)
        elif kind == "header":
            data = swap_header(data, seeds[args[0]], args[1])
        elif kind == "dimensions":
            data = set_dimensions(data, *args)
        else:
            raise ValueError(f"unknown mutation {kind!r}")
    return data


def mutated_files(seeds: dict[str, bytes], max_mutations: int = 4):
    """A Hypothesis strategy of ``(recipe, bytes)``: a seed file with a few mutations."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        seed = draw(st.sampled_from(sorted(seeds)))
        mutations = draw(st.lists(mutation_strategy(seeds), min_size=1, max_size=max_mutations))
        return (seed, mutations), mutate(seeds, seed, mutations)

    return build()
