"""The model's own thread in ``fer8 serve``: every caller's images, run in batches.

Both front ends submit to it, the HTTP API (:mod:`fer8.serving.server`) and the LINE
bot (:mod:`fer8.serving.line`); neither imports the other for it.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

from fer8.results import ImageResult

if TYPE_CHECKING:
    from fer8.pipeline.predictor import Predictor

logger = logging.getLogger(__name__)


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
        self._queue: queue.Queue[tuple[bytes, str, Future[ImageResult]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="fer8-model", daemon=True)
        self._thread.start()

    def submit(self, data: bytes, source: str) -> Future[ImageResult]:
        """Queue one image; the future's result has ``error`` set for unreadable images."""
        future: Future[ImageResult] = Future()
        self._queue.put((data, source, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            self._run(batch)

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
