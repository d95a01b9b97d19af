"""fer8's network runtime against plain ONNX Runtime on the same graph, float and int8.

    PYTHONPATH=src python scripts/bench_runtime.py [--model M] [--rounds 8] [--neighbour]
    PYTHONPATH=src python scripts/bench_runtime.py --model A --model B [--rounds 8]

Times one forward pass (batch 1 and 16) of a model's float and int8 networks
(the int8 one when the file has it) through:

* ``fer8``: :func:`fer8.models.modelfile.read_model_file` as it is now (the optimised-
  graph cache, this version's session settings, the temperature);
* ``fer8 spinning``: the same graph with ONNX Runtime's default of threads that spin
  while they wait (:data:`fer8.models.runtime.SESSION_CONFIG` has them sleep);
* ``plain``: ``onnxruntime.InferenceSession`` with default settings on the graph
  ``fer8 export`` writes (the reference);
* ``int8 fer8 exact sums``: the int8 graph with ONNX Runtime's
  ``session.x64quantprecision``, its weights made uint8 so that x86 CPUs without VNNI
  sum products exactly (they saturate 16-bit pair sums otherwise; on any x86 CPU it
  takes the slower uint8 x uint8 kernels).

``bash scripts/avx2_only.sh python scripts/bench_runtime.py`` measures the kernels of a
CPU with AVX2 alone on one with more.

With several ``--model`` files, only ``fer8`` runs, for each model's networks (two
quantizations of one network, say), taking turns. Every configuration runs in each
round, in turn, so a busy machine slows them alike;
the table gives the median over rounds of each round's mean. ``--neighbour`` also runs a
thread of OpenCV work (as fer8's detection threads are) beside the network, and reports
how much of it got done: spinning threads that are fast alone can starve it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", action="append", help="model name or file (default: bundled); repeatable"
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10, help="calls per round at batch 1")
    parser.add_argument("--neighbour", action="store_true")
    args = parser.parse_args()

    import onnxruntime as ort

    from fer8.models.export import export_onnx
    from fer8.models.modelfile import network_precision, read_graph, read_model_file
    from fer8.models.registry import resolve_model
    from fer8.models.runtime import SESSION_CONFIG

    paths = [resolve_model(name) for name in args.model or [None]]
    folder = Path(tempfile.mkdtemp(prefix="fer8-bench-runtime-"))
    runs: dict[str, Callable[[np.ndarray], object]] = {}
    sizes: dict[str, int] = {}  # each run's input side (models may differ)

    def add(name: str, run: Callable[[np.ndarray], object], size: int) -> None:
        runs[name], sizes[name] = run, size

    # Files of the same name (two runs' default.fer8) are told apart by their folder.
    names = [p.name for p in paths]
    labels = {p: p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}" for p in paths}
    for path in paths:
        precisions = ["float"] + (["int8"] if network_precision(path) == "int8" else [])
        for precision in precisions:
            model = read_model_file(path, precision=precision)
            prefix = f"{labels[path]} {precision}" if len(paths) > 1 else precision
            size = model.spec.input_size
            add(f"{prefix} fer8", model, size)
            if len(paths) > 1:
                continue
            graph = read_graph(path, precision=precision)
            spinning = _session(graph, {"session.intra_op.allow_spinning": "1"})
            add(f"{precision} fer8 spinning", _runner(spinning, model.spec.temperature), size)
            if precision == "int8":  # ONNX Runtime's remedy for AVX2's saturating sums
                exact = _session(graph, {**SESSION_CONFIG, "session.x64quantprecision": "1"})
                add("int8 fer8 exact sums", _runner(exact, model.spec.temperature), size)
            exported = folder / f"{precision}.onnx"
            export_onnx(path, exported, precision=precision)
            plain = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
            add(f"{precision} plain", _runner(plain, 1.0), size)
    rng = np.random.default_rng(0)
    inputs = {
        size: {n: rng.normal(0, 1, (n, size, size, 3)).astype(np.float32) for n in (1, 16)}
        for size in sorted(set(sizes.values()))
    }
    for name, run in runs.items():  # first calls allocate
        run(inputs[sizes[name]][16])
        run(inputs[sizes[name]][1])

    times: dict[tuple[str, int], list[float]] = {(k, n): [] for k in runs for n in (1, 16)}
    neighbour: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            for n, batch in inputs[sizes[name]].items():
                calls = args.calls if n == 1 else max(1, args.calls // 8)
                done = _Neighbour() if args.neighbour else None
                start = time.perf_counter()
                for _ in range(calls):
                    run(batch)
                elapsed = time.perf_counter() - start
                if done is not None:
                    neighbour[name].append(done.stop() / elapsed)
                times[name, n].append(elapsed / calls * 1000)

    print(
        f"model {', '.join(labels.values())}, {os.cpu_count()} CPUs, ONNX Runtime {ort.__version__}, ",
        end="",
    )
    print(f"{args.rounds} rounds, median of round means; CPUID: {_instruction_sets()}")
    header = "| network | batch 1 (ms) | batch 16 (ms) | batch 16 (faces/s) |"
    if args.neighbour:
        header += " neighbour's work (resizes/s) |"
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for name in runs:
        one, sixteen = (float(np.median(times[name, n])) for n in (1, 16))
        row = f"| {name} ({sizes[name]} px) | {one:.1f} | {sixteen:.1f} | {16000 / sixteen:.0f} |"
        if args.neighbour:
            row += f" {np.median(neighbour[name]):.0f} |"
        print(row)


def _instruction_sets() -> str:
    """What CPUID tells this process, which picks ONNX Runtime's kernels: a run under
    scripts/avx2_only.sh says AVX2 alone."""
    from fer8.models.runtime import cpuid_features

    present = set(cpuid_features().split())
    names = ("AVX2", "AVX512F", "AVX512VNNI")
    return ", ".join(f"{name} {'yes' if name in present else 'no'}" for name in names)


def _session(graph: bytes, config: dict[str, str]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _runner(session, temperature: float) -> Callable[[np.ndarray], object]:
    from fer8.models.calibration import apply_temperature

    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> object:
        (out,) = session.run(["probabilities"], {name: batch})
        return apply_temperature(out, temperature) if temperature != 1.0 else out

    return run


class _Neighbour:
    """A thread resizing an image over and over (OpenCV releases the GIL, as in
    detection), counting its resizes until :meth:`stop`."""

    def __init__(self) -> None:
        import cv2

        cv2.setNumThreads(1)
        self._image = np.random.default_rng(1).integers(0, 255, (720, 1280, 3), np.uint8)
        self._count = 0
        self._running = True
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        import cv2

        while self._running:
            cv2.resize(self._image, (640, 360), interpolation=cv2.INTER_AREA)
            self._count += 1

    def stop(self) -> int:
        self._running = False
        self._thread.join()
        return self._count


if __name__ == "__main__":
    main()
