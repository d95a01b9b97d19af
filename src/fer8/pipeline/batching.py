"""Faces of several inputs through the network together: each input's aligned crops,
prepared by the CPU stages (a :class:`Prepared`), go to the classifier in batches of a
fixed size across inputs, and the inputs come back in their order, each with its
faces' probabilities, as soon as all of its faces are classified.

Batches run in threads of their own (:data:`RUNNERS`), so that the caller's thread
takes the next inputs while the network runs, two at once, each on a share of the
network's cores.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fer8.models.modelfile import ExpressionModel
from fer8.pipeline.alignment import AlignedFace
from fer8.pipeline.classification import classify
from fer8.pipeline.video import FrameSignature
from fer8.results import Box, HeadPose

#: Faces per forward pass when a caller does not say (:class:`~fer8.pipeline.predictor.
#: Predictor`, ``--batch-size``): the batch fills across inputs, so a few photos or
#: video frames fill it, and its results wait for no more than that.
DEFAULT_BATCH_SIZE = 16

#: Batches through the network at once (:func:`classified`). Two, each on one core
#: (:meth:`~fer8.models.modelfile.ExpressionModel.concurrent`), rather than one at a
#: time on two: a two-thread session's operators each wait for their slower half,
#: and while detection or decoding holds one core the other then idles. On two cores,
#: with two preparing threads, this took 1280x720 video from 24.0 to 27.2 frames/s and
#: a folder from 40.6 to 48.2 photos/s (docs/benchmarks.md).
RUNNERS = 2


@dataclass
class Prepared:
    """One input after the CPU stages, waiting for the classifier."""

    source: str
    boxes: list[Box] = field(default_factory=list)
    crops: list[AlignedFace] = field(default_factory=list)
    error: str | None = None
    poses: list[HeadPose | None] = field(default_factory=list)
    # (faces, labels), filled by the classifier; stays empty for an input with an error.
    probabilities: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    filled: int = 0
    frame: int | None = None  # a video frame's index and time
    time: float | None = None
    signature: FrameSignature | None = None  # a video frame's, to see scene cuts
    picture: tuple[int, int] | None = None  # a video frame's width and height

    @property
    def complete(self) -> bool:
        return self.error is not None or self.filled == len(self.crops)


def classified(
    inputs: Iterable[Prepared],
    model: ExpressionModel,
    *,
    batch_size: int,
    flip: bool = False,
    runners: int = RUNNERS,
) -> Iterator[Prepared]:
    """The inputs again, in order, each with its faces' probabilities, the faces of
    several inputs going through the network together (``classify`` with ``flip``).

    Args:
        runners: Batches run at once, each in a thread of its own. The first batch
            runs on ``model``, the next ones on ``model.concurrent(runners)`` (a
            share of its cores each: one on two cores), so that a single photo's
            batch neither waits for that second session nor builds it. 0 runs
            batches in the calling thread, one at a time; 1 in a thread of their
            own, one at a time (also the case for a model without a concurrent
            form, such as one given one thread). The answers do not depend on it.
    """
    pending: deque[Prepared] = deque()
    queued: list[tuple[Prepared, int]] = []  # faces waiting for a forward pass
    network = _Network(model, runners, batch_size, flip)
    try:
        for prepared in inputs:
            pending.append(prepared)
            if prepared.error is None:
                prepared.probabilities = np.zeros(
                    (len(prepared.crops), len(model.labels)), np.float32
                )
                queued.extend((prepared, i) for i in range(len(prepared.crops)))
            while len(queued) >= batch_size:
                network.run(queued[:batch_size])
                del queued[:batch_size]
            network.collect(wait=False)
            while pending and pending[0].complete:
                yield pending.popleft()
        if queued:
            network.run(queued)
        network.collect(wait=True)
    finally:
        network.close()
    yield from pending


class _Network:
    """Runs :func:`classified`'s batches, up to ``runners`` at once in threads of their
    own, and fills in their inputs' probabilities in the caller's thread, in order
    (:meth:`collect`), so that an input split over two batches is never written by two
    threads."""

    def __init__(self, model: ExpressionModel, runners: int, batch_size: int, flip: bool):
        self.model, self.runners, self.batch_size, self.flip = model, runners, batch_size, flip
        self.concurrent: ExpressionModel | None = None
        self.started = False  # a batch was run: the next ones go on `concurrent`
        self.pool = (
            ThreadPoolExecutor(runners, thread_name_prefix="fer8-network") if runners > 0 else None
        )
        self.running: deque[tuple[list[tuple[Prepared, int]], Future[NDArray[np.float32]]]] = (
            deque()
        )

    def run(self, faces: list[tuple[Prepared, int]]) -> None:
        """Start a batch; wait first for the oldest when ``runners`` are running.
        Batches after the first go on the concurrent model."""
        crops = [p.crops[i] for p, i in faces]
        if self.pool is None:
            _fill(faces, classify(crops, self.model, batch_size=self.batch_size, flip=self.flip))
            return
        while len(self.running) >= self.runners:
            self._take_oldest()
        model = self.model
        if self.started and self.concurrent is None and self.runners > 1:
            self.concurrent = self.model.concurrent(self.runners)
            if self.concurrent is None:  # no concurrent form: one batch at a time
                self.runners = 1
                self.collect(wait=True)
        if self.concurrent is not None:
            model = self.concurrent
        self.started = True
        future = self.pool.submit(
            classify, crops, model, batch_size=self.batch_size, flip=self.flip
        )
        self.running.append((faces, future))

    def collect(self, *, wait: bool) -> None:
        """Fill in the batches that have finished, in order (all of them: ``wait``)."""
        while self.running and (wait or self.running[0][1].done()):
            self._take_oldest()

    def close(self) -> None:
        if self.pool is not None:  # a caller that stopped early: drop what has not started
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _take_oldest(self) -> None:
        faces, future = self.running.popleft()
        _fill(faces, future.result())


def _fill(faces: list[tuple[Prepared, int]], probabilities: NDArray[np.float32]) -> None:
    for (prepared, index), row in zip(faces, probabilities):
        prepared.probabilities[index] = row
        prepared.filled += 1
