#!/usr/bin/env python3
"""Do fer8's class activation maps mean something? The figures and picture of
docs/explanations.md.

Two checks, after Adebayo et al., "Sanity checks for saliency maps" (NeurIPS 2018):

1. **Model randomisation**: the classifier's dense weights are drawn afresh (Glorot-
   uniform, as Keras initialises them; 5 draws) and each face's map of its predicted
   class is recomputed from the same feature maps. A map that explains the model must
   change: the Spearman rank correlation between the trained and the randomised map is
   reported (mean of its absolute value over faces and draws; the test bar is 0.5).
2. **Where a smile is**: on JAFFE's happy faces, the share of the "happy" map inside the
   mouth's box (landmarks 48-67) against the share inside a box of the same size just
   above the eyebrows (the forehead).

It also draws docs/explain/examples.jpg: the example portraits' aligned faces (public
domain; JAFFE's pictures may not be redistributed), each with its predicted class's map
and two other classes' maps.

Usage:
    python scripts/explain_check.py --jaffe ../shared/data/jaffe.tar.gz [--out docs/explain]
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def region_shares(heat: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """Shares of a photo-sized map inside the mouth's box and the forehead box."""
    mouth = points[48:68]
    (mx0, my0), (mx1, my1) = mouth.min(axis=0), mouth.max(axis=0)
    brows = points[17:27]
    centre, top = brows[:, 0].mean(), brows[:, 1].min()
    w, h = mx1 - mx0, my1 - my0
    shares = []
    for x0, y0, x1, y1 in [(mx0, my0, mx1, my1), (centre - w / 2, top - h, centre + w / 2, top)]:
        x0, y0 = max(0, int(round(x0))), max(0, int(round(y0)))
        shares.append(float(heat[y0 : int(round(y1)), x0 : int(round(x1))].sum() / heat.sum()))
    return shares[0], shares[1]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(v.ravel())).astype(float) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def jaffe_images(path: Path):
    """(class, RGB image) of every JAFFE picture, from the archive or its folder."""
    import fer8

    if path.is_dir():
        for file in sorted(path.glob("*/*.tiff")):
            yield file.parent.name, fer8.load_image(file)
        return
    with tarfile.open(path) as archive:
        for member in archive:
            if member.name.endswith(".tiff"):
                yield (
                    member.name.split("/")[-2],
                    fer8.load_image(archive.extractfile(member).read()),
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jaffe", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "explain")
    args = parser.parse_args()

    import fer8
    from fer8.pipeline.explain import feature_maps, head

    predictor = fer8.Predictor(workers=0)
    weights, _ = head(predictor.model)
    limit = np.sqrt(6 / sum(weights.shape))
    draws = [np.random.default_rng(seed).uniform(-limit, limit, weights.shape) for seed in range(5)]
    correlations, mouth, forehead = [], [], []
    for label, image in jaffe_images(args.jaffe):
        crops = [
            crop for _, crop in fer8.faces_in_photo(image, landmark_model=predictor.landmark_model)
        ]
        probabilities, features = feature_maps(crops, predictor.model)
        for row, feature in zip(probabilities, features):
            best = int(np.argmax(row))
            trained = np.einsum("khw,k->hw", feature, weights[:, best])
            correlations += [
                rank_correlation(trained, np.einsum("khw,k->hw", feature, w[:, best]))
                for w in draws
            ]
        if label == "happy":
            height, width = image.shape[:2]
            for item in predictor.explain(image, label="happy"):
                if item.face.landmarks is not None:
                    m, f = region_shares(item.in_image(width, height), item.face.landmarks)
                    mouth.append(m)
                    forehead.append(f)
    figures = {
        "randomised_dense_weights": {
            "faces_times_draws": len(correlations),
            "mean_abs_rank_correlation": float(np.mean(np.abs(correlations))),
            "share_above_0.5": float(np.mean(np.abs(correlations) > 0.5)),
        },
        "jaffe_happy": {
            "faces": len(mouth),
            "mouth_share_mean": float(np.mean(mouth)),
            "forehead_share_mean": float(np.mean(forehead)),
            "faces_mouth_above_forehead": float(np.mean(np.greater(mouth, forehead))),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "checks.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    draw_examples(predictor, args.out / "examples.jpg")


def draw_examples(predictor, path: Path) -> None:
    """Each example portrait's aligned face: as the model sees it, then with the map of
    its predicted class, and of two other classes."""
    import cv2

    import fer8
    from fer8.pipeline.annotate import save_image
    from fer8.pipeline.explain import colorize

    rows = []
    for name in ("astronaut.png", "grace_hopper.jpg"):
        image = fer8.load_image(ROOT / "examples" / name)
        ((_, crop),) = fer8.faces_in_photo(image, landmark_model=predictor.landmark_model)
        (item,) = predictor.explain(image)
        others = [label for label in ("happy", "sad", "surprised") if label != item.label][:2]
        tiles = [crop.image]
        for label in [item.label, *others]:
            (shown,) = predictor.explain(image, label=label)
            heat = shown.heatmap[..., None] * 0.6
            tile = (crop.image * (1 - heat) + colorize(shown.heatmap) * heat).astype(np.uint8)
            probability = shown.face.probabilities[label]
            cv2.putText(
                tile,
                f"{label} {probability:.0%}",
                (6, 20),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.6,
                (255, 255, 255),
                2,
                cv2.LINE_AA,
            )
            tiles.append(tile)
        rows.append(np.concatenate(tiles, axis=1))
    save_image(np.concatenate(rows, axis=0), path)


if __name__ == "__main__":
    main()
