"""``fer8 evaluate``: exact confusion matrix on a hand-built case, JSON shape, picture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_model_asset
from click.testing import CliRunner
from conftest import save

from fer8.cli import cli
from fer8.training.evaluation import confusion


@pytest.fixture(scope="module")
def brightness_model(tmp_path_factory):
    """A model whose answer is known: bright crops are 'happy', dark ones 'sad'
    (``tiny_model_asset.py``)."""
    return tiny_model_asset.copy_asset(
        "brightness", tmp_path_factory.mktemp("models") / "brightness.fer8"
    )


@pytest.fixture()
def labelled(tmp_path):
    bright, dark = np.full((48, 48, 3), 220, np.uint8), np.full((48, 48, 3), 20, np.uint8)
    files = {"happy": [bright, bright, dark], "Sadness": [dark, dark, bright], "NE": [bright]}
    for folder, images in files.items():
        for i, image in enumerate(images):
            save(image, tmp_path / folder / f"{i}.png")
    save(np.full((300, 300, 3), 220, np.uint8), tmp_path / "happy" / "no_face.png")  # a photo
    (tmp_path / "happy" / "corrupt.png").write_bytes(b"\x89PNG\r\n broken")
    return tmp_path


def test_confusion_matrix_and_figures_by_hand():
    truth = ["happy", "happy", "happy", "sad", "sad", "neutral", "sad"]
    guess = ["happy", "happy", "sad", "sad", "happy", "happy", None]
    evaluation = confusion(truth, guess, ("happy", "sad"))
    assert evaluation.labels == ("happy", "neutral", "sad")
    assert evaluation.counts.tolist() == [[2, 0, 1], [1, 0, 0], [1, 0, 1]]
    assert evaluation.no_face == 1 and evaluation.n == 7
    assert evaluation.accuracy == pytest.approx(3 / 6)
    assert evaluation.accuracy_all == pytest.approx(3 / 7)
    per_class = evaluation.per_class()
    assert per_class["happy"] == pytest.approx(
        {"precision": 2 / 4, "recall": 2 / 3, "f1": 4 / 7, "support": 3}
    )
    assert per_class["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_class["sad"] == pytest.approx(
        {"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2}
    )
    assert evaluation.macro_f1 == pytest.approx((4 / 7 + 0 + 1 / 2) / 3)


def test_evaluate_gives_the_exact_confusion_matrix(labelled, brightness_model, tmp_path, caplog):
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--data",
            str(labelled),
            "--model",
            str(brightness_model),
            "--format",
            "json",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1, result.output  # the corrupt file is an input failure
    report = json.loads(result.stdout)
    assert set(report) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix", "no_face", "n"}
    assert report["confusion_matrix"] == {
        "labels": ["happy", "neutral", "sad"],
        "counts": [[2, 0, 1], [1, 0, 0], [1, 0, 2]],
    }
    assert report["no_face"] == 1 and report["unreadable"] == 1 and report["n"] == 8
    assert report["accuracy"] == pytest.approx(4 / 7)
    assert report["per_class"]["sad"]["support"] == 3
    assert report["per_class"]["happy"]["precision"] == pytest.approx(2 / 4)
    # Certain answers (confidence 1), 4 of the 7 faces found right.
    assert report["ece"] == pytest.approx(3 / 7)
    assert report["reliability"]["counts"][-1] == 7
    assert "corrupt.png: not an image" in caplog.text
    assert (
        json.loads((out / "evaluation.json").read_text())["confusion_matrix"]
        == report["confusion_matrix"]
    )
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_table(labelled, brightness_model):
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--data",
            str(labelled),
            "--model",
            str(brightness_model),
            "--format",
            "table",
        ],
    )
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
    assert lines[1].split()[0] == "Happy"
    assert lines[-2].split() == [
        "dataset",
        "faces",
        "n",
        "accuracy",
        "macro-F1",
        "ECE",
        "missed",
        "unreadable",
    ]
    # 4 right of 8 labelled images: the photo without a face counts as wrong. Every
    # answer is certain (confidence 1), so the 7 faces found are 3/7 over-confident.
    assert lines[-1].split()[1:] == ["detected", "8", "50.0%", "0.413", "42.9%", "1", "1"]


def test_evaluate_shows_progress_when_asked(labelled, brightness_model):
    def evaluate(*args):
        return CliRunner().invoke(
            cli,
            [
                "evaluate",
                "--data",
                str(labelled),
                "--model",
                str(brightness_model),
                "--format",
                "json",
                *args,
            ],
        )

    label = f"evaluate {labelled.name}"
    assert label in evaluate("--progress").stderr  # off a terminal: the label, once
    assert label not in evaluate().stderr  # the default off a terminal
    assert label not in evaluate("--no-progress").stderr


@pytest.fixture()
def expw_layout(tmp_path_factory):
    """ExpW's layout: label.lst and Images/, one photo with two labelled faces (one of
    them where no detector finds a face) and one corrupt photo."""
    from fer8.pipeline.detection import detect

    folder = tmp_path_factory.mktemp("web") / "expw"
    photo = np.full((300, 600, 3), 220, np.uint8)  # bright: "happy" for brightness_model
    canvas = np.ascontiguousarray(photo)
    save(canvas, folder / "Images" / "happy_people_1.jpg")
    (folder / "Images" / "sad_people_2.jpg").write_bytes(b"not a jpeg")
    assert detect(canvas) == []
    lines = [
        "happy_people_1.jpg 0 10 10 110 110 50.0 3",  # happy, not found
        "happy_people_1.jpg 1 100 300 400 200 50.0 4",  # sad, not found
        "sad_people_2.jpg 0 10 10 60 60 50.0 4",
    ]  # unreadable
    (folder / "label.lst").write_text("\n".join(lines) + "\n")
    return folder


def test_labelled_boxes_and_the_full_pipeline_are_both_reported(
    expw_layout, labelled, brightness_model, tmp_path
):
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--data",
            str(expw_layout),
            "--data",
            str(labelled),
            "--model",
            str(brightness_model),
            "--format",
            "json",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1, result.output  # unreadable photos
    report = json.loads(result.stdout)
    assert report["detector"] == "yunet"
    rows = {(row["dataset"], row["faces"]): row for row in report["datasets"]}
    assert set(rows) == {
        ("expw", "detected"),
        ("expw", "labelled boxes"),
        (labelled.name, "detected"),
    }
    detected, boxes = rows["expw", "detected"], rows["expw", "labelled boxes"]
    # No detector finds a face on a blank photo: both labelled faces count as wrong.
    assert detected["n"] == 2 and detected["no_face"] == 2 and detected["accuracy_all"] == 0
    assert detected["unreadable"] == 1
    # On its labelled boxes the classifier still answers: both crops are bright.
    assert boxes["n"] == 2 and boxes["no_face"] == 0 and boxes["unreadable"] == 1
    assert boxes["confusion_matrix"]["counts"] == [[1, 0], [1, 0]]
    assert rows[labelled.name, "detected"]["n"] == 8
    pictures = sorted(p.name for p in out.glob("confusion_*.png"))
    assert pictures == sorted(
        [
            f"confusion_{labelled.name}_detected.png",
            "confusion_expw_detected.png",
            "confusion_expw_labelled_boxes.png",
        ]
    )
    assert sorted(p.name for p in out.glob("reliability_*.png")) == [
        name.replace("confusion_", "reliability_") for name in pictures
    ]
    table = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--data",
            f"{expw_layout}",
            "--model",
            str(brightness_model),
            "--format",
            "table",
        ],
    )
    assert [line.split()[:3] for line in table.stdout.splitlines()[-2:]] == [
        ["expw", "detected", "2"],
        ["expw", "labelled", "boxes"],
    ]


def test_a_detected_face_answers_for_the_labelled_box_it_overlaps(
    tmp_path, astronaut, hopper, brightness_model
):
    from fer8.pipeline.detection import detect
    from fer8.pipeline.predictor import Predictor
    from fer8.training.evaluation import evaluate, evaluate_labelled_boxes

    pair = np.ascontiguousarray(np.concatenate([astronaut, hopper[:512]], axis=1))
    save(pair, tmp_path / "expw" / "Images" / "pair.png")
    faces = detect(pair)
    assert len(faces) == 2
    lines = [
        f"pair.png {i} {b.y} {b.x} {b.x + b.w} {b.y + b.h} 1.0 {label}"
        for i, (b, label) in enumerate(zip(faces, (3, 4)))
    ]  # happy, sad
    (tmp_path / "expw" / "label.lst").write_text("\n".join(lines) + "\n")
    from fer8.training.datasets import read_dataset

    data = read_dataset(tmp_path / "expw")
    predictor = Predictor(brightness_model)
    probabilities = [predictor.predict(pair).faces[i].label for i in range(2)]
    truth = ["happy", "sad"]
    expected = sum(p == t for p, t in zip(probabilities, truth))
    for evaluation in (evaluate(predictor, data), evaluate_labelled_boxes(predictor, data)):
        assert evaluation.n == 2 and evaluation.no_face == 0
        assert int(np.trace(evaluation.counts)) == expected


def test_the_report_is_the_library_s_and_names_each_row_s_pictures(tmp_path):
    """fer8.training.evaluation_report makes evaluate's report and folder without the
    command: one row's entry with the model, several rows under ``datasets``."""
    from fer8.training.evaluation_report import (
        DETECTED,
        LABELLED_BOXES,
        DatasetEvaluation,
        evaluation_report,
        write_report,
    )

    evaluation = confusion(["happy", "sad"], ["happy", "happy"], ("happy", "sad"))
    one = DatasetEvaluation("raf@val", DETECTED, evaluation, {"images": 2})
    assert evaluation_report([one], "tiny", "yunet") == {**one.to_dict(), "model": "tiny"}
    assert one.to_dict()["dataset"] == "raf@val" and one.to_dict()["accuracy"] == 0.5
    boxes = DatasetEvaluation("expw", LABELLED_BOXES, evaluation, {"images": 2})
    report = evaluation_report([one, boxes], "tiny", "haar")
    assert report["model"] == "tiny" and report["detector"] == "haar"
    assert [row["faces"] for row in report["datasets"]] == ["detected", "labelled boxes"]
    path = write_report(tmp_path / "new", [one, boxes], report)
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    assert sorted(p.name for p in path.parent.glob("*.png")) == [
        "confusion_expw_labelled_boxes.png",
        "confusion_raf@val_detected.png",
    ]  # no reliability diagram: these answers came without probabilities
