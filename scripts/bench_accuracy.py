#!/usr/bin/env python3
"""Accuracy of fer8 models against the `fer` package and OpenCV Zoo's expression model,
on several datasets in one run.

Each dataset is a ``fer8 evaluate`` spec (``PATH[@train|@val]``). Every model and the
peer see the same images:

* pre-cropped faces (FER+): fer8 frames them with ``face_from_crop`` (as ``fer8 predict
  --no-detect`` does); `fer` gets the whole crop as its face box with ``offsets=(0, 0)``;
* photos (JAFFE, SFEW, ExpW): each tool's full pipeline, detection included. The
  largest face counts, or where the dataset labels a face's box (ExpW) the detected
  face that overlaps it at IoU >= 0.3; a face not found counts as wrong. For labelled
  boxes a second row gives each tool's answer on the labelled box itself.

The `fer` peer runs in its own environment (``scripts/setup_fer_peer.sh`` makes
``.venv-fer``) through ``scripts/peer_fer.py``. OpenCV Zoo's model
(``--zoo-model``; never committed: get ``facial_expression_recognition_mobilefacenet_2022july_int8.onnx``
from github.com/opencv/opencv_zoo, ``models/facial_expression_recognition/``, or here
``../shared/weights/opencv_zoo_fer_mobilefacenet_int8.onnx``) runs in fer8's environment
through ``scripts/peer_zoo.py``, which frames faces as OpenCV Zoo does (YuNet's five
keypoints on the ArcFace template) on the faces fer8's YuNet finds.

    python scripts/bench_accuracy.py --data DIR/FER2013Valid --data DIR/expw@val \\
        --data DIR/sfew/Train@val --data DIR/jaffe \\
        [--model PATH ...] [--peer-python .venv-fer/bin/python | --no-peer] \\
        [--zoo-model PATH] [--out DIR]

Each cell is accuracy / macro-F1 / ECE (expected calibration error, 15 bins; none for
`fer`, whose script returns labels only). With ``--out`` it writes ``accuracy.json``
(every figure, per class too) and each tool's confusion-matrix pictures and reliability
diagrams.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench_accuracy")


def run_peer(python: str, samples) -> list[tuple[str | None, str | None]]:
    """(label, label on the labelled box) from the `fer` package for each sample
    (None: no face / unreadable)."""
    with tempfile.TemporaryDirectory() as tmp:
        requests = []
        for i, sample in enumerate(samples):
            path = sample.source
            if sample.pixels is not None:  # fer2013.csv rows: give the peer a file too
                import cv2

                path = str(Path(tmp) / f"{i}.png")
                cv2.imwrite(path, sample.load()[:, :, 0])
            box = sample.box.to_list() if sample.box is not None else None
            requests.append(json.dumps({"path": path, "cropped": sample.cropped, "box": box}))
        result = subprocess.run(
            [python, str(ROOT / "scripts" / "peer_fer.py")],
            input="\n".join(requests) + "\n",
            capture_output=True,
            text=True,
            check=True,
        )
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if len(answers) != len(samples):
        raise RuntimeError(
            f"peer answered {len(answers)} of {len(samples)} images:\n{result.stderr[-2000:]}"
        )
    return [(a["label"], a.get("box_label")) for a in answers]


def run_zoo(path: str, samples) -> list[tuple[object | None, object | None]]:
    """(answer, answer on the labelled box) of OpenCV Zoo's model for each sample (None:
    no face found, or unreadable); see ``scripts/peer_zoo.py`` for the framing."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from peer_zoo import ZooModel

    from fer8.errors import Fer8Error
    from fer8.pipeline.detection.yunet import detect_faces
    from fer8.pipeline.faces import match

    zoo = ZooModel(path)
    answers = []
    photos: dict[str, tuple] = {}  # source -> (image, detections), for photos of several faces
    for sample in samples:
        try:
            image = photos[sample.source][0] if sample.source in photos else sample.load()
        except (Fer8Error, OSError) as exc:
            logger.warning("%s: %s", sample.source, exc)
            answers.append((None, None))
            continue
        if sample.cropped:
            answers.append((zoo.on_crop(image), None))
            continue
        if sample.source not in photos:
            photos = {sample.source: (image, detect_faces(image))}
        detections = photos[sample.source][1]
        if sample.box is None:
            found = detections[0] if detections else None
            answers.append((zoo.on_keypoints(image, found.keypoints) if found else None, None))
            continue
        by_box = {d.box: d for d in detections}
        matched = match(sample.box, list(by_box))
        detected = (
            zoo.on_keypoints(image, by_box[matched].keypoints) if matched is not None else None
        )
        box = sample.box
        margin_x, margin_y = round(0.1 * box.w), round(0.1 * box.h)
        crop = image[
            max(0, box.y - margin_y) : box.y + box.h + margin_y,
            max(0, box.x - margin_x) : box.x + box.w + margin_x,
        ]
        answers.append((detected, detected if detected is not None else zoo.on_crop(crop)))
    return answers


