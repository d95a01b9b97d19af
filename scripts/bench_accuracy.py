#!/usr/bin/env python3
"""Accuracy of a fer8 model against the `fer` package, on the same images in the same run.

* **FER+ Valid** (majority labels, 7 classes): pre-cropped 48x48 faces. fer8 frames
  them with ``face_from_crop`` (as ``fer8 predict --no-detect`` does); `fer` gets the
  whole crop as its face box with ``offsets=(0, 0)``.
* **JAFFE** (213 whole photos, never trained on): each tool's full pipeline, detection
  included; the largest face counts, and a photo without a face counts as wrong in
  ``accuracy_all``.

The peer runs in its own environment (``scripts/setup_fer_peer.sh`` makes ``.venv-fer``)
through ``scripts/peer_fer.py``.

    python scripts/bench_accuracy.py --ferplus DIR/FER2013Valid --jaffe DIR/jaffe \\
        [--model PATH] [--peer-python .venv-fer/bin/python | --no-peer] [--flip] [--out DIR]

``--flip`` also scores fer8 with each face averaged with its mirror image
(``fer8 predict --flip``).

With ``--out`` it writes ``accuracy.json`` and each dataset's fer8 confusion matrix picture.
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


def run_peer(python: str, samples) -> list[str | None]:
    """Labels from the `fer` package for each sample (None: no face / unreadable)."""
    with tempfile.TemporaryDirectory() as tmp:
        requests = []
        for i, sample in enumerate(samples):
            path = sample.source
            if sample.pixels is not None:  # fer2013.csv rows: give the peer a file too
                import cv2

                path = str(Path(tmp) / f"{i}.png")
                cv2.imwrite(path, sample.load()[:, :, 0])
            requests.append(json.dumps({"path": path, "cropped": sample.cropped}))
        result = subprocess.run([python, str(ROOT / "scripts" / "peer_fer.py")],
                                input="\n".join(requests) + "\n", capture_output=True,
                                text=True, check=True)
    answers = [json.loads(line)["label"] for line in result.stdout.splitlines()
               if line.startswith("{")]
    if len(answers) != len(samples):
        raise RuntimeError(f"peer answered {len(answers)} of {len(samples)} images:\n"
                           f"{result.stderr[-2000:]}")
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferplus", type=Path, help="FER+ FER2013Valid folder")
    parser.add_argument("--jaffe", type=Path, help="JAFFE folder (class folders of photos)")
    parser.add_argument("--model", help="fer8 model (default: the bundled one)")
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-fer" / "bin" / "python"))
    parser.add_argument("--no-peer", action="store_true", help="measure fer8 only")
    parser.add_argument("--flip", action="store_true",
                        help="also measure fer8 with mirrored-face averaging (--flip)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import fer8
    from fer8.datasets import read_dataset
    from fer8.evaluation import confusion, evaluate
    from fer8.plots import plot_confusion

    predictor = fer8.Predictor(args.model)
    flipped = fer8.Predictor(predictor.model, flip=True, warmup=False) if args.flip else None
    report = {"model": args.model or "bundled default",
              "model_name": predictor.model.spec.name, "datasets": {}}
    rows = []
    for name, path, cropped in (("FER+ Valid", args.ferplus, None),
                                ("JAFFE", args.jaffe, False)):
        if path is None:
            continue
        data = read_dataset(path, cropped=cropped)
        data = replace(data, samples=tuple(s for s in data.samples
                                           if s.label in predictor.labels))
        ours = evaluate(predictor, data)
        entry = {"n": ours.n, "fer8": ours.to_dict()}
        row = [name, ours.n, f"{ours.accuracy_all:.1%}", f"{ours.macro_f1:.3f}",
               str(ours.no_face)]
        if flipped is not None:
            mirrored = evaluate(flipped, data)
            entry["fer8_flip"] = mirrored.to_dict()
            row += [f"{mirrored.accuracy_all:.1%}", f"{mirrored.macro_f1:.3f}"]
        if not args.no_peer:
            truth = [s.label for s in data.samples]
            peer = confusion(truth, run_peer(args.peer_python, data.samples), predictor.labels)
            entry["fer"] = peer.to_dict()
            row += [f"{peer.accuracy_all:.1%}", f"{peer.macro_f1:.3f}", str(peer.no_face)]
        report["datasets"][name] = entry
        rows.append(row)
        if args.out:
            slug = name.lower().replace("+", "plus").replace(" ", "_")
            plot_confusion(ours, args.out / f"confusion_{slug}.png")

    header = ["data", "images", "fer8 accuracy", "fer8 macro-F1", "fer8 no face"]
    if flipped is not None:
        header += ["fer8 --flip accuracy", "fer8 --flip macro-F1"]
    if not args.no_peer:
        header += ["fer accuracy", "fer macro-F1", "fer no face"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    for name, entry in report["datasets"].items():
        per_class = entry["fer8"]["per_class"]
        print(f"\n{name}, fer8 per class (precision / recall / F1 / support):")
        for label, figures in per_class.items():
            print(f"  {label:<10} {figures['precision']:.3f} / {figures['recall']:.3f} / "
                  f"{figures['f1']:.3f} / {figures['support']}")
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
