"""Model hot-swap for a running ``retina-trt analyze``: SIGHUP, or a changed model file, loads the
model again and hands it to the running stream (``MultiStream.swap``) without stopping a source.

A thread of its own does the slow part (loading and warming the new model beside the old one),
so the analytics loop never waits: frames keep flowing through the old model until the new one
takes the next batch, batches in flight finish on the old one, and the trackers keep their ids.
Live sources buffer more frames meanwhile (``MultiStream.holding``), so the CPU the new model's
loading takes from the running one costs no frame. A file counts as changed once its size and
time stamp have held still for one poll (a copy still being written is not loaded). A model with
other classes is refused with one line and a ``model_swap_refused`` event; the old one keeps
running. Each swap is a ``model_swapped`` event and counts in ``retina_trt_model_swaps_total``.
docs/operating.md#model-hot-swap.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


class ModelReloader(threading.Thread):
    """Swaps ``streams``' model for ``load()``'s when :meth:`request` is called (SIGHUP) or
    ``watch`` changes; ``emit`` gets the events (already stamped with ``source: "model"``)."""

    def __init__(self, streams, load: Callable[[], object], emit, *, watch: Path | None = None, poll_s: float = 1.0):
        super().__init__(name="retina_trt-model-reloader", daemon=True)
        self.streams, self.load, self.emit = streams, load, emit
        self.watch, self.poll_s = (Path(watch) if watch is not None else None), float(poll_s)
        self.swaps = self.refused = 0
        self._wanted = threading.Event()
        self._halt = threading.Event()
        self._seen = self._signature()
        self._pending_signature = None
        self.previous_sighup = None  # set by run_analyze when SIGHUP reloads: restored by stop()

    def request(self) -> None:
        """Reload now (safe from a signal handler: it only sets a flag)."""
        self._wanted.set()

    def stop(self) -> None:
        """Stop watching; the SIGHUP handler that was there before the run is put back."""
        self._halt.set()
        self._wanted.set()
        self.join(timeout=60)
        if self.previous_sighup is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self.previous_sighup)
            self.previous_sighup = None

    def run(self) -> None:
        while not self._halt.is_set():
            self._wanted.wait(self.poll_s)
            if self._halt.is_set():
                return
            if self._wanted.is_set() or self._file_changed():
                self._wanted.clear()
                self.reload()

    def reload(self) -> bool:
        """Load, check, warm and swap; True when the new model runs."""
        from retina_trt.analytics.events import stamp

        holding = getattr(self.streams, "holding", None)
        with holding() if holding is not None else contextlib.nullcontext():
            try:
                new = self.load()
            except Exception as err:  # a broken file: the old model stays
                return self._refuse(f"cannot load the new model: {type(err).__name__}: {err}")
            try:
                old = self.streams.swap(new)
            except ValueError as err:
                _close(new)
                return self._refuse(str(err))
        _close(old)
        self.swaps += 1
        self.emit(
            stamp({"type": "model_swapped", "model": str(getattr(new, "model_path", "")), "swaps": self.swaps}, "model")
        )
        logger.info("model swapped: %s", getattr(new, "model_path", new))
        return True

    def _refuse(self, reason: str) -> bool:
        from retina_trt.analytics.events import stamp

        self.refused += 1
        logger.warning("model swap refused: %s", reason)
        self.emit(stamp({"type": "model_swap_refused", "reason": reason}, "model"))
        return False

    def _signature(self):
        if self.watch is None:
            return None
        try:
            stat = self.watch.stat()
        except OSError:
            return None
        return (stat.st_size, stat.st_mtime_ns)

    def _file_changed(self) -> bool:
        """True once the watched file differs from the running one and held still for a poll."""
        now = self._signature()
        if now is None or now == self._seen:
            self._pending_signature = None
            return False
        if now != self._pending_signature:
            self._pending_signature = now  # changed: wait one poll for it to hold still
            return False
        self._seen, self._pending_signature = now, None
        return True


def _close(detector) -> None:
    close = getattr(detector, "close", None)
    if close is not None:
        try:
            close()
        except Exception as err:  # closing the replaced model never stops the run
            logger.warning("closing the replaced model failed: %s: %s", type(err).__name__, err)
