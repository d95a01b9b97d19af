"""Datasets given as archives (.tar.gz, .tgz, .tar, .zip): read as the folder they hold,
unpacked once into the cache, refused in one line when corrupt or unsafe."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import save

from fer8.cli import cli
from fer8.training.datasets import DatasetError, parse_source, read_dataset


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """fer8's cache of this test alone, to see what is unpacked there."""
    home = tmp_path / "home"
    monkeypatch.setenv("FER8_HOME", str(home))
    return home / "datasets"


def faces(root: Path, classes=("happy", "sad", "angry"), per_class: int = 5) -> Path:
    """Class folders of 48x48 noise crops."""
    rng = np.random.default_rng(len(str(root)))
    for label in classes:
        for i in range(per_class):
            save(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), root / label / f"{i}.png")
    return root


def pack(folder: Path, archive: Path, arcname: str | None = None) -> Path:
    """``folder`` as ``archive`` (its format from its name), under ``arcname`` inside."""
    arcname = folder.name if arcname is None else arcname
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as zipped:
            for path in sorted(folder.rglob("*")):
                zipped.write(path, str(Path(arcname, path.relative_to(folder))))
    else:
        mode = "w:gz" if archive.name.endswith(("gz", ".tgz")) else "w"
        with tarfile.open(archive, mode) as tar:
            tar.add(folder, arcname=arcname)
    return archive


def _names(dataset) -> list[tuple[str, str]]:
    """Each sample as its class folder and file name, and its label."""
    return sorted(
        (Path(s.source).parent.name, Path(s.source).name, s.label) for s in dataset.samples
    )


@pytest.mark.parametrize("name", ["faces.tar.gz", "faces.tgz", "faces.tar", "faces.zip"])
def test_an_archive_reads_as_the_folder_it_holds(tmp_path, name, cache):
    folder = faces(tmp_path / "faces")
    archive = pack(folder, tmp_path / name)
    for split in (None, "train", "val"):
        expected = read_dataset(folder, split=split)
        got = read_dataset(archive, split=split)
        assert _names(got) == _names(expected) and got.kind == expected.kind
        assert got.root == archive  # what runs and reports record
    assert all(Path(s.source).is_relative_to(cache) for s in got.samples)
    # @split and :weight as for a folder; the name is the archive's without its suffix.
    source = parse_source(f"{archive}@train:2")
    assert (source.path, source.split, source.weight) == (archive, "train", 2.0)
    assert source.name == "faces@train"


def test_an_archive_is_unpacked_once_and_again_when_it_changes(tmp_path, cache):
    archive = pack(faces(tmp_path / "faces"), tmp_path / "faces.tar.gz")
    read_dataset(archive)
    (unpacked,) = cache.iterdir()
    marker = unpacked / "seen"
    marker.write_text("")  # a second read must not unpack it afresh
    read_dataset(archive)
    assert list(cache.iterdir()) == [unpacked] and marker.exists()
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    read_dataset(archive)
    assert len(list(cache.iterdir())) == 2  # a changed archive: its own folder


def test_an_archive_of_several_datasets_is_read_by_a_path_inside(tmp_path, caplog):
    """As FER+ ships: Train and Valid side by side. Alone, the archive names both."""
    both = tmp_path / "both"
    faces(both / "Train")
    faces(both / "Valid", per_class=2)
    (both / "README.txt").write_text("two splits")
    archive = pack(both, tmp_path / "ferplus.zip", arcname="")
    with pytest.raises(DatasetError) as error:
        read_dataset(archive)
    assert str(error.value) == (
        f"{archive}: holds 2 datasets; name one: {archive}/Train, {archive}/Valid"
    )
    valid = read_dataset(archive / "Valid")
    assert sum(valid.counts.values()) == 6 and valid.root == archive / "Valid"
    assert parse_source(f"{archive}/Valid@val").name == "ferplus-Valid@val"
    with pytest.raises(DatasetError, match="holds no Test .its top level: README.txt, Train/"):
        read_dataset(archive / "Test")
    # One dataset beside other files is the one read.
    single = tmp_path / "single"
    faces(single / "data")
    (single / "LICENSE").write_text("terms")
    with caplog.at_level(logging.INFO, logger="fer8.training.archives"):
        dataset = read_dataset(pack(single, tmp_path / "single.tar.gz", arcname=""))
    assert sum(dataset.counts.values()) == 15
    assert "reading data, the one dataset inside" in caplog.text


