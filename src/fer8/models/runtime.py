"""Running a model's network on ONNX Runtime: fast, small, and without TensorFlow.

The session is made once per loaded model. ONNX Runtime optimises the graph as it loads
it: BatchNorm is folded into the convolutions before it, float16-stored kernels are
cast once, and element-wise work is fused, so the network runs in about half the time
TensorFlow takes for the same weights (``scripts/bench_light.py``).
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ModelFormatError

logger = logging.getLogger(__name__)

#: Execution providers fer8 uses when ONNX Runtime offers them, best first
#: (``onnxruntime-gpu`` adds CUDA; the plain wheel has only the CPU).
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxNetwork:
    """A callable from a preprocessed batch (N, S, S, 3) to float32 probabilities (N, C).

    Args:
        graph: The serialized ONNX model (bytes) or a path to one.
        threads: Threads per operator; 0 lets ONNX Runtime use every core.
        source: What to name in error messages.

    Raises:
        ModelFormatError: ONNX Runtime cannot load the graph.
    """

    def __init__(self, graph: bytes | str, *, threads: int = 0, source: str = "model"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; no start-up notices on stderr
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: fer8 shares the cores with its own
        # detection threads (and often with other work), where spinning threads took
        # 20-40% longer per batch (scripts/bench_predict.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        providers = [p for p in PREFERRED_PROVIDERS if p in available] or available
        try:
            self._session = ort.InferenceSession(graph, options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types from C++
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelFormatError(f"{source}: ONNX Runtime cannot load the network "
                                   f"({reason})") from None
        (self._input,) = self._session.get_inputs()
        self.provider = self._session.get_providers()[0]
        logger.debug("%s on ONNX Runtime %s (%s)", source, ort.__version__, self.provider)

    @property
    def input_shape(self) -> tuple[int | str | None, ...]:
        """The input's shape without the batch axis, e.g. (112, 112, 3)."""
        return tuple(self._input.shape[1:])

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        batch = np.ascontiguousarray(batch, np.float32)
        (probabilities,) = self._session.run(None, {self._input.name: batch})
        return probabilities