def zoo_evaluation(truth, answers, labels):
    """An Evaluation of the zoo model's answers, with their calibration."""
    from fer8.models.calibration import Reliability
    from fer8.training.evaluation import confusion

    found = [(t, a) for t, a in zip(truth, answers) if a is not None]
    reliability = Reliability.from_predictions(
        [float(a.probabilities.max()) for _, a in found], [a.label == t for t, a in found]
    )
    return replace(
        confusion(truth, [a.label if a else None for a in answers], labels), reliability=reliability
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, metavar="PATH[@SPLIT]")
    parser.add_argument(
        "--model", action="append", help="fer8 model; repeat to compare (default: the bundled one)"
    )
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-fer" / "bin" / "python"))
    parser.add_argument("--no-peer", action="store_true", help="leave out the `fer` package")
    parser.add_argument(
        "--zoo-model",
        metavar="PATH",
        help="OpenCV Zoo's facial_expression_recognition_mobilefacenet ONNX "
        "file, to compare with too (not part of fer8; see above)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import fer8
    from fer8.training.datasets import parse_source
    from fer8.training.evaluation import confusion, evaluate, evaluate_labelled_boxes
    from fer8.training.plots import plot_confusion, plot_reliability

    models = args.model or [None]
    predictors = [fer8.Predictor(model) for model in models]
    names = [Path(m).stem if m else "bundled" for m in models]
    report: dict = {"models": [m or "bundled default" for m in models], "datasets": []}
    rows = []
    for spec in args.data:
        source = parse_source(spec)
        data = source.read(fer2013_split="val")
        labels = set(predictors[0].labels)
        data = replace(data, samples=tuple(s for s in data.samples if s.label in labels))
        framings = ["detected"] + (["labelled boxes"] if any(s.box for s in data.samples) else [])
        results: dict[str, dict] = {framing: {} for framing in framings}
        for name, predictor in zip(names, predictors):
            logger.info("%s: %s", source.name, name)
            results["detected"][name] = evaluate(predictor, data)
            if "labelled boxes" in results:
                results["labelled boxes"][name] = evaluate_labelled_boxes(predictor, data)
        if args.zoo_model:
            logger.info("%s: OpenCV Zoo's model", source.name)
            answers = run_zoo(args.zoo_model, data.samples)
            truth = [s.label for s in data.samples]
            results["detected"]["zoo"] = zoo_evaluation(truth, [a for a, _ in answers], labels)
            if "labelled boxes" in results:
                results["labelled boxes"]["zoo"] = zoo_evaluation(
                    truth, [b for _, b in answers], labels
                )
            aligned = sum(a.aligned for a, _ in answers if a is not None)
            logger.info(
                "zoo: %d of %d faces framed from YuNet's keypoints",
                aligned,
                sum(a is not None for a, _ in answers),
            )
        if not args.no_peer:
            logger.info("%s: the fer package", source.name)
            answers = run_peer(args.peer_python, data.samples)
            truth = [s.label for s in data.samples]
            results["detected"]["fer"] = confusion(truth, [a for a, _ in answers], labels)
            if "labelled boxes" in results:
                results["labelled boxes"]["fer"] = confusion(truth, [b for _, b in answers], labels)
        for framing, by_tool in results.items():
            rows.append(
                [
                    source.name,
                    framing,
                    next(iter(by_tool.values())).n,
                    *(
                        f"{e.accuracy_all:.1%} / {e.macro_f1:.3f} / "
                        + (f"{e.ece:.1%}" if e.ece is not None else "-")
                        for e in by_tool.values()
                    ),
                ]
            )
            report["datasets"].append(
                {
                    "dataset": source.name,
                    "faces": framing,
                    **{tool: e.to_dict() for tool, e in by_tool.items()},
                }
            )
            if args.out:
                for tool, evaluation in by_tool.items():
                    slug = f"{source.name}_{framing}_{tool}".replace(" ", "_")
                    plot_confusion(
                        evaluation,
                        args.out / f"confusion_{slug}.png",
                        title=f"{tool} on {source.name} ({framing})",
                    )
                    if evaluation.reliability is not None:
                        plot_reliability(
                            evaluation.reliability,
                            args.out / f"reliability_{slug}.png",
                            title=f"{tool} on {source.name} ({framing})",
                        )
    tools = names + (["zoo"] if args.zoo_model else []) + ([] if args.no_peer else ["fer"])
    header = ["data", "faces", "n", *(f"{t}: accuracy / macro-F1 / ECE" for t in tools)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "accuracy.json").write_text(json.dumps(report, indent=2, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    main()
