"""Interpolate two fer8 models' weights: ``(1 - alpha) * START + alpha * TUNED``.

Fine-tuning a model on new kinds of faces costs it some of what it knew (the default
model lost FER+ accuracy when tuned on web photos and film stills). Averaging the
weights of the model before and after fine-tuning (Wortsman et al., "Robust fine-tuning
of zero-shot models", CVPR 2022, "WiSE-FT") keeps most of both, at no training cost.
Both models must have the same network (layers, shapes) and labels; the result takes
TUNED's spec, with ``alpha`` and START recorded in its metadata.

    python scripts/interpolate_models.py START.fer8 TUNED.fer8 OUT.fer8 --alpha 0.5

With ``--val`` it only scores several ``alpha`` values on validation sources, framed and
cached as training frames them (no detection), and writes nothing:

    python scripts/interpolate_models.py START.fer8 TUNED.fer8 --val DIR/FER2013Valid \\
        --val DIR/expw@val --val DIR/sfew/Train@val --alphas 0,0.3,0.5,0.7,1
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from fer8.models.modelfile import read_model_file
from fer8.training.keras_models import (
    keras_expression_model,
    load_keras_model,
    save_model,
)

logger = logging.getLogger("interpolate_models")


def interpolate(start: tuple, tuned_path: Path, alpha: float):
    """The Keras network of ``tuned_path`` with every weight moved to the blend with
    ``start`` (a Keras network and its spec)."""
    (start_network, start_spec), (network, spec) = start, load_keras_model(tuned_path)
    if start_spec.labels != spec.labels:
        raise SystemExit(f"labels differ: {start_spec.labels} and {spec.labels}")
    a, b = start_network.get_weights(), network.get_weights()
    if [w.shape for w in a] != [w.shape for w in b]:
        raise SystemExit("the two networks differ in their weights' shapes")
    network.set_weights([(1 - alpha) * x + alpha * y for x, y in zip(a, b)])
    return network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("start", type=Path)
    parser.add_argument("tuned", type=Path)
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--val", action="append", help="score these sources instead")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    start, tuned = load_keras_model(args.start), read_model_file(args.tuned)
    if args.val:
        score(start, args.tuned, args.val, [float(a) for a in args.alphas.split(",")])
        return
    if args.out is None:
        parser.error("OUT is needed unless --val is given")
    network = interpolate(start, args.tuned, args.alpha)
    metadata = {
        **tuned.spec.metadata,
        "interpolation": {
            "alpha": args.alpha,
            "start": args.start.name,
            "tuned": "/".join(args.tuned.parts[-2:]),
        },
    }
    save_model(network, replace(tuned.spec, metadata=metadata), args.out)
    logger.info("wrote %s (alpha %.2f)", args.out, args.alpha)


def score(start: tuple, tuned_path: Path, sources: list[str], alphas: list[float]) -> None:
    """Accuracy on each validation source, and their mean, for each ``alpha``."""
    from fer8.models.registry import cache_dir
    from fer8.pipeline.classification import classify
    from fer8.training.crops import prepare_crops
    from fer8.training.datasets import parse_source

    tuned = read_model_file(tuned_path)
    size = tuned.spec.input_size
    detection = tuned.spec.metadata.get("training", {})
    data = []
    for spec in sources:
        source = parse_source(spec)
        samples = [s for s in source.read(fer2013_split="val").samples if s.label in tuned.labels]
        crops = prepare_crops(
            samples,
            cache_dir() / "crops",
            image_size=size,
            detector=detection.get("detector", "yunet"),
            detector_options=detection.get("detector_options"),
        )
        truth = np.array([tuned.labels.index(samples[i].label) for i in crops.kept])
        data.append((source.name, crops.rgb(), truth))
    print("| alpha | " + " | ".join(name for name, _, _ in data) + " | mean |")
    print("|---|" + "---|" * (len(data) + 1))
    for alpha in alphas:
        model = keras_expression_model(interpolate(start, tuned_path, alpha), tuned.spec)
        accuracies = [
            float(np.mean(classify(images, model).argmax(1) == truth)) for _, images, truth in data
        ]
        print(
            f"| {alpha:g} | "
            + " | ".join(f"{a:.1%}" for a in accuracies)
            + f" | {np.mean(accuracies):.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
