"""Running a stage ahead of the next, in order: items taken from an iterable in a
thread of their own (:func:`read_ahead`), or a function mapped over them in a thread
pool (:func:`prefetch`), a bounded number ahead so that memory does not grow with the
input. :class:`~fer8.pipeline.predictor.Predictor` uses them to decode, detect and
align while the network runs (OpenCV, dlib, FFmpeg and ONNX Runtime release the GIL).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


#: Video frames decoded ahead of their preparation, in a thread of their own.
READ_AHEAD = 2


def read_ahead(items: Iterable[T], depth: int) -> Iterator[T]:
    """``items`` again, in order, taken from ``items`` up to ``depth`` ahead in a thread of
    their own. An exception raised by ``items`` is raised here, after the items before
    it; stopping early stops the thread."""
    import queue
    import threading

    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def read() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((True, done))
        except BaseException as exc:  # handed over to the caller's thread
            ready.put((False, exc))

    thread = threading.Thread(target=read, name="fer8-read", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = ready.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let it out of a full queue
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def prefetch(
    fn: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor | None, depth: int
) -> Iterator[R]:
    """``map(fn, items)`` computed up to ``depth`` items ahead in ``pool``, in order."""
    if pool is None:
        yield from map(fn, items)
        return
    futures: deque[Future[R]] = deque()
    try:
        for item in items:
            futures.append(pool.submit(fn, item))
            if len(futures) >= depth:
                yield futures.popleft().result()
        while futures:
            yield futures.popleft().result()
    finally:
        for future in futures:  # the caller stopped early: drop what is still queued
            future.cancel()
