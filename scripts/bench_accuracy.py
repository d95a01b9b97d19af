#!/usr/bin/env python3
"""Accuracy of fer8 models against the `fer` package, on several datasets in one run.

Each dataset is a ``fer8 evaluate`` spec (``PATH[@train|@val]``). Every model and the
peer see the same images:

* pre-cropped faces (FER+): fer8 frames them with ``face_from_crop`` (as ``fer8 predict
  --no-detect`` does); `fer` gets the whole crop as its face box with ``offsets=(0, 0)``;
* photos (JAFFE, SFEW, ExpW): each tool's full pipeline, detection included. The
  largest face counts, or where the dataset labels a face's box (ExpW) the detected
  face that overlaps it at IoU >= 0.3; a face not found counts as wrong. For labelled
  boxes a second row gives each tool's answer on the labelled box itself.

The peer runs in its own environment (``scripts/setup_fer_peer.sh`` makes ``.venv-fer``)
through ``scripts/peer_fer.py``.

    python scripts/bench_accuracy.py --data DIR/FER2013Valid --data DIR/expw@val \\
        --data DIR/sfew/Train@val --data DIR/jaffe \\
        [--model PATH ...] [--peer-python .venv-fer/bin/python | --no-peer] [--out DIR]

With ``--out`` it writes ``accuracy.json`` (every figure, per class too) and each
model's confusion-matrix pictures.
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
        result = subprocess.run([python, str(ROOT / "scripts" / "peer_fer.py")],
                                input="\n".join(requests) + "\n", capture_output=True,
                                text=True, check=True)
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if len(answers) != len(samples):
        raise RuntimeError(f"peer answered {len(answers)} of {len(samples)} images:\n"
                           f"{result.stderr[-2000:]}")
    return [(a["label"], a.get("box_label")) for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, metavar="PATH[@SPLIT]")
    parser.add_argument("--model", action="append", help="fer8 model; repeat to compare "
                        "(default: the bundled one)")
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-fer" / "bin" / "python"))
    parser.add_argument("--no-peer", action="store_true", help="measure fer8 only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import fer8
    from fer8.training.datasets import parse_source
    from fer8.training.evaluation import confusion, evaluate, evaluate_labelled_boxes
    from fer8.training.plots import plot_confusion

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
        if not args.no_peer:
            logger.info("%s: the fer package", source.name)
            answers = run_peer(args.peer_python, data.samples)
            truth = [s.label for s in data.samples]
            results["detected"]["fer"] = confusion(truth, [a for a, _ in answers], labels)
            if "labelled boxes" in results:
                results["labelled boxes"]["fer"] = confusion(
                    truth, [b for _, b in answers], labels)
        for framing, by_tool in results.items():
            rows.append([source.name, framing, next(iter(by_tool.values())).n,
                         *(f"{e.accuracy_all:.1%} / {e.macro_f1:.3f}" for e in by_tool.values())])
            report["datasets"].append({"dataset": source.name, "faces": framing,
                                       **{tool: e.to_dict() for tool, e in by_tool.items()}})
            if args.out:
                for tool, evaluation in by_tool.items():
                    slug = f"{source.name}_{framing}_{tool}".replace(" ", "_")
                    plot_confusion(evaluation, args.out / f"confusion_{slug}.png",
                                   title=f"{tool} on {source.name} ({framing})")
    tools = names + ([] if args.no_peer else ["fer"])
    header = ["data", "faces", "n", *(f"{t}: accuracy / macro-F1" for t in tools)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "accuracy.json").write_text(json.dumps(report, indent=2,
                                                           default=_plain) + "\n")


def _plain(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    main()
