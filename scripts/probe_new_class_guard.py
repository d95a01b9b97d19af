#!/usr/bin/env python3
"""Would a guard measured on more of the bank's faces let a new class be said more often?

A probe for issue 43 (``--keep-classes``), not a feature of fer8. The offset of a new
class's logit is chosen on the bank's held-out faces (about 40 a class, 10 of them gray),
too few to see a rate of half a point (:func:`fer8.training.new_columns.choose_offset`
then keeps it under their margins' normal tail). Cross-fitting gives every bank face a
margin measured by a column that did not see it: five columns, each fitted without a
fifth of the bank's fitted rows, score that fifth, so the guard reads 200 faces a class
instead of 40, and the column that ships is the same.

For contempt taught from 25, 50 and all of FER+ Train's contempt faces (the faces
``bench_new_class.py`` draws), the script prints the offset each guard chooses and what
it gives on FER+ Valid, ExpW@val, SFEW@val and JAFFE (the old classes' accuracy change,
contempt's recall and precision on FER+ Valid), from pooled features: the bench's
evaluation cache (``WORK/evaluation.npz``, made on first use).

    python scripts/probe_new_class_guard.py --data-root DATA [--work /tmp/fer8-contempt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_new_class import contempt_faces, evaluation_features  # scripts/, beside this one

import fer8
from fer8.models.classifier_head import head_weights
from fer8.models.feature_bank import pooled_features, read_feature_bank
from fer8.models.modelfile import read_graph, read_network_config
from fer8.training.crops import prepare_crops
from fer8.training.datasets import Sample
from fer8.training.new_columns import fit_new_columns, guarded_offset, linear_logits

FOLDS = 5


def rows(evaluation, kernel, bias, column, offset, labels) -> list[str]:
    """Each validation set's old-class accuracy change, and contempt's figures."""
    cells = []
    for name, data in evaluation.items():
        old = linear_logits(data["features"], kernel, bias)
        said = (linear_logits(data["features"], *column)[:, 0] + offset) > old.max(1)
        truth = np.array([labels.index(x) if x in labels else -1 for x in data["labels"]])
        seven = truth >= 0
        faces = seven.sum() + np.isin(data["missing"], labels).sum()
        before = (old.argmax(1) == truth)[seven].sum()
        after = ((old.argmax(1) == truth) & ~said)[seven].sum()
        cells.append(f"{100 * (after - before) / faces:+.1f}")
        if name == "FER2013Valid":
            new = data["labels"] == "contempt"
            hits = (said & new).sum()
            cells.append(f"{100 * hits / new.sum():.0f}% ({hits} of {new.sum()})")
            cells.append(f"{100 * hits / max(said.sum(), 1):.0f}% ({said.sum()} said)")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fer8-contempt"))
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    model_path = args.model or Path(fer8.__file__).parent / "models" / "default.fer8"
    model = fer8.load_model(model_path)
    labels = list(model.labels)
    kernel, bias = head_weights(read_graph(model_path), read_network_config(model_path) or {})
    bank = read_feature_bank(model_path)
    assert bank is not None, f"{model_path}: no feature bank"
    evaluation = evaluation_features(model_path, args.data_root, args.work)
    faces = contempt_faces(args.data_root / "FER2013Train")
    prepared = prepare_crops(
        [Sample(str(p), "contempt", True) for p in faces],
        args.work / "eval-crops",
        image_size=model.spec.input_size,
        mask=model.spec.preprocessing.mask,
    )
    contempt = pooled_features(model, prepared.rgb())
    kept = prepared.kept.tolist()
    old_bank = linear_logits(bank.features, kernel, bias)
    held, fitted = bank.held_out, ~bank.held_out
    folds = np.where(fitted, np.random.default_rng(0).integers(0, FOLDS, len(held)), -1)
    header = ["photos", "guard", "offset"]
    for name in evaluation:
        header += [f"{name} acc."]
        header += ["contempt recall", "precision"] if name == "FER2013Valid" else []
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for size in ("25", "50", "all"):
        if size == "all":
            chosen = list(range(len(faces)))
        else:
            chosen = sorted(np.random.default_rng(0).choice(len(faces), int(size), replace=False))
        positives = contempt[[kept.index(i) for i in chosen if i in kept]]
        new = np.full(len(positives), len(labels))

        def fit(use: np.ndarray, positives=positives, new=new):
            x = np.concatenate([bank.features[use], positives])
            return fit_new_columns(x, np.concatenate([bank.classes[use], new]), kernel, bias, 1)

        column = fit(fitted)
        # What --keep-classes does: the held-out rows, scored by the column that ships.
        offset = guarded_offset(
            old_bank[held],
            linear_logits(bank.features[held], *column),
            bank.classes[held],
            bank.gray[held],
            0.5,
        )
        cells = rows(evaluation, kernel, bias, column, offset, labels)
        print(f"| {len(positives)} | held-out rows | {offset:+.2f} | " + " | ".join(cells) + " |")
        # Cross-fitted: every bank row, each fitted row scored by a column without it.
        scored = linear_logits(bank.features, *column)
        for fold in range(FOLDS):
            part = folds == fold
            scored[part] = linear_logits(bank.features[part], *fit(fitted & ~part))
        offset = guarded_offset(old_bank, scored, bank.classes, bank.gray, 0.5)
        cells = rows(evaluation, kernel, bias, column, offset, labels)
        print(f"| {len(positives)} | cross-fitted | {offset:+.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
