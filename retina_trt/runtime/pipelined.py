"""What every streaming pipeline shares: one submit path into the Detector, one result queue the
consumer iterates, one close path; abandoned pipelines are closed at exit (``at_exit.py``).

``Detector.stream`` (``runtime/stream.py``, one source) and ``MultiStream`` (``streams/``, many
sources batched together) are both :class:`Pipelined`: they differ only in how frames are read and
batched, not in how batches reach the model or how results reach the consumer.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np

from retina_trt.runtime.at_exit import close_at_exit

END = object()  # the last item of a result queue


def request_depth(detector) -> int:
    """How many batches may be in flight at once on ``detector``: its ``parallel_requests`` where
    it can ``submit``, else 1."""
    if not hasattr(detector, "submit"):
        return 1
    return max(1, int(getattr(detector, "parallel_requests", 1)))


def submit_frames(detector, frames: list[np.ndarray], depth: int) -> Future:
    """Start one batch of decoded frames; the future's result is the list of ``Detections``.

    With ``depth > 1`` (a backend that runs several requests at once) the batch is submitted
    without waiting; otherwise it runs now (also a batch beyond the model's maximum, which
    ``predict_batch`` splits). A failure is the future's exception, never raised here."""
    future: Future = Future()
    if depth > 1 and len(frames) <= detector.max_batch:
        try:
            return detector.submit(frames)
        except Exception as err:  # e.g. a closed detector: the batch's failure, not the stream's
            future.set_exception(err)
            return future
    try:
        future.set_result(detector.predict_batch(frames))
    except Exception as err:  # the caller decides: fatal to one source, or counted and skipped
        future.set_exception(err)
    return future


class Pipelined:
    """Base of the streaming pipelines: the consumer's side (iteration, ``close``, ``with``).

    A subclass starts its threads, puts results on ``self._results`` (and :data:`END` last), sets
    ``self._error`` when a stage fails (:meth:`_guard`), implements :meth:`_running`,
    :meth:`_shutdown` and :meth:`_after_close`, and calls :meth:`_register` once its threads run."""

    def __init__(self, results: int) -> None:
        self._results: queue.Queue = queue.Queue(maxsize=int(results))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._closed = False

    def _register(self) -> None:
        close_at_exit(pipeline=self)  # never closed (no ``with``, no ``close()``): closed at exit

    def _guard(self, loop) -> None:
        """Run one stage; its error is raised in the consumer's thread."""
        try:
            loop()
        except BaseException as err:  # surfaced in the consumer's thread
            self._error = err
            self._stop.set()

    def _put(self, q: queue.Queue, item: Any, *, drop_oldest: bool = False, on_drop=None) -> bool:
        """Put ``item`` on ``q``; False if the pipeline stopped first.

        ``drop_oldest`` (live sources): never wait; a full queue loses its oldest item at once
        (``on_drop()`` counts it), so the reader keeps draining the capture and results stay
        current. Otherwise wait for room (files and folders never lose a frame)."""
        while not self._stop.is_set():
            if not drop_oldest:
                with contextlib.suppress(queue.Full):
                    q.put(item, timeout=0.05)
                    return True
                continue
            try:
                q.put_nowait(item)
                return True
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    q.get_nowait()
                    if on_drop is not None:
                        on_drop()
        return False

    def _running(self) -> bool:
        """False once no stage can put another result (then an empty queue means the end)."""
        raise NotImplementedError

    def _shutdown(self) -> Any:
        """Stop the stages and finalize outputs; what :meth:`close` returns."""
        raise NotImplementedError

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        while not self._closed:
            try:
                item = self._results.get(timeout=0.1)
            except queue.Empty:
                if self._running():
                    continue
                item = END
            if item is END:
                self.close()
                if self._error is not None:
                    raise self._error
                raise StopIteration
            return item
        raise StopIteration

    def _after_close(self) -> Any:
        """What :meth:`close` returns when called again."""
        raise NotImplementedError

    def close(self):
        """Stop every thread and finalize the outputs (idempotent)."""
        if self._closed:
            return self._after_close()
        self._closed = True
        return self._shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
