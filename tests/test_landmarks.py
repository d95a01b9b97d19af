"""dlib's 68-point model read into arrays and evaluated with numpy: the same points as
dlib, a copy in fer8's cache that is checked, and a first run that makes it."""

from __future__ import annotations

import io
import json
import logging
import math
import tarfile
import time
import zlib

import cv2
import dlib
import numpy as np
import pytest
from conftest import SHARED

import fer8
from fer8.errors import ModelFormatError
from fer8.pipeline import landmark_worker, landmarking, shape_cache
from fer8.pipeline.landmarking import landmarks
from fer8.pipeline.shape_model import read_shape_predictor
from fer8.pipeline.shape_predictor import ShapePredictor
from fer8.results import Box


def pack_int(value: int) -> bytes:
    """dlib's portable integer: a control byte (byte count, 0x80 if negative), then the
    magnitude's bytes, little-endian."""
    body = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def pack_float(value: float) -> bytes:
    """dlib's portable float (float_details): a 24-bit mantissa and an exponent, low zero
    bytes of the mantissa shifted off."""
    fraction, exponent = math.frexp(float(np.float32(value)))
    mantissa, exponent = int(fraction * (1 << 24)), exponent - 24
    for _ in range(8):
        if mantissa & 0xFF:
            break
        mantissa >>= 8
        exponent += 8
    return pack_int(mantissa) + pack_int(exponent)


def pack_column(values) -> bytes:
    return pack_int(-len(values)) + pack_int(-1) + b"".join(pack_float(v) for v in values)


def write_shape_predictor(path, model) -> None:
    """Serialize arrays as dlib serializes a shape_predictor (version 1)."""
    cascades, trees, splits = model["split_thresh"].shape
    out = [pack_int(1), pack_column(model["initial_shape"]), pack_int(cascades)]
    for c in range(cascades):
        out.append(pack_int(trees))
        for t in range(trees):
            out.append(pack_int(splits))
            for (idx1, idx2), thresh in zip(model["split_idx"][c, t], model["split_thresh"][c, t]):
                out += [pack_int(int(idx1)), pack_int(int(idx2)), pack_float(thresh)]
            out.append(pack_int(splits + 1))
            out += [pack_column(leaf) for leaf in model["leaf_values"][c, t]]
    out.append(pack_int(cascades))
    for anchors in model["anchor_idx"]:
        out += [pack_int(len(anchors))] + [pack_int(int(a)) for a in anchors]
    out.append(pack_int(cascades))
    for deltas in model["deltas"]:
        out += [pack_int(len(deltas))] + [pack_float(v) for v in deltas.ravel()]
    path.write_bytes(b"".join(out))


def random_model(seed: int, parts=8, cascades=3, trees=20, depth=2, features=30) -> dict:
    """A random shape predictor whose floats take every form dlib writes: 6-byte ones,
    short mantissas (zero low bytes), zeros, negatives, tiny and large values."""
    rng = np.random.default_rng(seed)
    splits = 2**depth - 1
    leaves = rng.normal(0, 0.02, (cascades, trees, splits + 1, 2 * parts)).astype(np.float32)
    special = np.array([0.0, 0.5, -0.25, 1 / 1024, -3.0, 1e-30, 2.5e-3], np.float32)
    mask = rng.random(leaves.shape) < 0.1
    leaves[mask] = rng.choice(special, mask.sum())
    return {
        "initial_shape": rng.uniform(0.1, 0.9, 2 * parts).astype(np.float32),
        "split_idx": rng.integers(0, features, (cascades, trees, splits, 2)),
        "split_thresh": np.round(rng.uniform(-60, 60, (cascades, trees, splits)), 1).astype(
            np.float32
        ),
        "leaf_values": leaves,
        "anchor_idx": rng.integers(0, parts, (cascades, features)),
        "deltas": rng.uniform(-0.3, 0.3, (cascades, features, 2)).astype(np.float32),
    }


def dlib_points(predictor, image, rect) -> np.ndarray:
    shape = predictor(np.ascontiguousarray(image), dlib.rectangle(*rect))
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


