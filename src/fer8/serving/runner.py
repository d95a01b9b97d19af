"""The model's own thread in ``fer8 serve``: every caller's photos, run in batches,
videos, a few frames at a time between them, and explanations, in their turn.

Both front ends submit to it, the HTTP API (:mod:`fer8.serving.server`) and the LINE
bot (:mod:`fer8.serving.line`); neither imports the other for it.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any, TypeVar, Union

from fer8.options import SamplingOptions
from fer8.results import FrameResult, ImageResult

if TYPE_CHECKING:
    from fer8.pipeline.predictor import Predictor

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _VideoJob:
    """A video in the queue. It runs in turns (:meth:`ModelRunner._video_turn`): after
    each, it goes to the back of the queue, behind whatever came meanwhile."""

    data: bytes
    source: str
    sampling: SamplingOptions
    future: Future[list[FrameResult]]
    file: IO[bytes] | None = None  # the upload, written out for FFmpeg at its first turn
    frames: Iterator[FrameResult] | None = None
    results: list[FrameResult] = field(default_factory=list)

    def close(self) -> None:
        if self.frames is not None:
            close = getattr(self.frames, "close", None)
            if close is not None:
                close()  # releases the video file
        if self.file is not None:
            self.file.close()  # and deletes it


@dataclass
class _CallJob:
    """Any other use of the model (an explanation), run whole in its turn."""

    function: Callable[[], Any]
    future: Future[Any]


#: In the queue: a photo (bytes, source, future), a video, a call, or None (stop).
_Job = Union[tuple[bytes, str, "Future[ImageResult]"], _VideoJob, _CallJob, None]
_NOTHING = object()


class ModelRunner:
    """Runs the predictor for every caller of the server, in batches, first come first served.

    Requests join a queue; one thread takes whatever is waiting (up to ``max_batch``
    photos) and runs it through :meth:`Predictor.predict_many`, which puts the faces of
    several uploads through the network in one pass. On two cores this beats running
    requests side by side (they would fight over the cores) and one by one (batches of
    8 run about twice as fast per image as batches of 1), and a queue is fair where a
    lock is not. The API's handlers await the returned futures; the LINE bot's worker
    threads wait on them.

    A video takes its turn like a photo batch, but a turn classifies only
    ``video_frames`` of its sampled frames; then it queues again, behind the photos,
    explanations and other videos that came meanwhile. So a photo that arrives while a
    video is being read waits for the end of one turn (and for the frames the predictor
    has started preparing ahead of it), not of the video, and videos share the model by
    turns. A video's frames come from one :meth:`Predictor.predict_video` iterator,
    advanced turn by turn, so its frames and tracks are those it gives alone. A video
    whose caller has stopped waiting (a cancelled future) stops at its next turn.
    """

    def __init__(
        self, predictor: Predictor, *, max_batch: int = 16, video_frames: int | None = None
    ) -> None:
        """
        Args:
            predictor: The loaded models.
            max_batch: The most photos run together.
            video_frames: A video's sampled frames per turn; by default the predictor's
                batch size (the faces of about that many frames fill one network pass).
        """
        self.predictor = predictor
        self.max_batch = max_batch
        self.video_frames = video_frames or predictor.batch_size
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="fer8-model", daemon=True)
        self._thread.start()

    def submit(self, data: bytes, source: str) -> Future[ImageResult]:
        """Queue one image; the future's result has ``error`` set for unreadable images."""
        future: Future[ImageResult] = Future()
        self._queue.put((data, source, future))
        return future

    def submit_video(
        self, data: bytes, source: str, sampling: SamplingOptions | Mapping[str, Any]
    ) -> Future[list[FrameResult]]:
        """Queue one video; the future's result is every sampled frame's result (see
        :meth:`Predictor.predict_video`, which ``sampling``'s settings are passed to;
        a mapping of some of them is checked here, a ValueError). It runs in turns of
        ``video_frames`` frames, between the other callers' work."""
        if not isinstance(sampling, SamplingOptions):
            sampling = SamplingOptions(**sampling)
        future: Future[list[FrameResult]] = Future()
        self._queue.put(_VideoJob(data, source, sampling, future))
        return future

    def call(self, function: Callable[[], T]) -> Future[T]:
        """Queue any other use of the predictor (an explanation): ``function`` runs in
        the model's thread in its turn, and the future has what it returns or raises."""
        future: Future[T] = Future()
        self._queue.put(_CallJob(function, future))
        return future

    def close(self) -> None:
        """Stop the thread once the work queued so far is done (up to a minute)."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _serve(self) -> None:
        carried: Any = _NOTHING  # taken from the queue while batching, not yet run
        while True:
            first = self._queue.get() if carried is _NOTHING else carried
            carried = _NOTHING
            if first is None:
                if self._queue.empty():
                    return
                self._queue.put(None)  # a video queued again behind the stop: finish it
                continue
            if isinstance(first, _VideoJob):
                if not self._video_turn(first):
                    self._queue.put(first)
                continue
            if isinstance(first, _CallJob):
                _run_call(first)
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None or isinstance(item, (_VideoJob, _CallJob)):
                    carried = item  # finish this batch first
                    break
                batch.append(item)
            self._run(batch)

    def _video_turn(self, job: _VideoJob) -> bool:
        """Classify the video's next ``video_frames`` frames; True when it is done (its
        future has its frames, or the error, or the caller has stopped waiting)."""
        if job.future.cancelled():  # the client has gone: the model has better to do
            job.close()
            return True
        try:
            if job.frames is None:
                # FFmpeg reads files, not bytes; the suffix helps it guess the container.
                suffix = os.path.splitext(job.source)[1][:10]
                job.file = tempfile.NamedTemporaryFile(prefix="fer8-upload-", suffix=suffix)
                job.file.write(job.data)
                job.file.flush()
                job.data = b""  # the file holds it now
                job.frames = self.predictor.predict_video(job.file.name, **job.sampling.to_kwargs())
            for _ in range(self.video_frames):
                result = next(job.frames, None)
                if result is None:
                    job.close()
                    _settle(job.future, job.results)
                    return True
                job.results.append(replace(result, source=job.source))
        except Exception as exc:
            logger.exception("video prediction failed")
            job.close()
            _settle(job.future, error=exc)
            return True
        return False

    def _run(self, batch: list[tuple[bytes, str, Future[ImageResult]]]) -> None:
        uploads = []
        for data, source, _ in batch:
            upload = io.BytesIO(data)
            upload.name = source  # so results name the upload, not "<N bytes>"
            uploads.append(upload)
        futures = [future for _, _, future in batch]
        try:
            for future, result in zip(futures, self.predictor.predict_many(uploads)):
                _settle(future, result)
        except Exception as exc:  # the model itself failed: every waiting caller hears it
            logger.exception("prediction failed")
            for future in futures:
                if not future.done():
                    _settle(future, error=exc)


def _run_call(job: _CallJob) -> None:
    if job.future.cancelled():
        return
    try:
        result = job.function()
    except Exception as exc:  # the caller hears it
        _settle(job.future, error=exc)
    else:
        _settle(job.future, result)


def _settle(future: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Give a caller its answer, unless it has stopped waiting: a handler whose client
    went away cancels its future (``asyncio.wrap_future`` passes the cancellation on),
    and setting a cancelled future's result raises."""
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass
