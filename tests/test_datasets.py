"""Reading labelled data: class folders with synonyms, FER+ label.csv, fer2013.csv; crop cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import save

from fer8.training.crops import prepare_crops
from fer8.training.datasets import DatasetError, match_class, read_dataset


@pytest.mark.parametrize(
    "name, label",
    [
        ("anger", "angry"),
        ("Angry", "angry"),
        ("AN", "angry"),
        ("disgust", "disgusted"),
        ("DI", "disgusted"),
        ("afraid", "fearful"),
        ("Fear", "fearful"),
        ("happiness", "happy"),
        ("HA", "happy"),
        ("NE", "neutral"),
        ("sadness", "sad"),
        ("SU", "surprised"),
        ("surprise", "surprised"),
        ("worried", "worry"),
        ("Worry", "worry"),
        ("contempt", None),
        ("misc", None),
    ],
)
def test_folder_names_match_classes_with_synonyms(name, label):
    assert match_class(name) == label


def test_class_folders_report_folders_that_are_no_class(tmp_path, caplog):
    gray = np.full((48, 48, 3), 128, np.uint8)
    for folder, count in (("Happiness", 3), ("SA", 2), ("contempt", 4)):
        for i in range(count):
            save(gray, tmp_path / folder / f"{i}.png")
    (tmp_path / "Happiness" / "readme.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        data = read_dataset(tmp_path)
    assert data.counts == {"happy": 3, "sad": 2}
    assert data.labels == ("happy", "sad")  # the fixed order, not the folders' order
    assert data.skipped == {"folder 'contempt' is no class": 4}
    assert "'contempt' is no expression class" in caplog.text
    assert all(s.cropped for s in data.samples)  # 48 px images are face crops


def test_large_images_are_photos_and_small_ones_crops(tmp_path, astronaut):
    save(astronaut, tmp_path / "happy" / "photo.png")
    save(astronaut[::8, ::8], tmp_path / "happy" / "small.png")
    cropped = {s.source.rsplit("/", 1)[-1]: s.cropped for s in read_dataset(tmp_path).samples}
    assert cropped == {"photo.png": False, "small.png": True}


FERPLUS_ROWS = [
    # file, box, neutral happiness surprise sadness anger disgust fear contempt unknown NF
    ("a.png", 6, 2, 0, 1, 0, 0, 0, 1, 0, 0),  # neutral
    ("b.png", 0, 4, 4, 0, 0, 0, 0, 0, 2, 0),  # tie happiness/surprise: happiness (column order)
    ("c.png", 1, 0, 0, 0, 0, 0, 0, 8, 1, 0),  # contempt: left out
    ("d.png", 2, 0, 0, 0, 0, 0, 0, 0, 8, 0),  # unknown: left out
    ("e.png", 0, 0, 0, 0, 0, 0, 0, 0, 0, 10),  # not a face: left out
    ("f.png", 0, 0, 0, 0, 1, 7, 2, 0, 0, 0),  # disgust
    ("missing.png", 0, 10, 0, 0, 0, 0, 0, 0, 0, 0),
]


def test_ferplus_majority_soft_votes_and_what_is_left_out(tmp_path):
    lines = []
    for name, *votes in FERPLUS_ROWS:
        lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
        if name != "missing.png":
            save(np.full((48, 48), 100, np.uint8), tmp_path / name)
    (tmp_path / "label.csv").write_text("\n".join(lines) + "\n")

    data = read_dataset(tmp_path)
    assert data.kind == "ferplus"
    by_file = {s.source.rsplit("/", 1)[-1]: s for s in data.samples}
    assert {name: s.label for name, s in by_file.items()} == {
        "a.png": "neutral",
        "b.png": "happy",
        "f.png": "disgusted",
    }
    assert data.skipped == {"contempt": 1, "unknown": 1, "not_a_face": 1, "missing file": 1}
    # Votes over angry, disgusted, fearful, happy, neutral, sad, surprised, worry, without
    # the contempt / unknown / not-a-face votes.
    assert by_file["a.png"].votes == pytest.approx([0, 0, 0, 2 / 9, 6 / 9, 1 / 9, 0, 0])
    assert by_file["b.png"].votes == pytest.approx([0, 0, 0, 0.5, 0, 0, 0.5, 0])
    assert by_file["f.png"].votes == pytest.approx([0.1, 0.7, 0.2, 0, 0, 0, 0, 0])
    assert all(s.cropped for s in data.samples)


def test_ferplus_malformed_row_names_the_line(tmp_path):
    (tmp_path / "label.csv").write_text('a.png,"(0, 0, 48, 48)",1,2,x,0,0,0,0,0,0,0\n')
    with pytest.raises(DatasetError, match=r"label.csv:1"):
        read_dataset(tmp_path)


def test_fer2013_csv_splits_by_usage(tmp_path):
    pixels = " ".join(["7"] * 2304)
    rows = [
        "emotion,pixels,Usage",
        f"3,{pixels},Training",
        f"6,{pixels},Training",
        f"0,{pixels},PublicTest",
        f"5,{pixels},PrivateTest",
        "2,1 2 3,Training",
    ]
    (tmp_path / "fer2013.csv").write_text("\n".join(rows) + "\n")
    train = read_dataset(tmp_path)
    assert [s.label for s in train.samples] == ["happy", "neutral"]
    assert train.skipped == {"malformed row": 1}
    assert [s.label for s in read_dataset(tmp_path / "fer2013.csv", split="val").samples] == [
        "angry"
    ]
    assert [s.label for s in read_dataset(tmp_path, split="test").samples] == ["surprised"]
    image = train.samples[0].load()
    assert image.shape == (48, 48, 3) and (image == 7).all()


def test_no_labelled_images_is_an_error(tmp_path):
    (tmp_path / "misc").mkdir()
    with pytest.raises(DatasetError, match="no labelled images"):
        read_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        read_dataset(tmp_path / "nowhere")


def test_crops_are_framed_like_predict_and_cached(tmp_path, astronaut, monkeypatch, caplog):
    import fer8
    from fer8.training import crops

    save(astronaut, tmp_path / "data" / "happy" / "photo.png")
    save(np.full((300, 300, 3), 200, np.uint8), tmp_path / "data" / "happy" / "wall.png")
    save(astronaut[::10, ::10], tmp_path / "data" / "happy" / "small.png")
    (tmp_path / "data" / "happy" / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    data = read_dataset(tmp_path / "data")

    with caplog.at_level(logging.WARNING):
        first = prepare_crops(data.samples, tmp_path / "cache", image_size=64, workers=1)
    assert first.status == {"aligned": 1, "whole": 1, "no face": 1, "unreadable": 1}
    assert "broken.jpg" in caplog.text
    assert first.images.shape == (2, 64, 64, 3)
    # The photo's crop is exactly what the prediction pipeline gives for it, resized.
    expected = fer8.faces_in_photo(astronaut)[0][1].image
    import cv2

    expected = cv2.resize(expected, (64, 64), interpolation=cv2.INTER_AREA)
    photo_row = [data.samples[i].source.endswith("photo.png") for i in first.kept].index(True)
    assert np.array_equal(first.images[photo_row], expected)

    real_frame = crops.frame

    def no_framing(sample, *args, **kwargs):
        # Unreadable files are read again (and reported again) on every run.
        assert sample.source.endswith("broken.jpg"), "a cached crop was framed again"
        return real_frame(sample, *args, **kwargs)

    monkeypatch.setattr(crops, "frame", no_framing)
    second = prepare_crops(data.samples, tmp_path / "cache", image_size=64, workers=1)
    assert second.status == first.status
    assert np.array_equal(second.images, first.images)


def test_gray_crops_are_stored_with_one_channel(tmp_path):
    for i in range(3):
        save(np.full((48, 48), 50 * i, np.uint8), tmp_path / "sad" / f"{i}.png")
    prepared = prepare_crops(read_dataset(tmp_path).samples, None, image_size=32, workers=1)
    assert prepared.images.shape == (3, 32, 32, 1)


def test_expw_layout_gives_one_sample_per_labelled_face(tmp_path, astronaut):
    from fer8.results import Box

    save(astronaut, tmp_path / "Images" / "happy_actor_1_f0.jpg")
    save(astronaut, tmp_path / "Images" / "group_7.jpg")
    (tmp_path / "label.lst").write_text(
        "happy_actor_1_f0.jpg 0 63 178 268 176 22.9 3\n"
        "group_7.jpg 0 10 20 60 70 50.1 6\n"
        "group_7.jpg 1 100 120 150 170 48.0 1\n"
        "gone_1_f0.jpg 0 1 2 3 4 1.0 0\n"
    )
    data = read_dataset(tmp_path)
    assert data.kind == "expw" and data.skipped == {"missing file": 1}
    assert [(Path(s.source).name, s.label, s.box, s.cropped) for s in data.samples] == [
        ("happy_actor_1_f0.jpg", "happy", Box(178, 63, 90, 113), False),
        ("group_7.jpg", "neutral", Box(20, 10, 40, 60), False),
        ("group_7.jpg", "disgusted", Box(120, 100, 30, 70), False),
    ]


@pytest.mark.parametrize(
    "line, problem",
    [
        ("a.jpg 0 10 10 5 20 1.0 3", "empty face box"),
        ("a.jpg 0 10 10 20 20 1.0 9", "tuple index out of range"),
        ("a.jpg 0 top 10 20 20 1.0 3", "could not convert"),
    ],
)
def test_malformed_expw_lines_name_the_line(tmp_path, line, problem):
    (tmp_path / "Images").mkdir()
    (tmp_path / "label.lst").write_text("\n" + line + "\n")
    with pytest.raises(DatasetError, match=f"label.lst:2: malformed line .*{problem}"):
        read_dataset(tmp_path)


def test_expw_without_its_photo_folder_is_an_error(tmp_path):
    (tmp_path / "label.lst").write_text("a.jpg 0 10 10 20 20 1.0 3\n")
    with pytest.raises(DatasetError, match="label.lst but no photo folder"):
        read_dataset(tmp_path)


@pytest.mark.parametrize(
    "name, box, group",
    [
        ("Images/angry_actor_104_f0.jpg", True, "angry_actor_104"),
        ("Images/angry_actor_104_f2.jpg", True, "angry_actor_104"),
        (
            "Train/Angry/HarryPotter_Deathly_Hallows_1_000522120_00000011.png",
            False,
            "HarryPotter_Deathly_Hallows_1",
        ),
        ("Train/Fear/OceansTwelve-001817760_00000010.png", False, "OceansTwelve"),
        ("jaffe/angry/KA.AN1.39.tiff", False, "KA"),
        ("raf/happy/test_0001_aligned.jpg", False, "test_0001_aligned"),
    ],
)
def test_groups_keep_a_photo_film_or_person_on_one_side(name, box, group):
    from fer8.results import Box
    from fer8.training.datasets import Sample, group_of

    assert group_of(Sample(name, "happy", False, box=Box(0, 0, 9, 9) if box else None)) == group


def test_the_split_is_fixed_by_group_and_parts_are_disjoint(tmp_path):
    from fer8.training.datasets import group_of, split_of

    for film in (
        "Amelie",
        "Borat",
        "Casablanca",
        "Dune",
        "Elf",
        "Fargo",
        "Gravity",
        "Heat",
        "Inception",
        "Jaws",
        "Kes",
        "Logan",
    ):
        for frame in range(3):
            save(
                np.zeros((150, 150, 3), np.uint8),
                tmp_path / "Happy" / f"{film}_00000{frame}_0000001{frame}.png",
            )
    data = read_dataset(tmp_path)
    train, val = read_dataset(tmp_path, split="train"), read_dataset(tmp_path, split="val")
    assert train.kind == "folders@train" and val.kind == "folders@val"
    assert len(train.samples) + len(val.samples) == 36 and val.samples
    assert not {group_of(s) for s in train.samples} & {group_of(s) for s in val.samples}
    # The rule is the group name's digest: the same on every run and machine.
    assert [split_of(s) for s in data.samples] == [split_of(s) for s in data.samples]
    # (SHA-256 of the film's name, first 4 bytes, mod 100, below 20; a change of the
    # rule moves images between training and validation, so it must be noticed.)
    assert {Path(s.source).name.split("_")[0] for s in val.samples} == {
        "Amelie",
        "Casablanca",
        "Fargo",
        "Gravity",
        "Heat",
        "Jaws",
        "Kes",
        "Logan",
    }
    with pytest.raises(DatasetError, match="only fer2013.csv has a test split"):
        read_dataset(tmp_path, split="test")


@pytest.mark.parametrize(
    "spec, path, split, weight",
    [
        ("expw", "expw", None, 1.0),
        ("data/expw@train:3", "data/expw", "train", 3.0),
        ("sfew/Train@val", "sfew/Train", "val", 1.0),
        ("FER2013Train:0.25", "FER2013Train", None, 0.25),
        ("odd:name", "odd:name", None, 1.0),
    ],
)
def test_source_specs(spec, path, split, weight):
    from fer8.training.datasets import parse_source

    source = parse_source(spec)
    assert (source.path, source.split, source.weight) == (Path(path), split, weight)
    assert str(source) == spec.replace(":1.0", "")


@pytest.mark.parametrize(
    "spec, problem",
    [("expw:0", "positive"), ("expw:-2", "positive"), ("expw@dev", "unknown split 'dev'")],
)
def test_bad_source_specs_are_refused(spec, problem):
    from fer8.training.datasets import parse_source

    with pytest.raises(DatasetError, match=problem):
        parse_source(spec)


def test_photo_crops_are_cached_per_detector_and_box(tmp_path):
    from fer8.results import Box
    from fer8.training.crops import CropCache
    from fer8.training.datasets import Sample

    yunet, haar = CropCache(tmp_path), CropCache(tmp_path, detector="haar")
    stricter = CropCache(tmp_path, detector_options={"score_threshold": 0.9})
    photo, crop = Sample("a.jpg", "happy", False), Sample("a.png", "happy", True)
    boxed = Sample("a.jpg", "happy", False, box=Box(1, 2, 30, 40))
    content = b"the same bytes"
    paths = {cache.path(photo, content) for cache in (yunet, haar, stricter)}
    assert len(paths) == 3  # the detector and its settings shape a photo's crop
    # A pre-cropped face is never searched: one crop whatever the detector.
    assert len({cache.path(crop, content) for cache in (yunet, haar, stricter)}) == 1
    assert yunet.path(boxed, content).name.endswith("-photo-1_2_30_40.png")
    assert yunet.path(boxed, content) != yunet.path(photo, content)


def test_drawn_samples_take_an_equal_share_of_each_dataset_the_same_each_time():
    """fer8 quantize's calibration faces: ``draw_samples`` takes count // n from each
    dataset (all of a smaller one), at random but the same for the same seed, each
    share in its dataset's order."""
    from fer8.training.datasets import Dataset, Sample, draw_samples

    def dataset(name: str, size: int) -> Dataset:
        samples = tuple(Sample(f"{name}/{i}.png", "happy", True) for i in range(size))
        return Dataset(Path(name), "folders", samples)

    big, small = dataset("big", 50), dataset("small", 2)
    drawn = draw_samples([big, small], 9)
    assert [s.source for s in drawn if s.source.startswith("small")] == [
        "small/0.png",
        "small/1.png",
    ]
    from_big = [s.source for s in drawn if s.source.startswith("big")]
    assert len(from_big) == 5  # 9 // 2 + 1: the first dataset takes the odd one
    assert from_big == sorted(from_big, key=lambda source: int(source[4:-4]))
    assert draw_samples([big, small], 9) == drawn
    assert draw_samples([big, small], 9, seed=1) != drawn
    assert len(draw_samples([big], 100)) == 50
