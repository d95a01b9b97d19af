#!/usr/bin/env python3
"""How far can one new classifier column read contempt, by what features it reads?

A probe for issue 43 (``--keep-classes``), not a feature of fer8: it measures whether
features other than the pooled ones that ``fer8 train --keep-classes`` fits its new
column on would separate a new class better, before anything is built on them.

Contempt is a one-sided expression (one lip corner), and global average pooling keeps
no side. So beside the pooled features ``P`` (what the classifier reads), the probe
tries, from the same last feature map ``M`` (K x 3 x 3 for FaceNet at 160 px) and from
the map in the middle of the network ``M8`` (FaceNet's last 17x17-kernel block, 896 x 8
x 8: finer, where a lip corner is a cell or two):

* ``lr``: ``|mean of M's left column - mean of its right column|`` (one forward pass);
* ``flip``: ``|M - M of the mirrored crop|``, pooled (a second pass);
* ``map``: all of ``M``, flattened;
* ``mouth lr (8x8)``: ``|mean of M8's lower left quarter - its lower right quarter|``;
* ``flip (8x8)``: ``|M8 - M8 mirrored|``, pooled;
* ``P, mirrored photos too``: the pooled features, and the new class's photos mirrored
  as more photos of it (a lip corner on the other side).

For each, a new column over ``P`` and that feature is fitted by ``--keep-classes``'s
own fit (:func:`fer8.training.new_columns.fit_new_columns`: softmax regression, the old
columns fixed and reading ``P`` only, each class weighted equally) on FER+ Train's contempt faces against 4,000 FER+ Train faces of the
seven classes, then, on FER+ Valid, the offset of the new logit is the largest that
turns at most ``budget`` faces the model read right into contempt (an *oracle* offset,
chosen on the faces it is measured on: an upper bound, the same for every feature set).

    python scripts/probe_new_class_features.py --data-root DATA [--model M] [--work W]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from bench_new_class import contempt_faces  # scripts/, beside this one

import fer8
from fer8.models.classifier_head import head_weights
from fer8.models.modelfile import read_graph, read_network_config
from fer8.models.onnx_graph import FEATURES_NAME
from fer8.training.crops import prepare_crops
from fer8.training.dataset_layouts import read_ferplus
from fer8.training.datasets import Sample
from fer8.training.new_columns import fit_new_columns

#: FaceNet's map in the middle: the output of its last Block17 (896 x 8 x 8 at 160 px).
MIDDLE = "Block17_10_Activation/relu"


def network(model_path: Path) -> ort.InferenceSession:
    """The network prediction runs (the int8 one where the file has it), giving also
    :data:`MIDDLE`."""
    graph = onnx.load_from_string(read_graph(model_path, precision="auto"))
    graph.graph.output.append(
        onnx.helper.make_tensor_value_info(MIDDLE, onnx.TensorProto.FLOAT, None)
    )
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


def maps(session, model, samples: list[Sample], cache: Path) -> tuple[dict, list[str]]:
    """The last and the middle feature maps of each face, the last of its mirror image,
    and the faces' labels."""
    prepared = prepare_crops(
        samples, cache, image_size=model.spec.input_size, mask=model.spec.preprocessing.mask
    )
    rgb, name = prepared.rgb(), session.get_inputs()[0].name
    found: dict[str, list[np.ndarray]] = {"last": [], "middle": [], "mirrored": []}
    for start in range(0, len(rgb), 32):
        chunk = rgb[start : start + 32]
        last, middle = session.run(
            [FEATURES_NAME, MIDDLE], {name: model.spec.preprocessing.apply(chunk)}
        )
        flipped = model.spec.preprocessing.apply(np.ascontiguousarray(chunk[:, :, ::-1]))
        found["last"].append(last)
        found["middle"].append(middle)
        found["mirrored"].append(session.run([FEATURES_NAME], {name: flipped})[0])
    return {k: np.concatenate(v) for k, v in found.items()}, [
        samples[i].label for i in prepared.kept
    ]


