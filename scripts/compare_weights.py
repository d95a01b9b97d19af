#!/usr/bin/env python3
"""Say whether two training results hold the same weights, bit for bit.

    python scripts/compare_weights.py runs/a/stage2/checkpoint.keras runs/b/stage2/checkpoint.keras

This is how a rerun of ``scripts/train_default.sh`` is checked against an earlier run:
the files themselves cannot be compared byte for byte, because a run's ``model.fer8``
records its own timings and paths, and a checkpoint made with ``--ema-momentum`` also
holds the moving averages. The arrays inside can. Each argument is a ``fer8 train``
checkpoint (``checkpoint.keras``: the network and the optimizer after the last finished
epoch) or a ``.fer8`` model file (the network only). The network's arrays are compared
in order, so compare a compact (packed) file only with another compact one. Optimizer
variables, when both files have them, are matched by content, since a run with a
moving average numbers them differently.

A digest of the network's arrays is printed too, so that runs on two machines can be
compared without copying 100-400 MB files across. Exit status: 0 when the networks are
identical, 1 when they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from fer8.models.modelfile import KERAS_MEMBER, ONNX_MEMBER, WEIGHTS_MEMBER


def read_arrays(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The network's arrays in storage order, and the optimizer's (empty if none)."""
    with zipfile.ZipFile(path) as archive:
        members = set(archive.namelist())
        if ONNX_MEMBER in members:  # a .fer8 file: the graph's weights, in Keras's order
            import json

            import onnx

            from fer8.models.onnx_graph import keras_weights

            config = json.loads(archive.read("network.json"))["config"]
            return keras_weights(onnx.load_from_string(archive.read(ONNX_MEMBER)), config), []
        if (
            KERAS_MEMBER in members
        ):  # an older .fer8 (format 1)  # a full-precision .fer8: a Keras file inside
            with zipfile.ZipFile(io.BytesIO(archive.read(KERAS_MEMBER))) as inner:
                return read_arrays_from_keras(inner)
        if WEIGHTS_MEMBER in members:  # an older compact .fer8
            with np.load(io.BytesIO(archive.read(WEIGHTS_MEMBER))) as stored:
                return [stored[f"arr_{i}"] for i in range(len(stored.files))], []
        return read_arrays_from_keras(archive)  # a checkpoint.keras


def read_arrays_from_keras(archive: zipfile.ZipFile) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The arrays of a Keras 3 ``.keras`` archive, network first, optimizer second."""
    import h5py

    network, optimizer = [], []
    with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:

        def visit(name, item):
            if isinstance(item, h5py.Dataset):
                (optimizer if name.startswith("optimizer/") else network).append(item[()])

        weights.visititems(visit)
    return network, optimizer


def digest(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for array in arrays:
        h.update(str(array.dtype).encode() + str(array.shape).encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()

    (net_a, opt_a), (net_b, opt_b) = read_arrays(args.first), read_arrays(args.second)
    for path, net in ((args.first, net_a), (args.second, net_b)):
        print(
            f"{path}: {len(net)} network arrays, "
            f"{sum(a.size for a in net):,} values, digest {digest(net)[:16]}"
        )
    if [a.shape for a in net_a] != [b.shape for b in net_b]:
        print("the networks differ in shape")
        return 1
    differing = [i for i, (a, b) in enumerate(zip(net_a, net_b)) if not np.array_equal(a, b)]
    if differing:
        largest = max(
            float(np.max(np.abs(net_a[i].astype(np.float64) - net_b[i]))) for i in differing
        )
        print(
            f"network: {len(differing)} of {len(net_a)} arrays differ "
            f"(largest difference {largest:.3g})"
        )
    else:
        print(f"network: identical, all {len(net_a)} arrays bit for bit")
    if opt_a and opt_b:
        contents_a = {digest([a]) for a in opt_a}
        found = sum(digest([b]) in contents_a for b in opt_b)
        print(
            f"optimizer: {found} of {len(opt_b)} variables of the second found "
            f"bit for bit in the first ({len(opt_a)} there)"
        )
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
