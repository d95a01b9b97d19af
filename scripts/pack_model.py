"""Pack a trained model compactly (float16 kernels) for shipping inside the package.

    python scripts/pack_model.py runs/default/stage2/model.fer8 src/fer8/models/default.fer8

Checks that the packed model predicts like the original on random crops, and prints the
SHA-256 to put into ``fer8.models.registry.MODELS`` (and whether it is the file registered
under that name already). The packed model is named after the
destination file (``default``), and the training record it carries names the data and
the model it started from by their last path parts only (``FER2013Train``,
``stage1/model.fer8``): the shipped file then does not reveal the trainer's folders, and
its SHA-256 does not depend on where the data and the runs were kept.
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
from fer8.models.registry import MODELS, sha256_file
from fer8.training.keras_models import load_keras_model, save_model

logger = logging.getLogger("pack_model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    keras_model, source_spec = load_keras_model(args.source)
    original = read_model_file(args.source)
    # The shipped model is named after its file (the registry name), not the run folder.
    spec = replace(
        source_spec, name=args.destination.stem, metadata=without_local_paths(source_spec.metadata)
    )
    save_model(keras_model, spec, args.destination, compact=True)
    packed = read_model_file(args.destination)

    size = original.spec.input_size
    crops = np.random.default_rng(0).uniform(-120, 150, (64, size, size, 3)).astype(np.float32)
    difference = np.abs(original(crops) - packed(crops)).max()
    agree = np.mean(original(crops).argmax(1) == packed(crops).argmax(1))
    logger.info(
        "%s: %.1f MB -> %s: %.1f MB",
        args.source,
        args.source.stat().st_size / 1e6,
        args.destination,
        args.destination.stat().st_size / 1e6,
    )
    logger.info(
        "largest probability difference on 64 random inputs: %.2e; same class: %.0f%%",
        difference,
        100 * agree,
    )
    digest = sha256_file(args.destination)
    registered = MODELS.get(spec.name)
    if registered is None:
        logger.info("sha256 %s", digest)
    else:  # say whether the file is the one the registry (and the package) has
        verdict = "the same as" if digest == registered.sha256 else "not the same file as"
        logger.info(
            "sha256 %s, %s the registered %r (%s…)",
            digest,
            verdict,
            spec.name,
            registered.sha256[:12],
        )


def without_local_paths(metadata: dict) -> dict:
    """``metadata`` with every path cut to its last part (the data folders) or last two
    (``init_model``: the stage and its file)."""
    keep = {"path": 1, "data": 1, "val": 1, "backbone_weights": 1, "init_model": 2}

    def trim(key, value):
        if isinstance(value, dict):
            return {k: trim(k, v) for k, v in value.items()}
        if isinstance(value, list):  # several --data / --val sources
            return [trim(key, v) for v in value]
        if key in keep and isinstance(value, str):
            return "/".join(Path(value).parts[-keep[key] :])
        return value

    return trim(None, metadata)


if __name__ == "__main__":
    main()
