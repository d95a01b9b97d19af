"""Running a model's network on ONNX Runtime: fast, small, and without TensorFlow.

The session is made once per loaded model. ONNX Runtime optimises the graph as it loads
it: BatchNorm is folded into the convolutions before it, float16-stored kernels are
cast once, and element-wise work is fused, so the network runs in about half the time
TensorFlow takes for the same weights (``scripts/bench_light.py``).

That optimisation is most of what loading costs (the bundled network: about 0.25 s and
280 MB at its peak, for 90 MB of float32 weights in the end), and it gives the same graph
every time on one machine. So the first process saves the optimised graph in fer8's cache
and later ones load it with the optimisations off, ONNX Runtime's "offline mode": about
0.12 s and 110 MB (``scripts/bench_light.py``: a one-photo ``fer8 predict`` in 0.77 s and
291 MB instead of 0.97 s and 437 MB). The saved graph is laid out for this CPU's vector width
and read only by this ONNX Runtime version, so both are part of its name.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import platform
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ModelFormatError

logger = logging.getLogger(__name__)

#: Execution providers fer8 uses when ONNX Runtime offers them, best first
#: (``onnxruntime-gpu`` adds CUDA; the plain wheel has only the CPU).
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")

#: ONNX Runtime's session settings (its config keys). Idle threads sleep instead of
#: spinning. ONNX Runtime's default (spinning) starts each of the network's operators a
#: little sooner on an idle machine, but a spinning thread burns the core it waits on:
#: fer8 shares the cores with its own detection threads (and often with other work),
#: where spinning threads made a batch 20-40% slower (``scripts/bench_predict.py``), and
#: on a 2-core machine busy with other work one face took 3 times as long
#: (``scripts/bench_runtime.py``: 68 ms asleep, 205 spinning as plain ONNX Runtime does,
#: 202 spinning only while a run goes on, ``session.force_spinning_stop``).
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}

#: Set to 0 to neither read nor write optimised graphs in the cache.
GRAPH_CACHE_VARIABLE = "FER8_GRAPH_CACHE"


class OnnxNetwork:
    """A callable from a preprocessed batch (N, S, S, 3) to float32 probabilities (N, C).

    Args:
        graph: The serialized ONNX model (bytes) or a path to one.
        threads: Threads per operator; 0 lets ONNX Runtime use every core.
        source: What to name in error messages.
        optimize: Optimise the graph while loading it; off for a graph ONNX Runtime
            has already optimised (see :meth:`cached`).
        save_optimized: Where to save the optimised graph (written under a temporary
            name, then renamed, so concurrent processes never read half a file).
        memory_pattern: ONNX Runtime's memory pattern, one block planned for all of a
            run's tensors; off for a session run from several threads at once, where
            each run holds a block of its own (video: 65 MB less at the peak, as fast).

    Raises:
        ModelFormatError: ONNX Runtime cannot load the graph.
    """

    def __init__(
        self,
        graph: bytes | str,
        *,
        threads: int = 0,
        source: str = "model",
        optimize: bool = True,
        save_optimized: Path | None = None,
        memory_pattern: bool = True,
    ):
        import onnxruntime as ort

        options = session_options(threads, optimize=optimize, memory_pattern=memory_pattern)
        partial = None
        if save_optimized is not None:
            partial = save_optimized.with_name(f"{save_optimized.name}.{os.getpid()}.partial")
            options.optimized_model_filepath = str(partial)
        try:
            self._session = ort.InferenceSession(graph, options, providers=_providers())
        except Exception as exc:  # ORT raises its own exception types from C++
            if partial is not None:
                partial.unlink(missing_ok=True)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelFormatError(
                f"{source}: ONNX Runtime cannot load the network ({reason})"
            ) from None
        if partial is not None and save_optimized is not None:
            _publish(partial, save_optimized)
        # Where for_runners() reads the graph again: a file, never bytes, which
        # would be held for the session's life.
        self._file: tuple[str, bool] | None = None
        if isinstance(graph, str):
            self._file = (graph, optimize)
        elif save_optimized is not None and save_optimized.is_file():
            self._file = (str(save_optimized), False)
        #: Threads per operator, as asked (0: ONNX Runtime's choice, every core).
        self.threads = threads
        self._source = source
        self._siblings: dict[int, OnnxNetwork] = {}  # for_runners(), by thread count
        self._lock = threading.Lock()
        (self._input,) = self._session.get_inputs()
        self.outputs = tuple(output.name for output in self._session.get_outputs())
        self.provider = self._session.get_providers()[0]
        logger.debug("%s on ONNX Runtime %s (%s)", source, ort.__version__, self.provider)

    @classmethod
    def cached(
        cls,
        read_graph: Callable[[], bytes],
        fingerprint: str | None,
        *,
        threads: int = 0,
        source: str = "model",
    ) -> OnnxNetwork:
        """Load a network through the optimised-graph cache (see the module's docstring).

        Args:
            read_graph: Returns the serialized graph; called only when the cache
                cannot serve it.
            fingerprint: Identifies the graph's content (None: do not cache).
        """
        path = optimized_graph_file(fingerprint)
        if path is None:
            return cls(read_graph(), threads=threads, source=source)
        if path.is_file():
            try:
                return cls(str(path), threads=threads, source=source, optimize=False)
            except ModelFormatError as exc:  # a damaged cache file: rebuild it
                logger.warning("ignoring a damaged cached graph: %s", exc)
                path.unlink(missing_ok=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.debug("not caching the optimised graph: %s", exc)
            return cls(read_graph(), threads=threads, source=source)
        return cls(read_graph(), threads=threads, source=source, save_optimized=path)

    def for_runners(self, runners: int) -> OnnxNetwork | None:
        """This network in a session of its threads divided by ``runners`` (at least
        one each), for a caller that runs ``runners`` batches at once, each in a thread
        of its own (ONNX Runtime runs one session from several threads at a time). On
        two busy cores, two one-thread runs keep both cores working, where a two-thread
        session's operators each wait for their slower half while another stage
        (detection, decoding) holds a core (``docs/benchmarks.md``, Video). Built on
        the first call (from the cached graph: 0.1 s), then kept; the answers are the
        same, bit for bit.

        Returns:
            Itself where the division leaves its own thread count; None where this
            session has one thread (its caller gave it one core: one batch at a
            time), the graph cannot be read again (given as bytes and not cached), or
            it runs on a GPU.
        """
        cores = self.threads or _cores()
        if cores <= 1 or self._file is None or self.provider != "CPUExecutionProvider":
            return None
        threads = max(1, cores // runners)
        if threads == cores:
            return self
        with self._lock:
            if threads not in self._siblings and self._file is not None:
                graph, optimize = self._file
                try:
                    self._siblings[threads] = OnnxNetwork(
                        graph,
                        threads=threads,
                        source=self._source,
                        optimize=optimize,
                        memory_pattern=False,
                    )
                except ModelFormatError as exc:  # the cached file went since
                    logger.debug("no session of %d threads: %s", threads, exc)
                    self._file = None
        return self._siblings.get(threads)

    @property
    def input_shape(self) -> tuple[int | str | None, ...]:
        """The input's shape without the batch axis, e.g. (112, 112, 3)."""
        return tuple(self._input.shape[1:])

    @property
    def output_shape(self) -> tuple[int | str | None, ...]:
        """The probabilities' shape without the batch axis, as the graph declares it,
        e.g. (7,)."""
        return tuple(self._session.get_outputs()[0].shape[1:])

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        batch = np.ascontiguousarray(batch, np.float32)
        # Only the first output: a graph may also give its feature map (see features).
        (probabilities,) = self._session.run(self.outputs[:1], {self._input.name: batch})
        return probabilities

    def features(
        self, batch: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
        """Probabilities and the last feature map (N, K, h, w) from one forward pass,
        or None when the graph has no ``features`` output."""
        from fer8.models.onnx_graph import FEATURES_NAME

        if FEATURES_NAME not in self.outputs:
            return None
        batch = np.ascontiguousarray(batch, np.float32)
        probabilities, features = self._session.run(
            [self.outputs[0], FEATURES_NAME], {self._input.name: batch}
        )
        return probabilities, features


def session_options(threads: int, *, optimize: bool = True, memory_pattern: bool = True):
    """fer8's ONNX Runtime session settings: errors only on stderr, ``threads`` per
    operator (0: every core), idle threads asleep (:data:`SESSION_CONFIG`), the graph
    optimised while loading or not (a graph saved already optimised), and the memory
    pattern (one block for a run's tensors; off where runs of one session overlap or
    change size)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; no start-up notices on stderr
    options.intra_op_num_threads = threads
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.enable_mem_pattern = memory_pattern
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    return options


def optimized_graph_file(fingerprint: str | None) -> Path | None:
    """Where the optimised form of the graph ``fingerprint`` is cached on this machine,
    or None where there is no cache: no fingerprint, ``FER8_GRAPH_CACHE=0``, or a GPU
    provider (whose optimised graph differs)."""
    import onnxruntime as ort

    if fingerprint is None or os.environ.get(GRAPH_CACHE_VARIABLE, "1") == "0":
        return None
    if _providers()[0] != "CPUExecutionProvider":
        return None
    from fer8.models.registry import cache_dir

    machine = hashlib.sha256(f"{ort.__version__}|{_cpu_signature()}".encode()).hexdigest()
    return cache_dir() / "onnx" / f"{fingerprint}-{machine[:16]}.onnx"


def _cores() -> int:
    """The cores this process may run on (ONNX Runtime's threads for ``threads=0``)."""
    if hasattr(os, "sched_getaffinity"):  # Linux: a container's or taskset's share
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in PREFERRED_PROVIDERS if p in available] or available


def cpu_flags() -> str:
    """The CPU's instruction-set flags as Linux lists them (``/proc/cpuinfo``'s first
    ``flags`` or ``Features`` line, space-separated); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            line = next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""
    return line.partition(":")[2].strip()


def _cpu_signature() -> str:
    """The CPU's architecture and instruction sets: what ONNX Runtime's kernel choice and
    the optimised graph depend on (its float convolutions hold weights laid out for one
    vector width, so a graph optimised with AVX-512 answers wrongly where ONNX Runtime
    runs AVX2). Both the kernel's list of flags and what CPUID tells this process (numpy's
    run-time detection): they differ where CPUID is masked, as under a hypervisor, an
    emulator or ``scripts/avx2_only.sh``."""
    flags = cpu_flags()
    if not flags:  # not Linux: no need of platform.processor() there, which runs `uname -p`
        flags = platform.processor()
    return f"{platform.machine()}|{flags}|{cpuid_features()}"


def cpuid_features() -> str:
    """The instruction sets that CPUID reports to this process (space-separated, numpy's
    names: ``AVX2``, ``AVX512F``, ``AVX512VNNI``...), as numpy detected them when it
    loaded; empty where this numpy does not say. They pick ONNX Runtime's kernels, and
    differ from :func:`cpu_flags` where CPUID is masked."""
    features: dict[str, bool] = {}
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # 2.x, 1.x
        try:
            features = getattr(importlib.import_module(module), "__cpu_features__", {})
            break
        except ImportError:
            continue
    return " ".join(sorted(name for name, present in features.items() if present))


def _publish(partial: Path, path: Path) -> None:
    try:
        os.replace(partial, path)
        logger.debug("saved the optimised graph as %s", path)
    except OSError as exc:
        logger.debug("could not save the optimised graph: %s", exc)
        partial.unlink(missing_ok=True)
