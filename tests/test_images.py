"""load_image: every kind of input becomes RGB uint8, every bad one a clear error."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import fer8
from fer8.errors import InvalidImageError
from fer8.pipeline.images import iter_image_files


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def test_path_bytes_file_and_array_give_the_same_pixels(astronaut_path):
    from_path = fer8.load_image(astronaut_path)
    data = astronaut_path.read_bytes()
    assert from_path.shape == (512, 512, 3) and from_path.dtype == np.uint8
    np.testing.assert_array_equal(fer8.load_image(str(astronaut_path)), from_path)
    np.testing.assert_array_equal(fer8.load_image(data), from_path)
    with open(astronaut_path, "rb") as file:
        np.testing.assert_array_equal(fer8.load_image(file), from_path)
    np.testing.assert_array_equal(fer8.load_image(from_path), from_path)


def test_exif_orientation_is_applied():
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    data = encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    image = fer8.load_image(data)
    assert image.shape == (40, 20, 3)
    assert image[:20, :, 0].mean() > 200 and image[20:, :, 0].mean() < 60  # red on top


def pillows_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture
def opencv_decodes(monkeypatch) -> list[int]:
    """The sizes of the files cv2.imdecode was given (fer8's quick way for plain PNGs)."""
    import cv2

    calls: list[int] = []
    imdecode = cv2.imdecode

    def counted(buffer, flags):
        calls.append(len(buffer))
        return imdecode(buffer, flags)

    monkeypatch.setattr(cv2, "imdecode", counted)
    return calls


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_plain_pngs_are_decoded_by_opencv_to_pillows_pixels(astronaut, mode, opencv_decodes):
    data = encode(Image.fromarray(astronaut).convert(mode), "PNG")
    image = fer8.load_image(data)
    assert opencv_decodes == [len(data)]
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, pillows_pixels(data))


def test_pngs_opencv_could_misread_and_jpegs_are_left_to_pillow(astronaut, opencv_decodes):
    """16 bits, a palette, transparency, EXIF (an orientation), a file cut before its end
    (Pillow says "truncated", OpenCV would fill it in), two frames, and JPEGs (OpenCV's
    libjpeg prints its warnings to stderr)."""
    picture = Image.fromarray(astronaut[:64, :48])
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = io.BytesIO()
    picture.save(frames, format="PNG", save_all=True, append_images=[picture.rotate(90)])
    plain = encode(picture, "PNG")
    others = {
        "16 bits": encode(Image.fromarray(np.full((8, 8), 40000, np.uint16)), "PNG"),
        "palette": encode(picture.convert("P"), "PNG"),
        "transparency": encode(picture, "PNG", transparency=(0, 0, 0)),
        "orientation": encode(picture, "PNG", exif=exif.tobytes()),
        "cut": plain[:-12],
        "two frames": frames.getvalue(),
        "jpeg": encode(picture, "JPEG"),
    }
    # Pillow writes eXIf before the pixels; other writers put it after them, where
    # Pillow finds it only as it decodes.
    others["orientation after the pixels"] = _with_chunk_before_end(
        plain, b"eXIf", exif.tobytes()[6:]
    )
    for name, data in others.items():
        fer8.load_image(data)
        assert opencv_decodes == [], name
    assert fer8.load_image(others["orientation"]).shape == (48, 64, 3)  # turned by Pillow
    assert fer8.load_image(others["orientation after the pixels"]).shape == (48, 64, 3)
    fer8.load_image(plain)
    assert opencv_decodes == [len(plain)]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def _with_chunk_before_end(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """A PNG with a chunk inserted just before IEND (the last 12 bytes)."""
    return png[:-12] + _chunk(kind, payload) + png[-12:]


def test_exif_is_found_from_the_chunk_headers_or_by_a_search_of_the_whole_file(astronaut):
    from fer8.pipeline.image_headers import png_has_exif

    plain = encode(Image.fromarray(astronaut[:32, :32]), "PNG")
    text = _with_chunk_before_end(plain, b"tEXt", b"Comment\x00eXIf in a text chunk")
    assert not png_has_exif(plain) and not png_has_exif(text)  # headers walked to the end
    assert png_has_exif(_with_chunk_before_end(plain, b"eXIf", b"MM\x00*"))
    # A chunk length that overruns the file: the walk stops, and the search decides.
    broken = bytearray(text)
    broken[33:37] = struct.pack(">I", 1 << 30)
    assert png_has_exif(bytes(broken))
    assert not png_has_exif(bytes(broken).replace(b"eXIf", b"note"))


def test_jpeg_scans_are_walked_only_when_the_file_could_hold_too_many(monkeypatch, astronaut):
    """FF DA starts every scan and never occurs in entropy-coded data: a file with few of
    those bytes has few scans; one with many in its metadata is walked, and read."""
    from fer8.pipeline import image_headers

    walked: list[int] = []
    walk = image_headers.jpeg_scans
    monkeypatch.setattr(image_headers, "jpeg_scans", lambda data: walked.append(1) or walk(data))
    plain = encode(Image.fromarray(astronaut[:32, :32]), "JPEG")
    assert fer8.load_image(plain).shape == (32, 32, 3) and walked == []
    comment = b"\xff\xda" * (image_headers.MAX_JPEG_SCANS + 1)
    noted = plain[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + plain[2:]
    assert fer8.load_image(noted).shape == (32, 32, 3) and walked == [1]


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "LA"])
def test_other_modes_become_rgb(mode, astronaut):
    source = Image.fromarray(astronaut).convert(mode)
    format = "JPEG" if mode == "CMYK" else "PNG"
    image = fer8.load_image(encode(source, format))
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    if mode in ("L", "LA"):
        assert (image[..., 0] == image[..., 1]).all()