def feature_sets(found: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    last, middle = found["last"], found["middle"]
    pooled = last.mean(axis=(2, 3))
    extra = {
        "lr": np.abs(last[..., 0].mean(2) - last[..., -1].mean(2)),
        "flip": np.abs(last - found["mirrored"]).mean(axis=(2, 3)),
        "map": last.reshape(len(last), -1),
        "mouth lr (8x8)": np.abs(
            middle[:, :, 4:, :4].mean((2, 3)) - middle[:, :, 4:, 4:].mean((2, 3))
        ),
        "flip (8x8)": np.abs(middle - middle[..., ::-1]).mean(axis=(2, 3)),
    }
    return {"P": pooled} | {f"P+{name}": np.hstack([pooled, x]) for name, x in extra.items()}


def fit_column(x, classes, kernel, bias, l2: float):
    """The new logit of ``x`` as ``--keep-classes`` fits it (:func:`fit_new_columns`):
    the old columns read the pooled features (``x``'s first columns) only."""
    padded = np.vstack([kernel, np.zeros((x.shape[1] - len(kernel), kernel.shape[1]))])
    column, offset = fit_new_columns(x, classes, padded, bias, 1, l2=l2)
    return lambda y: (y @ column + offset)[:, 0]


def at_budget(margin, right_before, is_new, budget: int) -> tuple[float, float]:
    """Recall and precision of the new class at the largest offset that turns at most
    ``budget`` faces read right into the new class."""
    best = (0.0, 0.0)
    for offset in np.linspace(-20, 20, 4001):
        said = margin + offset > 0
        if (said & right_before).sum() <= budget:
            hits = (said & is_new).sum()
            best = (hits / is_new.sum(), hits / max(said.sum(), 1))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fer8-probe"))
    args = parser.parse_args()
    model_path = args.model or Path(fer8.__file__).parent / "models" / "default.fer8"
    model = fer8.load_model(model_path)
    kernel, bias = head_weights(read_graph(model_path), read_network_config(model_path) or {})
    labels = list(model.labels)

    # The seven classes as fer8 reads FER+, and contempt as bench_new_class.py finds it.
    train, valid_root = args.data_root / "FER2013Train", args.data_root / "FER2013Valid"
    others = list(read_ferplus(train).samples)
    picks = np.random.default_rng(0).choice(len(others), 4000, replace=False)
    fit_faces = [Sample(str(p), "contempt", True) for p in contempt_faces(train)]
    fit_faces += [others[i] for i in picks]
    valid = list(read_ferplus(valid_root).samples)
    valid += [Sample(str(p), "contempt", True) for p in contempt_faces(valid_root)]
    session = network(model_path)
    fit_maps, fit_labels = maps(session, model, fit_faces, args.work / "crops")
    valid_maps, valid_labels = maps(session, model, valid, args.work / "crops")
    fit_sets, valid_sets = feature_sets(fit_maps), feature_sets(valid_maps)
    fit_classes = np.array([labels.index(x) if x in labels else len(labels) for x in fit_labels])
    # The new class's photos mirrored, as more photos of it.
    new = fit_classes == len(labels)
    mirrored = fit_maps["mirrored"][new].mean(axis=(2, 3))
    fits = {name: (x, fit_classes) for name, x in fit_sets.items()}
    fits["P, mirrored photos too"] = (
        np.vstack([fit_sets["P"], mirrored]),
        np.concatenate([fit_classes, fit_classes[new]]),
    )
    valid_sets["P, mirrored photos too"] = valid_sets["P"]
    valid_new = np.array([label == "contempt" for label in valid_labels])
    old_valid = valid_sets["P"] @ kernel + bias
    truth = np.array([labels.index(x) if x in labels else -1 for x in valid_labels])
    right_before = old_valid.argmax(1) == truth
    print(f"FER+ Valid: {valid_new.sum()} contempt faces, {(truth >= 0).sum()} of the seven")
    print("| features | l2 | recall at 18 faces (0.5 pt) | at 35 faces (1 pt) |")
    print("| --- | --- | --- | --- |")
    for name, (x, classes) in fits.items():
        for l2 in (1e-3,) if name == "P+map" else (1e-3, 1e-1, 1.0):
            column = fit_column(x, classes, kernel, bias, l2)
            margin = column(valid_sets[name]) - old_valid.max(1)
            cells = [at_budget(margin, right_before, valid_new, b) for b in (18, 35)]
            text = " | ".join(f"{100 * r:.0f}% (precision {100 * p:.0f}%)" for r, p in cells)
            print(f"| {name} | {l2:g} | {text} |", flush=True)


if __name__ == "__main__":
    main()