@pytest.fixture(scope="module")
def real_model():
    path = landmark_worker.landmark_model_path()
    return path, read_shape_predictor(path)


def test_the_reader_reads_dlibs_68_point_model(real_model):
    _, model = real_model
    assert model.initial_shape.shape == (136,)
    assert model.split_idx.shape == (15, 500, 15, 2)
    assert model.leaf_values.shape == (15, 500, 16, 136)
    assert model.anchor_idx.shape == (15, 500) and model.deltas.shape == (15, 500, 2)
    # The mean shape fills the face box's unit square (the chin a little below it).
    assert 0 < model.initial_shape.min() < 0.05 and 1 < model.initial_shape.max() < 1.1
    assert model.initial_shape[0] == pytest.approx(0.0294458, abs=1e-7)


def test_random_models_in_dlibs_format_give_dlibs_points(tmp_path):
    """Every float form dlib writes is read, and the arithmetic is dlib's, to the pixel."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), np.uint8)
    image[:, :60] //= 3  # contrast, so that the trees' splits go both ways
    for seed in range(3):
        arrays = random_model(seed)
        path = tmp_path / f"model{seed}.dat"
        write_shape_predictor(path, arrays)
        model = read_shape_predictor(path)
        for name, array in model.arrays().items():
            np.testing.assert_array_equal(array, arrays[name], err_msg=name)
        ours, theirs = ShapePredictor(model), dlib.shape_predictor(str(path))
        for rect in [(10, 10, 70, 80), (50, -20, 140, 60), (-30, 40, 20, 100), (0, 0, 119, 89)]:
            np.testing.assert_array_equal(ours(image, rect), dlib_points(theirs, image, rect))


def test_numpy_points_are_dlibs_on_the_example_faces(real_model, astronaut, hopper, two_faces):
    path, model = real_model
    ours, theirs = ShapePredictor(model), dlib.shape_predictor(str(path))
    small = cv2.resize(astronaut, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    fitted = 0
    for image in (astronaut, hopper, two_faces, small):  # the last is upscaled first
        boxes = fer8.detect(image)
        # A box partly outside the image: its outer feature pixels read 0, as dlib's.
        for box in boxes + [Box(-20, -20, 60, 60), Box(boxes[0].x + 9, boxes[0].y - 7, 70, 70)]:
            np.testing.assert_array_equal(
                landmarks(image, box, predictor=ours), landmarks(image, box, predictor=theirs)
            )
            fitted += 1
    assert fitted >= 10


SHARED_FACES = [SHARED / "data" / name for name in ("jaffe.tar.gz", "expw.tar.gz")]


@pytest.mark.shared
@pytest.mark.skipif(not all(p.is_file() for p in SHARED_FACES), reason="needs ../shared/data")
def test_numpy_points_are_dlibs_on_real_faces(real_model):
    """Posed (JAFFE) and web (ExpW) faces, as detected, and FER2013-sized crops (48 px:
    upscaled before fitting): the same points as dlib on every one."""
    path, model = real_model
    ours, theirs = ShapePredictor(model), dlib.shape_predictor(str(path))
    faces = 0
    for archive_path in SHARED_FACES:
        with tarfile.open(archive_path) as archive:
            members = [m for m in archive if m.isfile() and m.name.endswith((".jpg", ".tiff"))]
            for member in members[:: max(1, len(members) // 60)][:60]:
                image = fer8.load_image(io.BytesIO(archive.extractfile(member).read()))
                for box in fer8.detect(image)[:2]:
                    crop = cv2.resize(image[box.y : box.y + box.h, box.x : box.x + box.w], (48, 48))
                    for picture, face in ((image, box), (crop, Box(0, 0, 48, 48))):
                        np.testing.assert_array_equal(
                            landmarks(picture, face, predictor=ours),
                            landmarks(picture, face, predictor=theirs),
                            err_msg=member.name,
                        )
                        faces += 1
    assert faces >= 150


def test_a_file_that_is_not_a_shape_predictor_is_refused_in_one_line(tmp_path):
    good = tmp_path / "good.dat"
    write_shape_predictor(good, random_model(1))
    data = good.read_bytes()
    for name, content in {
        "empty": b"",
        "text": b"not a model",
        "truncated": data[: len(data) // 2],
        "longer": data + b"\x01\x00",
        "version 2": pack_int(2) + data[2:],
    }.items():
        path = tmp_path / f"{name}.dat"
        path.write_bytes(content)
        with pytest.raises(ModelFormatError, match=f"{name}.dat") as error:
            read_shape_predictor(path)
        assert "\n" not in str(error.value), name


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty fer8 cache, no predictor loaded in this process yet, and background
    conversions recorded (``fresh_cache.started``) rather than started."""
    home = tmp_path / "home"
    monkeypatch.setenv("FER8_HOME", str(home))
    monkeypatch.setattr(landmarking, "_predictors", {})
    started: list = []
    monkeypatch.setattr(shape_cache, "convert_later", started.append)
    return home, started


