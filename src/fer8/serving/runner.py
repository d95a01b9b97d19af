"""The model's own thread in ``fer8 serve``: every caller's images, run in batches, and
videos, one at a time.

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
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Union

from fer8.results import FrameResult, ImageResult

if TYPE_CHECKING:
    from fer8.pipeline.predictor import Predictor

logger = logging.getLogger(__name__)


@dataclass
class _VideoJob:
    data: bytes
    source: str
    sampling: dict[str, Any]
    future: Future[list[FrameResult]]


#: In the queue: an image (bytes, source, future), a video, or None (stop).
_Job = Union[tuple[bytes, str, "Future[ImageResult]"], _VideoJob, None]
_NOTHING = object()


class ModelRunner:
    """Runs the predictor for every caller of the server, in batches, first come first served.

    Requests join a queue; one thread takes whatever is waiting (up to ``max_batch``
    images) and runs it through :meth:`Predictor.predict_many`, which puts the faces of
    several uploads through the network in one pass. On two cores this beats running
    requests side by side (they would fight over the cores) and one by one (batches of
    8 run about twice as fast per image as batches of 1), and a queue is fair where a
    lock is not. The API's handlers await the returned futures; the LINE bot's worker
    threads wait on them.
    """

    def __init__(self, predictor: Predictor, *, max_batch: int = 16) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="fer8-model", daemon=True)
        self._thread.start()

    def submit(self, data: bytes, source: str) -> Future[ImageResult]:
        """Queue one image; the future's result has ``error`` set for unreadable images."""
        future: Future[ImageResult] = Future()
        self._queue.put((data, source, future))
        return future

    def submit_video(
        self, data: bytes, source: str, sampling: dict[str, Any]
    ) -> Future[list[FrameResult]]:
        """Queue one video; the future's result is every sampled frame's result (see
        :meth:`Predictor.predict_video`, which ``sampling`` is passed to). A video holds
        the model until it is done, so its length is bounded by the upload limit."""
        future: Future[list[FrameResult]] = Future()
        self._queue.put(_VideoJob(data, source, dict(sampling), future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _serve(self) -> None:
        carried: Any = _NOTHING  # taken from the queue while batching, not yet run
        while True:
            first = self._queue.get() if carried is _NOTHING else carried
            carried = _NOTHING
            if first is None:
                return
            if isinstance(first, _VideoJob):
                self._run_video(first)
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None or isinstance(item, _VideoJob):
                    carried = item  # finish this batch first
                    break
                batch.append(item)
            self._run(batch)

    def _run_video(self, job: _VideoJob) -> None:
        # FFmpeg reads files, not bytes; the suffix helps it guess the container.
        suffix = os.path.splitext(job.source)[1][:10]
        try:
            with tempfile.NamedTemporaryFile(prefix="fer8-upload-", suffix=suffix) as file:
                file.write(job.data)
                file.flush()
                results = [
                    replace(result, source=job.source)
                    for result in self.predictor.predict_video(file.name, **job.sampling)
                ]
        except Exception as exc:
            logger.exception("video prediction failed")
            job.future.set_exception(exc)
        else:
            job.future.set_result(results)

    def _run(self, batch: list[tuple[bytes, str, Future[ImageResult]]]) -> None:
        uploads = []
        for data, source, _ in batch:
            upload = io.BytesIO(data)
            upload.name = source  # so results name the upload, not "<N bytes>"
            uploads.append(upload)
        futures = [future for _, _, future in batch]
        try:
            for future, result in zip(futures, self.predictor.predict_many(uploads)):
                future.set_result(result)
        except Exception as exc:  # the model itself failed: every waiting caller hears it
            logger.exception("prediction failed")
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
