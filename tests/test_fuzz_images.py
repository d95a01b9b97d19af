"""Hostile files: load_image and Predictor.predict give a result or one clear error, fast.

A bounded, deterministic share of the fuzzing (a few hundred mutated files, the issue's
list of hand-made hostile files, odd arrays), and one regression test for each thing
fuzzing found, built from the input that found it. ``scripts/fuzz.sh`` runs the long,
random and coverage-guided versions.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
import fuzzing  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import fer8  # noqa: E402
from fer8.errors import InvalidImageError  # noqa: E402
from fer8.pipeline.image_headers import MAX_JPEG_SCANS  # noqa: E402
from fer8.pipeline.images import MAX_PIXELS, MAX_SIDE  # noqa: E402

SEEDS = fuzzing.make_seeds()
HOSTILE = fuzzing.hostile_files()

#: scripts/fuzz.sh sets FER8_FUZZ_SCALE to multiply the examples and draw them at random.
SCALE = int(os.environ.get("FER8_FUZZ_SCALE", "1"))

# Deterministic in the normal suite (the same inputs on every run, so CI does not fail on
# a new random find: that is scripts/fuzz.sh's job), no example database, no Hypothesis
# deadline (the rule's own time limit applies; a loaded machine must not fail a slow run).
bounded = settings(
    derandomize=SCALE == 1,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def load_error(data: bytes) -> str:
    with pytest.raises(InvalidImageError) as error:
        fer8.load_image(data)
    message = str(error.value)
    assert message.startswith(f"<{len(data)} bytes>: ") and "\n" not in message
    return error.value.problem


# --- the bounded fuzz run ----------------------------------------------------------------


def test_seeds_are_valid_files_of_every_format():
    formats = {name: fer8.load_image(data).shape for name, data in SEEDS.items()}
    assert formats["jpeg-progressive-exif"] == (160, 160, 3)  # rotated: square, still
    assert len(formats) == 18


@settings(bounded, max_examples=300 * SCALE)
@given(case=fuzzing.mutated_files(SEEDS))
def test_mutated_files_give_an_image_or_a_clear_error(case):
    _, data = case
    fuzzing.check_load(data)


@settings(bounded, max_examples=40 * SCALE)
@given(case=fuzzing.mutated_files(SEEDS, max_mutations=2), detect=st.booleans())
def test_mutated_files_through_the_predictor(predictor, case, detect):
    _, data = case
    fuzzing.check_predict(predictor, data, detect=detect)


@settings(bounded, max_examples=100 * SCALE)
@given(
    array=hnp.arrays(
        dtype=st.one_of(hnp.scalar_dtypes(), st.just(np.dtype(object))),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_arrays_give_an_image_or_a_clear_error(array):
    try:
        image = fer8.load_image(array)
    except InvalidImageError as exc:
        assert str(exc).startswith("<array ") and "\n" not in str(exc)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[:2] == array.shape[:2]


@pytest.mark.parametrize("name", sorted(set(HOSTILE) - {"bomb-png-10000x10000"}))
def test_hostile_files_give_an_image_or_a_clear_error(name):
    """Each of the issue's hostile files (the bomb at the limit is decoded in
    test_decoding_stays_under_the_memory_cap, in a process of its own)."""
    data = HOSTILE[name]()
    outcome = fuzzing.check_load(data)
    refused = {
        "empty",
        "one-byte",
        "jpeg-soi-only",
        "png-signature-only",
        "jpeg-truncated-half",
        "png-truncated-after-ihdr",
        "png-header-on-jpeg",
        "eps-for-ghostscript",
        "jpeg-0x0",
        "png-ztxt-bomb",
        "png-iccp-bomb",
        "jpeg-progressive-2000-scans",
    }
    too_large = {
        "jpeg-65535x65535",
        "png-2^31x2^31",
        "png-1x100M",
        "bmp-negative-width",
        "bmp-2^31-high",
        "gif-65535x65535",
        "tiff-2^32-1-wide",
        "webp-16383x16383",
        "webp-lossless-16384x16384",
        "webp-vp8x-2^24",
        "bomb-png-20000x20000",
        "bomb-png-100Mx1",
    }
    if name in refused:
        assert outcome.error is not None
    elif name in too_large:
        assert outcome.error is not None and "too large" in outcome.error
    else:  # within the limits: decoded, animations to their first frame
        assert outcome.result is not None, outcome.error


@pytest.mark.parametrize(
    "name",
    [
        "tiny-png-1x1",
        "thin-png-1x20000",
        "thin-png-20000x1",
        "jpeg-exif-loop",
        "gif-5000-frames",
        "webp-2000-frames",
    ],
)
def test_hostile_files_through_the_predictor(predictor, name):
    data = HOSTILE[name]()
    for detect in (True, False):
        outcome = fuzzing.check_predict(predictor, data, detect=detect)
        assert outcome.error is None  # all of them are images
        assert len(outcome.result.faces) == (0 if detect else 1)


def test_decoding_stays_under_the_memory_cap(tmp_path):
    """Bombs below the pixel limit are decoded; what they cost is bounded (a fresh
    process each, so that the peak is this file's)."""
    files = {"bomb-png-10000x10000": 10_000 * 10_000, "jpeg-9000x9000-from-10kB": 9000 * 9000}
    script = (
        "import resource, sys, fer8\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "fer8.load_image(data)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    for name, pixels in files.items():
        path = tmp_path / name
        path.write_bytes(HOSTILE[name]())
        run = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        peak_mb = float(run.stdout.split()[-1])
        # Pillow's decoded copy (up to 4 bytes a pixel) and the RGB result (3), banded.
        assert peak_mb < 8 * pixels / 2**20 + 64, (name, peak_mb)
        assert peak_mb < fuzzing.MEMORY_LIMIT_MB


# --- regressions: what fuzzing found ------------------------------------------------------


def test_regression_tiff_strip_offset_typed_as_a_float():
    """A bit flip turned a TIFF's StripOffsets from LONG into DOUBLE: Pillow raised
    TypeError ('float' object cannot be interpreted as an integer), which escaped."""
    tiff = bytearray(SEEDS["tiff"])
    first = struct.unpack("<I", tiff[4:8])[0]
    for index in range(struct.unpack("<H", tiff[first : first + 2])[0]):
        entry = first + 2 + 12 * index
        if struct.unpack("<H", tiff[entry : entry + 2])[0] == 273:  # StripOffsets
            tiff[entry + 2 : entry + 4] = struct.pack("<H", 12)  # DOUBLE
    problem = load_error(bytes(tiff))
    assert problem.startswith("corrupt or truncated image (TypeError: ")


def test_regression_pillow_warnings_do_not_escape_under_W_error():
    """Corrupt EXIF makes Pillow warn ('Tag data larger than file'); under ``-W error``
    (or a test suite's ``filterwarnings = error``) the warning escaped as an exception."""
    ifd = (
        b"II*\0"
        + struct.pack("<IH", 8, 1)
        + struct.pack("<HHII", 0x010F, 2, 5000, 4000)
        + struct.pack("<I", 0)
    )
    data = fuzzing.png_with_chunk(SEEDS["png"], b"eXIf", ifd)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fer8.load_image(data).shape == (160, 160, 3)


@pytest.mark.parametrize("width, height", [(MAX_PIXELS, 1), (1, MAX_PIXELS)])
def test_regression_sides_over_65535_are_refused_before_decoding(width, height):
    """Within the pixel limit, a 97 kB PNG of 100,000,000 x 1 pixels made Pillow raise
    MemoryError, and 1 x 100,000,000 decoded for 12 s into 1.2 GB."""
    data = fuzzing.png_bomb(width, height)
    start = time.perf_counter()
    assert "too large" in load_error(data)
    assert time.perf_counter() - start < 1.0
    fer8.load_image(fuzzing.png_bomb(MAX_SIDE, 2))  # the limit itself is fine


def test_regression_progressive_jpeg_with_thousands_of_scans_is_refused_fast():
    """2,000 copies of a 14-byte end-of-band scan over 8000 x 8000 pixels decoded for
    33 s (the test image is small: the refusal comes before decoding either way)."""
    data = fuzzing.progressive_jpeg_scans(2000)
    start = time.perf_counter()
    assert "more than 100 scans" in load_error(data)
    assert time.perf_counter() - start < 1.0
    # Up to the limit, such a file is still an image.
    assert fer8.load_image(fuzzing.progressive_jpeg_scans(MAX_JPEG_SCANS - 6)).shape == (64, 64, 3)
    assert fer8.load_image(SEEDS["jpeg-progressive-exif"]).shape == (160, 160, 3)


def test_regression_only_documented_formats_are_decoded(monkeypatch):
    """Pillow tried all its forty-odd decoders, and an EPS upload was handed to
    Ghostscript (here not installed, so the message even told its paths)."""
    from PIL import EpsImagePlugin, Image

    def never(*args, **kwargs):
        raise AssertionError("Ghostscript was run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", never)
    assert "not a format fer8 reads" in load_error(HOSTILE["eps-for-ghostscript"]())
    for format in ("TGA", "ICO", "PCX"):
        other = fuzzing._encode(Image.new("RGB", (16, 16)), format)
        assert "not a format fer8 reads" in load_error(other)


def test_regression_bomb_message_gives_fers_limit_not_pillows():
    """Pillow refuses more than twice its own limit first, and its message named that
    limit (178,956,970 pixels), not fer8's."""
    problem = load_error(HOSTILE["png-2^31x2^31"]())
    assert f"limit {MAX_PIXELS:,}" in problem and "178956970" not in problem


@pytest.mark.parametrize(
    "width, height", [(1, 1), (48, 1), (1, 48), (5000, 1), (30000, 10), (10, 30000), (65535, 30)]
)
def test_regression_tiny_and_thin_images_are_images(predictor, width, height):
    """OpenCV refused to shrink a side to 0 pixels (detection's search copy, the
    alignment's pre-shrink) and warpAffine refuses sides of 32,767 pixels or more: valid
    images gave "error: OpenCV(4.14.0) ... (-215:Assertion failed)" over two lines. And a
    pre-cropped 65535 x 30 picture was padded to 131069 x 65564 pixels to check for a
    face (85 s, 8 GB); 10 x 30000 took 13 s."""
    data = fuzzing.png_bomb(width, height)
    found = predictor.predict(data)
    assert found.error is None and found.faces == ()
    start = time.perf_counter()
    whole = predictor.predict(data, detect=False)
    assert time.perf_counter() - start < 5.0
    (face,) = whole.faces
    assert face.box == fer8.Box(0, 0, width, height) and not face.aligned


def test_regression_a_face_in_a_panorama_is_aligned(astronaut):
    """warpAffine refuses images with a side of 32,767 pixels or more: a face found in a
    40,000-pixel panorama could not be aligned."""
    panorama = np.full((512, 40_000, 3), 90, np.uint8)
    panorama[:, 30_000:30_512] = astronaut
    box = fer8.Box(30_172, 62, 104, 104)  # the astronaut's face (see test_faces)
    face = fer8.align(panorama, box)
    alone = fer8.align(astronaut, fer8.Box(172, 62, 104, 104))
    assert face.aligned and alone.aligned
    # The same crop, but for float32 landmarks being coarser at x = 30,000 than at 200.
    assert np.abs(face.image.astype(int) - alone.image).mean() < 0.1


def test_regression_unexpected_errors_are_reported_on_one_line(predictor, monkeypatch):
    """Whatever a stage raises, the predictor's message is one line (OpenCV's end in a
    newline and once went into results and the CLI's output as is)."""
    import fer8.pipeline.predictor

    def broken(*args, **kwargs):
        raise RuntimeError("first line\nsecond line\n")

    monkeypatch.setattr(fer8.pipeline.predictor, "faces_in_photo", broken)
    with pytest.raises(InvalidImageError) as error:
        predictor.predict(SEEDS["png"])
    assert str(error.value) == f"<{len(SEEDS['png'])} bytes>: RuntimeError: first line second line"


def test_jpeg_scan_count_follows_the_markers():
    from fer8.pipeline.image_headers import jpeg_scans

    assert jpeg_scans(SEEDS["jpeg"]) == 1
    assert jpeg_scans(SEEDS["jpeg-progressive-exif"]) == 10
    # A scan marker inside an APP segment (an EXIF thumbnail) is skipped with the segment.
    assert jpeg_scans(fuzzing.jpeg_with_app1(SEEDS["jpeg"], b"\xff\xda" * 500)) == 1
    assert jpeg_scans(fuzzing.progressive_jpeg_scans(50)) == 6 + 50
