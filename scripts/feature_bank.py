"""Give a model file the feature bank that ``fer8 train --keep-classes`` learns against.

    python scripts/feature_bank.py src/fer8/models/default.fer8 \\
        --data ../shared/affectnet_masked/train@train --data ../shared/FER2013Train \\
        --data ../shared/expw@train --data ../shared/sfew/Train@train

Draws up to ``--per-class`` training faces of each of the model's classes, evenly from
the sources, frames them as the model frames faces, and stores their pooled features
(one byte per number, :mod:`fer8.models.feature_bank`) in the model file, replacing any
bank it had; every other member of the file is kept byte for byte. Use training data
only: the bank's held-out part is what ``--keep-classes`` checks the old classes on, and
the model's validation sets are for its own figures. Run it again after any new
packing of a model (scripts/train_default.sh does).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from fer8.models.feature_bank import read_feature_bank
from fer8.models.modelfile import BANK_MEMBER
from fer8.models.registry import sha256_file
from fer8.models.writer import with_member
from fer8.progress import ProgressBar
from fer8.training.bank import HELD_OUT_SHARE, build_bank

logger = logging.getLogger("feature_bank")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the model file, rewritten in place")
    parser.add_argument("--data", action="append", required=True, metavar="PATH[@SPLIT]")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--held-out", type=float, default=HELD_OUT_SHARE)
    parser.add_argument("--cache", default=None, help="crop cache (default: the fer8 cache's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    started = time.monotonic()
    before = args.model.stat().st_size
    bank = build_bank(
        args.model,
        args.data,
        per_class=args.per_class,
        held_out=args.held_out,
        cache=args.cache,
        workers=args.workers,
        seed=args.seed,
        on_progress=ProgressBar,
    )
    with_member(args.model, BANK_MEMBER, bank.to_bytes(), args.model)
    stored = read_feature_bank(args.model)
    assert stored is not None
    logger.info(
        "%s: bank of %d faces (%s; %d held out), %d features each; %.2f -> %.2f MB "
        "(+%.2f MB) in %.1f min; SHA-256 %s (the registry's, for the bundled model)",
        args.model,
        len(stored.classes),
        ", ".join(f"{label} {n}" for label, n in stored.counts.items()),
        int(stored.held_out.sum()),
        stored.features.shape[1],
        before / 1e6,
        args.model.stat().st_size / 1e6,
        (args.model.stat().st_size - before) / 1e6,
        (time.monotonic() - started) / 60,
        sha256_file(args.model),
    )


if __name__ == "__main__":
    main()