def test_the_copy_in_fer8s_cache_maps_back_to_the_same_arrays(real_model, fresh_cache):
    path, model = real_model
    home, _ = fresh_cache
    assert shape_cache.load(path) is None and not landmark_worker.cache_is_current(path)
    written = shape_cache.save(model, path)
    assert written.parent == home / "landmarks" and landmark_worker.cache_is_current(path)
    start = time.perf_counter()
    mapped = shape_cache.load(path)
    assert time.perf_counter() - start < 0.2  # mapped and checked, not read
    assert mapped is not None
    for name, array in model.arrays().items():
        np.testing.assert_array_equal(getattr(mapped, name), array, err_msg=name)
    assert not mapped.leaf_values.flags.writeable  # a view of the mapped file


def test_a_changed_model_file_is_converted_again(tmp_path, fresh_cache, monkeypatch, caplog):
    dat = tmp_path / "model.dat"
    write_shape_predictor(dat, random_model(2))
    monkeypatch.setenv("FER8_LANDMARK_MODEL", str(dat))
    shape_cache.convert(dat)
    assert landmark_worker.cache_is_current()
    write_shape_predictor(dat, random_model(3))  # another model under the same name
    assert not landmark_worker.cache_is_current() and shape_cache.load(dat) is None
    with caplog.at_level(logging.WARNING):
        shape_cache.convert(dat)
    reloaded = shape_cache.load(dat)
    assert reloaded is not None and not caplog.records
    np.testing.assert_array_equal(reloaded.leaf_values, random_model(3)["leaf_values"])


@pytest.mark.parametrize("damage", ["flipped", "truncated", "garbage", "indices"])
def test_a_damaged_copy_is_reported_in_one_line_and_made_again(
    tmp_path, fresh_cache, monkeypatch, caplog, damage
):
    dat = tmp_path / "model.dat"
    write_shape_predictor(dat, random_model(4))
    monkeypatch.setenv("FER8_LANDMARK_MODEL", str(dat))
    copy = shape_cache.save(read_shape_predictor(dat), dat)
    data = bytearray(copy.read_bytes())
    header = landmark_worker.read_cache_header(copy)
    assert header is not None
    if damage == "flipped":  # one leaf value's bit: the checksum catches it
        data[header["arrays"]["leaf_values"][2] + 5] ^= 0x10
    elif damage == "truncated":
        del data[len(data) // 2 :]
    elif damage == "garbage":
        data[len(landmark_worker.CACHE_MAGIC) + 4 :] = b"x" * 100
    else:  # a split index out of range, with a checksum that matches it
        start, end = header["payload"]
        offset = header["arrays"]["split_idx"][2]
        data[offset : offset + 4] = (10**6).to_bytes(4, "little")
        header["crc32"] = zlib.crc32(bytes(data[start:end]))
        text = json.dumps(header).encode()
        magic = len(landmark_worker.CACHE_MAGIC)
        assert magic + 4 + len(text) <= start
        data[magic : magic + 4 + len(text)] = len(text).to_bytes(4, "little") + text
    copy.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="fer8.pipeline.shape_cache"):
        predictor = landmarking.load_landmark_model()
    # Not used: dlib's own predictor, and the copy made again for later processes.
    assert not isinstance(predictor, ShapePredictor) and fresh_cache[1] == [dat]
    assert len(caplog.records) == 1 and "cannot be used" in caplog.text
    assert "\n" not in caplog.records[0].getMessage() and not copy.exists()
    shape_cache.main([str(dat)])
    assert shape_cache.load(dat) is not None


