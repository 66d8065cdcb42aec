"""One source of a multi-source stream: its decode thread, its frame buffer and its counters.

Files and folders never lose a frame: the reader waits while the buffer is full. Live sources
(cameras, stream URLs) keep only the newest frames: a full buffer loses its oldest frame, counted
as dropped, so the reader keeps draining the capture and latency stays bounded. A live source that
never connects, stalls or dies is reopened in this thread with bounded backoff
(``io/reconnect.py``) and gives up after the policy's limits, saying why in its stats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from retina_trt.errors import VideoError
from retina_trt.io.reconnect import ReconnectPolicy, reopen
from retina_trt.io.sources import FrameSource
from retina_trt.streams.motion import MotionSample
from retina_trt.streams.schedule import InferSchedule, SourceSchedule

logger = logging.getLogger(__name__)


class SourceFrame(NamedTuple):
    index: int  # frame number in the source (decode errors and skipped frames take a number too)
    timestamp_s: float  # the source's own timestamp (files) or seconds since it was opened (live)
    frame: np.ndarray
    read_at: float  # time.perf_counter() when it was decoded: the start of its latency
    motion: MotionSample | None = None  # what the adaptive schedule's motion gate saw in it


@dataclass
class SourceStats:
    """Counters of one source. When the source has ended (or been removed, or the stream
    closed), ``read == processed + dropped + skipped + decode_errors + errors``."""

    read: int = 0  # frames taken from the source, decode errors included
    processed: int = 0
    dropped: int = 0  # live: lost to newer frames; any source: unprocessed at remove()/close()
    skipped: int = 0  # by ``every``
    decode_errors: int = 0
    errors: int = 0  # frames whose inference failed (counted and skipped)
    reconnects: int = 0
    reconnect_attempts: int = 0
    gave_up: str | None = None
    last_error: str | None = None
    latency_ms: float | None = None  # of the last result: decode to result
    state: str = "starting"  # starting, running, reconnecting, ended, gave up, removed
    started: float = field(default_factory=time.perf_counter)

    def to_dict(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        return {
            "state": self.state,
            "read": self.read,
            "processed": self.processed,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "decode_errors": self.decode_errors,
            "errors": self.errors,
            "reconnects": self.reconnects,
            "reconnect_attempts": self.reconnect_attempts,
            "gave_up": self.gave_up,
            "last_error": self.last_error,
            "latency_ms": self.latency_ms,
            "fps": round(self.processed / elapsed, 2) if elapsed > 0 else 0.0,
        }


class SourceReader:
    """Decodes one source into a bounded buffer in its own thread (module docstring).

    ``ready`` (shared by every reader of a stream) is set after each frame it buffers and when it
    ends, so the batcher wakes without polling each source.
    """

    def __init__(
        self,
        source_id: str,
        source: Any,
        *,
        ready: threading.Event,
        policy: ReconnectPolicy,
        buffer: int = 4,
        every: int = 1,
        drop_stale: bool | None = None,
        max_bad_frames: int = 25,
        timeout_s: float = 10.0,
        schedule: InferSchedule | None = None,
    ) -> None:
        self.id = source_id
        self.source = FrameSource(source, max_bad_frames=max_bad_frames, open_now=False, timeout_s=timeout_s)
        self.live = self.source.live
        self.drop_stale = self.live if drop_stale is None else bool(drop_stale)
        self.policy = policy
        self.every = int(every)
        self.stats = SourceStats()
        self.schedule = SourceSchedule(schedule or InferSchedule(), self.source.fps)
        self.held = None  # the last inferred detections: what a skipped frame shows
        self.generation = 0  # +1 at each reconnect: per-source state (a tracker) resets on it
        self._capacity = self._normal_capacity = int(buffer)
        self._releasing = False  # a hold ended: back to the normal capacity once the backlog drained
        self._frames: deque[SourceFrame] = deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._ready = ready
        self._stop = threading.Event()
        self.source.cancel = self._stop  # a probe of a camera that never answers ends with stop()
        self._last_frame: float | None = None
        self._ended = False
        self._thread = threading.Thread(target=self._run, name=f"retina_trt-source-{source_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- the decode thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._connect():
                self._read_all()
        except Exception as err:  # one source's failure is never fatal to the others
            self.stats.last_error = f"{type(err).__name__}: {err}"
            logger.warning("source %s failed: %s", self.id, self.stats.last_error)
        finally:
            self.source.release()
            if self.stats.state not in ("gave up", "removed"):
                self.stats.state = "ended"
            with self._lock:
                self._ended = True
                self._room.notify_all()
            self._ready.set()

    def _connect(self) -> bool:
        if not self.live:
            self.stats.state = "running"
            return True
        try:
            self.source.open()
        except VideoError as err:
            self.stats.last_error = str(err)
            return self._reconnect()
        self.stats.state = "running"
        return True

    def _reconnect(self) -> bool:
        if not self.policy.reconnect or self._stop.is_set():
            return False
        self.stats.state = "reconnecting"
        if reopen(self.source, self.policy, self.stats, self._stop, self._last_frame):
            self.generation += 1
            if self.schedule.gate is not None:
                self.schedule.gate.reset()
            self.stats.state = "running"
            return True
        if not self._stop.is_set():
            self.stats.state = "gave up"
            logger.warning("source %s: gave up (%s)", self.id, self.stats.gave_up)
        return False

    def _read_all(self) -> None:
        index = 0
        while not self._stop.is_set():
            try:
                item = self.source.read()
            except EOFError:
                if self.live and self._reconnect():
                    continue
                return
            self.stats.read += 1
            index += 1
            if item is None:
                self.stats.decode_errors += 1
                continue
            self._last_frame = time.monotonic()
            if (index - 1) % self.every:
                self.stats.skipped += 1
                continue
            frame, timestamp = item
            motion = self.schedule.sample(frame)
            self._push(SourceFrame(index - 1, timestamp, frame, time.perf_counter(), motion))

    def _push(self, item: SourceFrame) -> None:
        with self._lock:
            if self.drop_stale:
                while len(self._frames) >= self._capacity:
                    self._frames.popleft()
                    self.stats.dropped += 1
            else:
                while len(self._frames) >= self._capacity and not self._stop.is_set():
                    self._room.wait(0.1)
                if self._stop.is_set():
                    self.stats.dropped += 1
                    return
            self._frames.append(item)
        self._ready.set()

    def stats_dict(self) -> dict[str, Any]:
        """The counters, with what the schedule did: ``frames`` analysed (delivered), ``inferred``
        (the model ran) and, per reason, why (``infer_reasons``; adaptive only)."""
        stats = self.stats.to_dict()
        stats["frames"] = stats["processed"]
        stats["inferred"] = self.schedule.inferred_frames
        stats["infer_reasons"] = dict(self.schedule.reasons) if self.schedule.schedule.mode == "adaptive" else None
        return stats

    # -- the batcher's side ------------------------------------------------------------------
    def take(self) -> SourceFrame | None:
        """The oldest buffered frame, or None (never waits)."""
        with self._lock:
            if not self._frames:
                return None
            item = self._frames.popleft()
            if self._releasing and len(self._frames) < self._normal_capacity:
                self._capacity, self._releasing = self._normal_capacity, False
            self._room.notify()
            return item

    def hold(self, frames: int) -> None:
        """Buffer up to ``frames`` frames (a live source drops none while the model pauses, as
        during a model swap) until :meth:`release`."""
        with self._lock:
            self._capacity, self._releasing = max(self._normal_capacity, int(frames)), False

    def release(self) -> None:
        """Back to the normal buffer once the frames held meanwhile have been taken (none dropped)."""
        with self._lock:
            self._releasing = True
            if len(self._frames) < self._normal_capacity:
                self._capacity, self._releasing = self._normal_capacity, False

    @property
    def buffered(self) -> int:
        """Frames read and waiting for the batcher."""
        with self._lock:
            return len(self._frames)

    @property
    def finished(self) -> bool:
        """Ended and nothing left in the buffer."""
        with self._lock:
            return self._ended and not self._frames

    def stop(self, state: str | None = None, join_s: float = 10.0) -> None:
        """Stop the thread; frames still buffered are counted as dropped."""
        if state:
            self.stats.state = state
        self._stop.set()
        with self._lock:
            self._room.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(join_s)
        with self._lock:
            self.stats.dropped += len(self._frames)
            self._frames.clear()
