#!/usr/bin/env python3
"""Teach a model *contempt* with ``fer8 train --keep-classes`` and measure what it costs.

FER+ gives contempt as a majority vote that no fer8 class has: Train has about 170 such
faces (48 px gray crops), Valid about 27. For each size (25, 50 and all of Train's,
drawn with a fixed seed), the script copies them into ``WORK/nN/contempt/``, runs
``fer8 train --data WORK/nN --keep-classes --out WORK/runN`` with a cold crop cache
(its own, so the minutes include framing the photos), and reports:

* minutes, from the command's start to its end (the model file written);
* contempt's recall on FER+ Valid's contempt faces, and its precision over all of
  FER+ Valid (contempt and the seven classes' faces);
* the seven classes' accuracy on FER+ Valid, ExpW@val, SFEW@val and JAFFE, before
  (the start model) and after (the new model), on the faces of those seven classes.

The evaluation faces are framed as ``fer8 evaluate`` frames them (the same crops:
:func:`fer8.training.crops.prepare_crops`, photos through detection, a labelled box
kept) and their pooled features are computed once with the start model; since
``--keep-classes`` changes only the classifier's dense layer, each model's answers
are those features times its head, read from its file (checked against the file run by
ONNX Runtime on a sample of faces). ``--size 200`` adds a timing run on 200 photos
(Train's contempt faces and mirrored copies of some of them).

    python scripts/bench_new_class.py --data-root ../shared --work /tmp/fer8-contempt \\
        [--model src/fer8/models/default.fer8] [--size 25 --size 50 --size all --size 200]
        [--max-old-drop 0.5 --max-old-drop 2]  (a run per size and value)
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import fer8
from fer8.models.classifier_head import head_weights
from fer8.models.feature_bank import pooled_features
from fer8.models.modelfile import read_graph, read_network_config
from fer8.training.crops import prepare_crops
from fer8.training.dataset_layouts import FERPLUS_COLUMNS
from fer8.training.datasets import Sample, parse_source

logger = logging.getLogger("bench_new_class")

VALIDATION = ("FER2013Valid", "expw@val", "sfew/Train@val", "jaffe")


def contempt_faces(ferplus: Path) -> list[Path]:
    """FER+ faces whose majority vote is contempt (ties to the earlier column, as
    :func:`fer8.training.dataset_layouts.read_ferplus` breaks them)."""
    faces = []
    with (ferplus / "label.csv").open(newline="") as handle:
        for row in csv.reader(handle):
            if row and FERPLUS_COLUMNS[int(np.argmax([float(v) for v in row[2:12]]))] == (
                "contempt"
            ):
                if (ferplus / row[0]).is_file():
                    faces.append(ferplus / row[0])
    return faces


def class_folder(work: Path, size: str, faces: list[Path]) -> Path:
    """WORK/n<size>/contempt/ with ``size`` of the faces (200: all, and mirrored
    copies of the first ones to make 200)."""
    from PIL import Image, ImageOps

    root = work / f"n{size}"
    folder = root / "contempt"
    shutil.rmtree(root, ignore_errors=True)
    folder.mkdir(parents=True)
    if size == "all":
        chosen = faces
    elif size == "200":
        chosen = faces
        for face in faces[: 200 - len(faces)]:
            ImageOps.mirror(Image.open(face)).save(folder / f"mirrored-{face.name}")
    else:
        picks = np.random.default_rng(0).choice(len(faces), int(size), replace=False)
        chosen = [faces[i] for i in sorted(picks)]
    for face in chosen:
        shutil.copyfile(face, folder / face.name)
    return root


def evaluation_features(model_path: Path, data_root: Path, work: Path) -> dict[str, dict]:
    """Per validation set: pooled features and labels of its faces (cached in WORK)."""
    cached = work / "evaluation.npz"
    if cached.exists():
        with np.load(cached, allow_pickle=False) as stored:
            out: dict[str, dict] = {}
            for key in stored.files:
                name, part = key.rsplit(":", 1)
                out.setdefault(name, {})[part] = stored[key]
            return out
    model = fer8.load_model(model_path)
    sets: dict[str, list[Sample]] = {}
    for name in VALIDATION:
        sets[name] = list(parse_source(data_root / name).read().samples)
    sets["FER2013Valid"] += [
        Sample(str(path), "contempt", True) for path in contempt_faces(data_root / "FER2013Valid")
    ]
    out = {}
    for name, samples in sets.items():
        started = time.monotonic()
        prepared = prepare_crops(
            samples,
            work / "eval-crops",
            image_size=model.spec.input_size,
            mask=model.spec.preprocessing.mask,
        )
        features = pooled_features(model, prepared.rgb())
        labels = np.array([samples[i].label for i in prepared.kept])
        # A face not found counts as wrong, as fer8 evaluate counts it.
        missing = np.array(
            [s.label for i, s in enumerate(samples) if i not in set(prepared.kept.tolist())]
        )
        out[name] = {"features": features, "labels": labels, "missing": missing}
        logger.info(
            "%s: %d faces (%d not found) in %.0f s",
            name,
            len(labels),
            len(missing),
            time.monotonic() - started,
        )
    np.savez(
        cached,
        **{f"{name}:{part}": value for name, parts in out.items() for part, value in parts.items()},
    )
    return out


def answers(model_path: Path, features: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each face's class index by the model file's head, and the model's labels."""
    kernel, bias = head_weights(read_graph(model_path), read_network_config(model_path) or {})
    return (features @ kernel + bias).argmax(1), fer8.load_model(model_path).labels