def _truncated(tmp_path: Path) -> Path:
    whole = pack(faces(tmp_path / "t"), tmp_path / "whole.tar.gz").read_bytes()
    (tmp_path / "truncated.tar.gz").write_bytes(whole[: len(whole) // 2])
    return tmp_path / "truncated.tar.gz"


@pytest.mark.parametrize("kind", ["junk.tar.gz", "junk.zip", "truncated"])
def test_a_corrupt_archive_fails_in_one_line_naming_it(tmp_path, kind, cache):
    if kind == "truncated":
        archive = _truncated(tmp_path)
    else:
        archive = tmp_path / kind
        archive.write_bytes(b"not an archive at all\n" * 10)
    with pytest.raises(DatasetError) as error:
        read_dataset(archive)
    message = str(error.value)
    assert message.startswith(f"{archive}: cannot unpack (") and "\n" not in message
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing half-unpacked left


@pytest.mark.parametrize("member", ["../evil.png", "/tmp/fer8-evil.png", "a/../../evil.png"])
@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_members_outside_the_folder_refuse_the_archive(tmp_path, member, kind, cache):
    archive = tmp_path / "nested" / f"evil.{kind}"
    archive.parent.mkdir()
    png = (Path(__file__).parents[1] / "examples" / "astronaut.png").read_bytes()[:1000]
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("faces/happy/0.png", png)
            zipped.writestr(member, png)
    else:
        with tarfile.open(archive, "w:gz") as tar:
            for name in ("faces/happy/0.png", member):
                info = tarfile.TarInfo(name)
                info.size = len(png)
                tar.addfile(info, io.BytesIO(png))
    with pytest.raises(DatasetError, match="would land outside its folder") as error:
        read_dataset(archive)
    assert str(error.value).startswith(str(archive))
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "nested" / "evil.png").exists()
    assert not Path("/tmp/fer8-evil.png").exists()
    assert not cache.exists() or list(cache.iterdir()) == []


def test_links_in_a_tar_are_skipped(tmp_path, caplog):
    archive = tmp_path / "links.tar"
    folder = faces(tmp_path / "faces")
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname="faces")
        link = tarfile.TarInfo("faces/happy/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with caplog.at_level(logging.WARNING):
        dataset = read_dataset(archive)
    assert sum(dataset.counts.values()) == 15
    assert "1 links or special files skipped" in caplog.text


def test_a_binary_file_that_is_no_archive_fails_in_one_line(tmp_path, astronaut_path):
    """What --data ferplus.tar.gz did before archives were read: a 40-line traceback."""
    with pytest.raises(DatasetError) as error:
        read_dataset(astronaut_path)
    assert str(error.value) == (
        f"{astronaut_path}: not a fer2013.csv (not text); datasets are folders, "
        "fer2013.csv files and .tar.gz, .tgz, .tar or .zip archives"
    )


def test_evaluate_reads_an_archive_and_names_a_corrupt_one(tmp_path, tiny_model_path):
    archive = pack(faces(tmp_path / "faces"), tmp_path / "faces.tar.gz")
    args = ["evaluate", "--model", str(tiny_model_path), "--format", "json", "--data"]
    result = CliRunner().invoke(cli, [*args, str(archive)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["data"]["path"] == str(archive) and report["data"]["images"] == 15
    assert report["dataset"] == "faces"
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 broken")
    result = CliRunner().invoke(cli, [*args, str(tmp_path / "bad.zip")])
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines() == [
        f"fer8: error: {tmp_path / 'bad.zip'}: cannot unpack (File is not a zip file)"
    ]