def test_transparent_pixels_are_composited_over_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent black
    rgba[0, 0] = (255, 0, 0, 255)
    image = fer8.load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(image[0, 0]) == (255, 0, 0)
    assert tuple(image[3, 3]) == (255, 255, 255)


def test_16_bit_images_are_scaled_not_clipped():
    values = np.array([[0, 32768], [65535, 1024]], np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    image = fer8.load_image(data)
    assert image[:, :, 0].tolist() == [[0, 128], [255, 4]]


def test_animation_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    image = fer8.load_image(buffer.getvalue())
    assert image[0, 0, 0] > 200 and image[0, 0, 2] < 50


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((4, 4), 7, np.uint8), 7),
        (np.full((4, 4, 1), 7, np.uint8), 7),
        (np.full((4, 4, 3), 0.5, np.float32), 128),
        (np.full((4, 4, 3), 65535, np.uint16), 255),
    ],
)
def test_arrays_are_converted(array, expected):
    image = fer8.load_image(array)
    assert image.shape == (4, 4, 3) and image.dtype == np.uint8
    assert (image == expected).all()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares a huge canvas: a decompression bomb in 70 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("empty.jpg", b"", "empty file"),
        ("notes.jpg", b"these are not the pixels you are looking for", "not an image"),
        ("noise.png", bytes(range(256)) * 8, "not an image"),
        ("bomb.png", _png_header_only(60000, 60000), "too large"),
    ],
)
def test_bad_files_raise_a_clear_error(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidImageError) as error:
        fer8.load_image(path)
    assert str(error.value).startswith(str(path) + ": ")
    assert problem in str(error.value)
    assert isinstance(error.value, ValueError)


def test_truncated_and_corrupt_files(tmp_path, hopper_path):
    data = hopper_path.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    corrupt = tmp_path / "corrupt.png"
    png = tmp_path / "ok.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(png)
    raw = bytearray(png.read_bytes())
    raw[60:80] = b"\xff" * 20  # inside the IDAT chunk
    corrupt.write_bytes(bytes(raw))
    for path in (truncated, corrupt):
        with pytest.raises(InvalidImageError, match="corrupt or truncated"):
            fer8.load_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InvalidImageError, match="no such file"):
        fer8.load_image(tmp_path / "missing.jpg")
    with pytest.raises(InvalidImageError, match="is a directory"):
        fer8.load_image(tmp_path)


def test_limit_is_configurable(astronaut_path):
    with pytest.raises(InvalidImageError, match="too large.*--max-pixels"):
        fer8.load_image(astronaut_path, max_pixels=512 * 511)


def test_a_panorama_beyond_pillows_own_limit_opens_when_the_limit_is_raised(tmp_path):
    """Pillow refuses more than 178,956,970 pixels in Image.open, whatever fer8 allows;
    max_pixels above that lets it through (to the decoder, which then finds this
    header-only file truncated), and Pillow's own limit is left as it was."""
    from PIL import Image

    panorama = tmp_path / "panorama.png"
    panorama.write_bytes(_png_header_only(20_000, 10_000))  # 200 megapixels
    with pytest.raises(InvalidImageError, match="too large.*--max-pixels"):
        fer8.load_image(panorama)
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        fer8.load_image(panorama, max_pixels=250_000_000)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's default, restored


def test_bad_arrays():
    with pytest.raises(InvalidImageError, match="not an image"):
        fer8.load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InvalidImageError, match="NaN"):
        fer8.load_image(np.full((4, 4), np.nan))


def test_folder_walk_is_recursive_sorted_and_takes_images_only(tmp_path):
    for name in ("b.jpg", "a.PNG", "sub/c.webp", "notes.txt", "sub/.hidden/d.bmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files([tmp_path])]
    assert found == ["a.PNG", "b.jpg", "sub/.hidden/d.bmp", "sub/c.webp"]
    explicit = tmp_path / "notes.txt"
    assert list(iter_image_files([explicit])) == [explicit]  # named files are never skipped
