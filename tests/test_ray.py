"""``fer8 predict --engine ray`` and ``fer8.distributed``: the same rows as plain predict.

One small Ray cluster (a head node on 127.0.0.1 with two CPUs, so two actors) is
started for this file in its own temporary folder and stopped at the end. The runs go
through it from other processes, as on a real cluster.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner
from conftest import EXAMPLES, LABELS, save

from fer8.cli import cli
from fer8.distributed.inputs import list_inputs
from fer8.distributed.rows import RowFileWriter, rows_table
from fer8.output import face_rows
from fer8.results import Box, Face, ImageResult

pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.slow  # a Ray cluster

#: Ray's settings for every process of these tests: no token written to ~/.ray, no
#: usage report, a small object store.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster(NamedTuple):
    address: str
    pid: int  # of `ray start --block`, whose descendants are the cluster's processes


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head node with two CPUs, stopped after the module.

    ``ray start --block`` stays in the foreground and takes the cluster's processes
    down when it is terminated, so stopping it stops exactly this cluster (``ray
    stop`` would stop every Ray process of the user).
    """
    ray_cli = Path(sys.executable).with_name("ray")
    # Short and outside pytest's folders: Ray's socket paths must fit in 107 bytes.
    temp = tempfile.mkdtemp(prefix="fer8-ray-", dir="/tmp")
    port = _free_port()
    env = {**os.environ, **RAY_ENV}
    head = subprocess.Popen(
        [
            str(ray_cli),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--object-store-memory",
            "200000000",
            "--temp-dir",
            temp,
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while (
            subprocess.run(
                [str(ray_cli), "status", "--address", address], env=env, capture_output=True
            ).returncode
            != 0
        ):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not start: {head.stderr.read()[-2000:]}")
            time.sleep(1)
        yield Cluster(address, head.pid)
    finally:
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def forty_photos(tmp_path_factory) -> Path:
    """37 copies of the two example photos and 3 broken files, in nested folders."""
    folder = tmp_path_factory.mktemp("ray") / "photos"
    examples = [EXAMPLES / "astronaut.png", EXAMPLES / "grace_hopper.jpg"]
    for index in range(37):
        example = examples[index % 2]
        target = folder / f"part{index % 3}" / f"{index:02d}-{example.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(example, target)
    jpeg = (EXAMPLES / "grace_hopper.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "notes.png").write_text("a text file with an image's name\n")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def _rows_of_plain_predict(folder: Path, model: Path) -> dict[tuple, dict]:
    """``fer8 predict --format jsonl``'s answers as per-face rows, keyed by (source, face)."""
    result = CliRunner().invoke(
        cli,
        ["predict", str(folder), "--model", str(model), "--format", "jsonl"],
        catch_exceptions=False,
    )
    assert result.exit_code == 1  # the three broken files
    rows = {}
    for line in result.stdout.splitlines():
        item = json.loads(line)
        faces = item["faces"] or [None]
        for index, face in enumerate(faces):
            row = {
                "source": item["source"],
                "face": None if face is None else index,
                "error": item["error"],
            }
            if face is not None:
                row.update(
                    dict(zip("xywh", face["box"])),
                    label=face["label"],
                    confidence=face["confidence"],
                    **face["probabilities"],
                )
            rows[row["source"], row["face"]] = row
    return rows


def _assert_same_rows(rows: list[dict], expected: dict[tuple, dict]) -> None:
    keyed = {(row["source"], row["face"]): row for row in rows}
    assert len(keyed) == len(rows), "a row is duplicated"
    assert keyed.keys() == expected.keys()
    for key, want in expected.items():
        got = keyed[key]
        for column, value in want.items():
            if isinstance(value, float):
                assert math.isclose(got[column], value, abs_tol=1e-5), (key, column)
            else:
                assert got[column] == value, (key, column)
        if want["face"] is None:  # no face, or unreadable: the face columns are empty
            assert all(got[column] is None for column in ("x", "label", *LABELS))


def _run_on_ray(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fer8", "predict", *args, "--engine", "ray"],
        env={**os.environ, **RAY_ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_ray_gives_the_rows_of_plain_predict(ray_cluster, forty_photos, tiny_model_path, tmp_path):
    expected = _rows_of_plain_predict(forty_photos, tiny_model_path)
    assert sum(row["error"] is not None for row in expected.values()) == 3
    out = tmp_path / "results.parquet"
    missing = str(forty_photos / "missing.jpg")
    run = _run_on_ray(
        str(forty_photos),
        missing,
        "--model",
        str(tiny_model_path),
        "--ray-address",
        ray_cluster.address,
        "--out",
        str(out),
    )
    assert run.returncode == 1, run.stderr  # like plain predict: some input failed
    assert run.stdout == ""
    assert f"{forty_photos / 'empty.jpg'}: empty file" in run.stderr
    table = pq.read_table(out)
    assert table.column_names == [
        "source",
        "face",
        "x",
        "y",
        "w",
        "h",
        "label",
        "confidence",
        *LABELS,
        "yaw",
        "pitch",
        "roll",
        "error",
    ]
    # A file named but absent is an error row too, as in plain predict.
    expected[missing, None] = {"source": missing, "face": None, "error": "no such file"}
    _assert_same_rows(table.to_pylist(), expected)
    assert not list(tmp_path.glob(".*partial"))


def test_jsonl_output_and_globs(ray_cluster, forty_photos, tiny_model_path, tmp_path):
    """--out .jsonl writes the same rows; a quoted glob is expanded as the shell would."""
    expected = {
        key: row
        for key, row in _rows_of_plain_predict(forty_photos, tiny_model_path).items()
        if "/part1/" in key[0]
    }
    out = tmp_path / "rows.jsonl"
    run = _run_on_ray(
        str(forty_photos / "part1" / "*"),
        "--model",
        str(tiny_model_path),
        "--ray-address",
        ray_cluster.address,
        "--out",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    _assert_same_rows([json.loads(line) for line in out.read_text().splitlines()], expected)


def test_predict_dataset_reads_rows_of_paths_and_decoded_images(
    ray_cluster, forty_photos, tiny_model_path, monkeypatch
):
    import logging

    import ray

    from fer8.distributed.ray_data import predict_dataset

    expected = _rows_of_plain_predict(forty_photos, tiny_model_path)
    good = sorted(str(path) for path in (forty_photos / "part0").iterdir())
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    ray.init(address=ray_cluster.address, logging_level=logging.ERROR)
    try:
        by_path = predict_dataset(
            ray.data.from_items([{"path": p} for p in good]), tiny_model_path, concurrency=1
        ).take_all()
        decoded = predict_dataset(
            ray.data.read_images(good, include_paths=True, mode="RGB"),
            tiny_model_path,
            concurrency=1,
        ).take_all()
    finally:
        ray.shutdown()
    want = {key: row for key, row in expected.items() if key[0] in good}
    _assert_same_rows(by_path, want)
    _assert_same_rows(decoded, want)


def _actor_pids(root: int) -> list[int]:
    """The fer8 actors among the descendants of process ``root``."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parents[int(pid)] = int(
                Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            )
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    actors = []
    for pid in found:
        try:
            if b"_PredictBatch" in Path(f"/proc/{pid}/cmdline").read_bytes():
                actors.append(pid)
        except OSError:
            continue
    return actors


def test_a_worker_that_dies_loses_and_doubles_no_row(
    ray_cluster, forty_photos, tiny_model_path, tmp_path, monkeypatch
):
    """An actor killed when the first rows arrive, while batches are in flight: Ray
    restarts it and reruns its batch, and the file still has every row exactly once."""
    import logging

    import ray

    from fer8.distributed.ray_data import predict_files

    expected = _rows_of_plain_predict(forty_photos, tiny_model_path)
    killed: list[int] = []

    def kill_an_actor(row: dict) -> None:
        if not killed:
            pid = _actor_pids(ray_cluster.pid)[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    ray.init(address=ray_cluster.address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        failed = predict_files(
            list_inputs([str(forty_photos)]),
            tmp_path / "rows.parquet",
            tiny_model_path,
            on_image=kill_an_actor,
            images_per_batch=2,
        )
    finally:
        ray.shutdown()
    assert killed and failed == 3
    _assert_same_rows(pq.read_table(tmp_path / "rows.parquet").to_pylist(), expected)


def test_the_time_left_starts_when_the_actors_send_rows(
    ray_cluster, forty_photos, tiny_model_path, tmp_path, monkeypatch
):
    """``on_start`` comes after the rows of files found missing (no cluster needed for
    them) and before the cluster's first: a progress bar times the rest from there."""
    import logging

    import ray

    from fer8.distributed.ray_data import predict_files

    events: list[str] = []
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    ray.init(address=ray_cluster.address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        files = list_inputs([str(forty_photos / "part0")]) + list_inputs(
            [str(forty_photos / "part1")]
        )
        missing = list_inputs([str(forty_photos / "part2")])[0]
        missing = type(missing)(missing.path + ".gone", missing.source + ".gone")
        predict_files(
            [missing, *files],
            tmp_path / "rows.jsonl",
            tiny_model_path,
            on_image=lambda row: events.append(row["error"] or "row"),
            on_start=lambda: events.append("start"),
        )
    finally:
        ray.shutdown()
    assert events[:2] == ["no such file", "start"]
    assert events[2:] == ["row"] * len(files)


def test_on_a_terminal_only_fer8_speaks(ray_cluster, forty_photos, tiny_model_path, tmp_path):
    """stderr on a terminal: the bar, and each unreadable file on a line of its own; none
    of Ray's lines (its C++ core's error about Ray Data's actor arguments was one)."""
    from terminal import run_with_stderr_on_a_terminal, screen

    code, written = run_with_stderr_on_a_terminal(
        [
            "predict",
            str(forty_photos),
            "--model",
            str(tiny_model_path),
            "--engine",
            "ray",
            "--ray-address",
            ray_cluster.address,
            "--out",
            str(tmp_path / "rows.parquet"),
        ],
        stdout=tmp_path / "stdout",
        env={**os.environ, **RAY_ENV},
    )
    assert code == 1
    lines = screen(written)
    named = sorted(line.split(": ")[1] for line in lines[:-1])
    assert named == [
        str(forty_photos / name) for name in ("empty.jpg", "notes.png", "truncated.jpg")
    ], lines
    assert all(line.startswith("fer8: ") for line in lines[:-1]), lines
    assert lines[-1].startswith("predict") and lines[-1].endswith("100%")
    assert (tmp_path / "stdout").read_bytes() == b""


def test_connect_hands_ray_init_the_log_level(monkeypatch):
    """ray.init sets the level of Ray's loggers itself: at WARNING, a local instance's
    token notice was printed whatever fer8 had set before."""
    import logging

    import ray

    from fer8.distributed import ray_data

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv("RAY_BACKEND_LOG_LEVEL", "")  # so that it is unset again after
    monkeypatch.delenv("RAY_BACKEND_LOG_LEVEL")
    ray_data.connect(None, ray_log_level=logging.ERROR, quiet_core=True)
    assert calls[0]["logging_level"] == logging.ERROR
    assert os.environ["RAY_BACKEND_LOG_LEVEL"] == "fatal"
    assert logging.getLogger("ray").level == logging.ERROR


def test_usage_errors_need_no_cluster(forty_photos, tmp_path, tiny_model_path):
    def run(*args):
        return CliRunner().invoke(
            cli, ["predict", str(forty_photos), "--model", str(tiny_model_path), *args]
        )

    assert "give --out" in run("--engine", "ray").output
    assert ".parquet or .jsonl" in run("--engine", "ray", "--out", tmp_path / "x.csv").output
    assert "--engine ray" in run("--out", tmp_path / "x.parquet").output
    assert run("--engine", "ray", "--out", tmp_path / "x.parquet", "--format", "csv").exit_code == 2
    missing = run("--engine", "ray", "--out", tmp_path / "x.parquet", "--model", "nope")
    assert missing.exit_code == 2 and not (tmp_path / "x.parquet").exists()


def test_without_the_extra_the_install_command_is_named(forty_photos, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a)
    )
    result = CliRunner().invoke(
        cli, ["predict", str(forty_photos), "--engine", "ray", "--out", str(tmp_path / "x.parquet")]
    )
    assert result.exit_code == 2
    assert "needs the ray extra (ray is missing)" in result.output
    assert "pip install" in result.output and "[ray]" in result.output


def test_list_inputs_follows_plain_predict(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.jpg", "a/b/2.PNG", "a/notes.txt", "a/b/3.webp"):
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    files = list_inputs(["a", "a/notes.txt", "a/b/*.PNG", f"file://{tmp_path}/a/b"])
    assert [f.source for f in files] == [
        "a/1.jpg",
        "a/b/2.PNG",
        "a/b/3.webp",
        "a/notes.txt",
        "a/b/2.PNG",
        f"{tmp_path}/a/b/2.PNG",
        f"{tmp_path}/a/b/3.webp",
    ]
    assert all(f.path == str(tmp_path / f.source) for f in files[:5])
    with pytest.raises(FileNotFoundError, match="no image files"):
        list_inputs(["a/*.gif"])


def test_ray_refuses_a_video_before_it_starts_and_leaves_out_those_of_a_folder(
    tmp_path, monkeypatch, caplog, astronaut
):
    """A video was "not an image" (an error row) after the cluster had started."""
    from videos import blank, write_video

    save(astronaut, tmp_path / "clips" / "photo.png")
    video = write_video(tmp_path / "clips" / "clip.mp4", [blank() for _ in range(3)])
    result = CliRunner().invoke(
        cli, ["predict", str(video), "--engine", "ray", "--out", str(tmp_path / "x.parquet")]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"fer8: error: {video}: is a video: --engine ray reads photos only; "
        "predict videos without it\n"
    )
    assert not (tmp_path / "x.parquet").exists()
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        files = list_inputs(["clips", "clips/*"])
    assert [f.source for f in files] == ["clips/photo.png", "clips/photo.png"]
    assert [r.getMessage() for r in caplog.records] == [
        "clips: left out 1 video (--engine ray reads photos only; predict videos without it)",
        "clips/*: left out 1 video (--engine ray reads photos only; predict videos without it)",
    ]


def test_a_failed_run_leaves_no_results_file(tmp_path):
    face = Face(Box(1, 2, 3, 4), "happy", 0.9, dict.fromkeys(LABELS, 0.1) | {"happy": 0.9})
    table = rows_table([ImageResult("a.jpg", (face,)), ImageResult("b.jpg", (), "empty")], LABELS)
    assert table.to_pylist() == face_rows(ImageResult("a.jpg", (face,)), LABELS) + face_rows(
        ImageResult("b.jpg", (), "empty"), LABELS
    )
    writer = RowFileWriter(tmp_path / "out.parquet", LABELS)
    writer.write(table)
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    writer = RowFileWriter(tmp_path / "out.parquet", LABELS)
    writer.write(table)
    assert not (tmp_path / "out.parquet").exists()  # only once every row is in
    writer.close()
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == table.to_pylist()


def test_a_ray_run_is_checked_before_any_cluster(tmp_path, monkeypatch, tiny_model_path):
    """RayPrediction.prepare makes the checks of ``fer8 predict --engine ray`` (the
    output's extension, the extra, the model, the inputs) without joining a cluster."""
    import importlib.util

    from videos import blank, write_video

    from fer8.distributed.job import RayPrediction
    from fer8.errors import InvalidVideoError, ModelNotFoundError

    photos = str(EXAMPLES)
    job = RayPrediction.prepare([photos], tmp_path / "rows.parquet", str(tiny_model_path))
    assert [f.source for f in job.files] == [
        str(EXAMPLES / "astronaut.png"),
        str(EXAMPLES / "grace_hopper.jpg"),
    ]
    assert job.out == tmp_path / "rows.parquet" and not job.out.exists()
    with pytest.raises(ValueError, match=".parquet or .jsonl"):
        RayPrediction.prepare([photos], tmp_path / "rows.csv")
    with pytest.raises(ModelNotFoundError):
        RayPrediction.prepare([photos], tmp_path / "rows.jsonl", "nope")
    video = write_video(tmp_path / "clip.mp4", [blank() for _ in range(3)])
    with pytest.raises(InvalidVideoError, match="is a video"):
        RayPrediction.prepare([str(video)], tmp_path / "rows.jsonl")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyarrow" else find_spec(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match=r"ray extra \(pyarrow is missing\)") as missing:
        RayPrediction.prepare([photos], tmp_path / "rows.jsonl", "nope")  # before the model
    assert missing.value.name == "pyarrow"
