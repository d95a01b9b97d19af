"""Faces of several inputs through the network together: each input's aligned crops,
prepared by the CPU stages (a :class:`Prepared`), go to the classifier in batches of a
fixed size across inputs, and the inputs come back in their order, each with its
faces' probabilities, as soon as all of its faces are classified.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
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
    inputs: Iterable[Prepared], model: ExpressionModel, *, batch_size: int, flip: bool = False
) -> Iterator[Prepared]:
    """The inputs again, in order, each with its faces' probabilities, the faces of
    several inputs going through the network together (``classify`` with ``flip``)."""
    pending: deque[Prepared] = deque()
    queued: list[tuple[Prepared, int]] = []  # faces waiting for a forward pass
    for prepared in inputs:
        pending.append(prepared)
        if prepared.error is None:
            prepared.probabilities = np.zeros((len(prepared.crops), len(model.labels)), np.float32)
            queued.extend((prepared, i) for i in range(len(prepared.crops)))
        while len(queued) >= batch_size:
            _run_batch(queued[:batch_size], model, batch_size, flip)
            del queued[:batch_size]
        while pending and pending[0].complete:
            yield pending.popleft()
    if queued:
        _run_batch(queued, model, batch_size, flip)
    yield from pending


def _run_batch(
    faces: list[tuple[Prepared, int]], model: ExpressionModel, batch_size: int, flip: bool
) -> None:
    probabilities = classify(
        [p.crops[i] for p, i in faces], model, batch_size=batch_size, flip=flip
    )
    for (prepared, index), row in zip(faces, probabilities):
        prepared.probabilities[index] = row
        prepared.filled += 1