def test_a_first_run_uses_dlib_and_converts_in_the_background(fresh_cache, monkeypatch):
    path = landmark_worker.landmark_model_path()
    _, started = fresh_cache
    first = landmarking.load_landmark_model()
    assert isinstance(first, dlib.shape_predictor) and started == [path]
    assert landmark_worker.cache_is_current() is False
    shape_cache.main([str(path)])  # what the background process runs
    monkeypatch.setattr(landmarking, "_predictors", {})
    assert isinstance(landmarking.load_landmark_model(), ShapePredictor)
    assert started == [path]  # no second conversion
    monkeypatch.setenv("FER8_LANDMARK_PROCESS", "1")
    assert not landmark_worker.wants_process()  # later runs: no landmark process


def test_the_landmark_process_converts_the_model_once_its_input_ends(
    fresh_cache, astronaut, monkeypatch
):
    monkeypatch.setenv("FER8_LANDMARK_PROCESS", "1")
    assert landmark_worker.wants_process()
    process = landmarking.LandmarkProcess()
    box = fer8.detect(astronaut)[0]
    served = landmarks(astronaut, box, predictor=process)
    started = time.perf_counter()
    process.close()
    assert time.perf_counter() - started < 0.5  # not waited for
    deadline = time.monotonic() + 60
    while not landmark_worker.cache_is_current() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert landmark_worker.cache_is_current()
    assert not landmark_worker.wants_process()
    mapped = landmarking.load_landmark_model()
    assert isinstance(mapped, ShapePredictor)
    np.testing.assert_array_equal(landmarks(astronaut, box, predictor=mapped), served)


def test_leaves_are_added_in_the_trees_order():
    """float addition is not associative: the shape must take each tree's leaf in turn
    (dlib's order), which the predictor's reduction does."""
    rng = np.random.default_rng(5)
    stack = (rng.normal(0, 1, (501, 136)) * 10.0 ** rng.integers(-6, 3, (501, 1))).astype(
        np.float32
    )
    expected = stack[0].copy()
    for row in stack[1:]:
        expected += row
    np.testing.assert_array_equal(np.add.reduce(stack, axis=0), expected)
    assert not np.array_equal(np.sum(stack, axis=0, dtype=np.float64).astype(np.float32), expected)


def test_the_background_conversion_makes_the_copy_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setenv("FER8_HOME", str(tmp_path / "home"))
    dat = tmp_path / "model.dat"
    write_shape_predictor(dat, random_model(6))
    registered = []
    monkeypatch.setattr(shape_cache.atexit, "register", lambda *args: registered.append(args))
    monkeypatch.setattr(shape_cache, "_later", set())
    shape_cache.convert_later(dat)
    shape_cache.convert_later(dat)
    assert registered == [(shape_cache.convert_in_background, str(dat))]  # at exit, once
    process = shape_cache.convert_in_background(dat)
    assert process is not None and process.wait(timeout=60) == 0
    assert landmark_worker.cache_is_current(dat)
    model = shape_cache.load(dat)
    assert model is not None
    np.testing.assert_array_equal(model.deltas, random_model(6)["deltas"])


def test_the_cache_folder_is_the_one_fer8_keeps_its_models_in(tmp_path, monkeypatch):
    """landmark_worker finds fer8's cache without importing the model registry (the
    fer8 command decides before its imports): the same folder, however it is set."""
    from fer8.models.registry import cache_dir

    for home, xdg in ((str(tmp_path / "a"), None), (None, str(tmp_path / "b")), (None, None)):
        for name, value in (("FER8_HOME", home), ("XDG_CACHE_HOME", xdg)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        assert landmark_worker.cache_file(tmp_path / "m.dat").parent == cache_dir() / "landmarks"
