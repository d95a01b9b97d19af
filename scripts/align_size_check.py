"""fer8's framing for the bundled model against aligning straight at its input size.

fer8 aligns every face at 224 pixels, masks it there when the model masks, and shrinks
it to the model's input (160 for the bundled model) with area averaging; the exported
ONNX file's metadata says so (``fer8.framing``). A runtime that aligns straight at 160
samples the face differently. This classifies every face of a labelled data set both
ways, from the same box and landmarks, and prints each framing's accuracy.

    python scripts/align_size_check.py ../shared/data/FER2013Valid   # FER+ (label.csv)
    python scripts/align_size_check.py JAFFE_DIR [--model M]         # class folders

Measured 2026-12-04 (docs/models.md): FER+ Valid 0.797 against 0.795 (3,529 faces),
JAFFE 0.587 both (213).
"""

from __future__ import annotations

import argparse
import time

import fer8
from fer8.pipeline.alignment import align, crop_square
from fer8.pipeline.faces import face_from_crop, faces_in_photo
from fer8.training.datasets import read_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a data set fer8 evaluate reads (folder)")
    parser.add_argument("--model", default=None, help="default: the bundled model")
    args = parser.parse_args()
    model = fer8.load_model(args.model)
    labels, side = list(model.labels), model.spec.input_size
    right = {"fer8": 0, "straight": 0}
    faces, started = 0, time.time()
    for sample in read_dataset(args.data).samples:
        if sample.label not in labels:
            continue
        image = fer8.load_image(sample.source)
        if sample.cropped:
            box, crop = face_from_crop(image)
        else:
            found = faces_in_photo(image)
            if not found:
                continue
            box, crop = found[0]
        if crop.landmarks is not None:
            straight = align(image, box, crop.landmarks, size=side)
        else:  # framed from its box: the same square, at the input size
            straight = crop_square(image, box, side, margin=0.0 if sample.cropped else 0.1)
        ours, theirs = fer8.classify([crop, straight], model)
        truth = labels.index(sample.label)
        faces += 1
        right["fer8"] += int(ours.argmax() == truth)
        right["straight"] += int(theirs.argmax() == truth)
    print(
        f"{faces} faces in {time.time() - started:.0f} s: accuracy with fer8's framing "
        f"{right['fer8'] / faces:.3f}, aligned straight at {side} {right['straight'] / faces:.3f}"
    )


if __name__ == "__main__":
    main()