def figures(model_path: Path, evaluation: dict[str, dict], seven: tuple[str, ...]) -> dict:
    out = {}
    for name, data in evaluation.items():
        predicted, labels = answers(model_path, data["features"])
        names = np.array(labels)[predicted]
        old = np.isin(data["labels"], seven)
        lost = int(np.isin(data["missing"], seven).sum())
        right = int((names[old] == data["labels"][old]).sum())
        row = {"accuracy": right / (int(old.sum()) + lost), "faces": int(old.sum()) + lost}
        if "contempt" in labels:
            said = names == "contempt"
            truly = data["labels"] == "contempt"
            row["contempt_said"] = int(said.sum())
            if truly.any():
                row["contempt_faces"] = int(truly.sum() + (data["missing"] == "contempt").sum())
                row["contempt_recall"] = int((said & truly).sum()) / row["contempt_faces"]
                row["contempt_precision"] = (
                    int((said & truly).sum()) / int(said.sum()) if said.any() else None
                )
        out[name] = row
    return out


def check_runtime(model_path: Path, data_root: Path, evaluation: dict) -> float:
    """Share of 64 FER+ Valid faces on which the model file run by ONNX Runtime
    (fer8.classify on the same crops) agrees with the head computed from features."""
    model = fer8.load_model(model_path)
    samples = list(parse_source(data_root / "FER2013Valid").read().samples)[:64]
    prepared = prepare_crops(
        samples, None, image_size=model.spec.input_size, mask=model.spec.preprocessing.mask
    )
    from fer8.pipeline.classification import classify

    by_runtime = classify(prepared.rgb(), model).argmax(1)
    by_head, _ = answers(model_path, pooled_features(model, prepared.rgb()))
    return float((by_runtime == by_head).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fer8-contempt"))
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--size", action="append", choices=["25", "50", "all", "200"])
    parser.add_argument(
        "--max-old-drop",
        type=float,
        action="append",
        help="--keep-classes' --max-old-drop; repeat for a run of each size at each",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model_path = args.model or Path(fer8.__file__).parent / "models" / "default.fer8"
    args.work.mkdir(parents=True, exist_ok=True)

    faces = contempt_faces(args.data_root / "FER2013Train")
    logger.info("FER+ Train: %d contempt faces", len(faces))
    evaluation = evaluation_features(model_path, args.data_root, args.work)
    seven = fer8.load_model(model_path).labels
    results = {"start": figures(model_path, evaluation, seven), "runs": {}}
    drops = args.max_old_drop or [None]
    for size, drop in [(size, drop) for size in args.size or ["25", "50", "all"] for drop in drops]:
        folder = class_folder(args.work, size, faces)
        name = size if drop is None else f"{size}, max drop {drop:g}"
        run = args.work / (f"run{size}" if drop is None else f"run{size}-drop{drop:g}")
        shutil.rmtree(run, ignore_errors=True)
        command = [sys.executable, "-m", "fer8", "train", "--data", str(folder)]
        command += ["--keep-classes", "--out", str(run), "--cache", str(run / "crops")]
        command += ["--init-model", str(model_path)]
        command += [] if drop is None else ["--max-old-drop", str(drop)]
        started = time.monotonic()
        subprocess.run(command, check=True, env=os.environ.copy())
        minutes = (time.monotonic() - started) / 60
        photos = len(list((folder / "contempt").iterdir()))
        results["runs"][name] = {
            "photos": photos,
            "minutes": round(minutes, 2),
            "figures": figures(run / "model.fer8", evaluation, seven),
            "report": json.loads((run / "report.json").read_text()),
        }
        logger.info("%s photos: %.2f min", photos, minutes)
    last = run / "model.fer8"
    results["runtime_agreement"] = check_runtime(last, args.data_root, evaluation)
    (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(results: dict) -> None:
    start = results["start"]
    header = "| run | photos | minutes | contempt recall | contempt precision | "
    header += " | ".join(f"{name} acc." for name in start) + " |"
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    cells = [f"{100 * start[name]['accuracy']:.1f}" for name in start]
    print("| start | | | | | " + " | ".join(cells) + " |")
    for size, run in results["runs"].items():
        rows = run["figures"]
        valid = rows["FER2013Valid"]
        precision = valid.get("contempt_precision")
        cells = [
            f"{100 * rows[name]['accuracy']:.1f} ({100 * (rows[name]['accuracy'] - start[name]['accuracy']):+.1f})"
            for name in rows
        ]
        print(
            f"| {size} | {run['photos']} | {run['minutes']:.1f} | "
            f"{100 * valid['contempt_recall']:.0f}% of {valid['contempt_faces']} | "
            f"{'n/a' if precision is None else f'{100 * precision:.0f}%'} "
            f"({valid['contempt_said']} said) | " + " | ".join(cells) + " |"
        )
    print(f"runtime agrees with the head on {100 * results['runtime_agreement']:.0f}% of 64 faces")


if __name__ == "__main__":
    main()
