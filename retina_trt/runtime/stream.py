"""Streaming detection over videos, live streams, cameras and image folders (``Detector.stream``).

Three stages run concurrently, joined by bounded queues::

    reader thread (decode) --frames--> inference thread (batch, detect) --results--> consumer
                                                              (optional writer thread: draw + encode)

* On a backend that runs several requests at once (OpenVINO, one per CPU stream) the inference
  thread submits the next batch before the previous one has finished (``Detector.submit``), so
  every core is busy; results still leave in frame order.
* Files and folders never drop a frame: a full queue makes the reader wait.
* Live sources (``rtsp://``, ``http(s)://``, camera indices) drop the oldest waiting frame
  instead, so results stay current when inference is slower than the camera (``drop_stale``).
* A lost live stream is reopened with exponential backoff (``reconnect``, ``max_reconnects``);
  a frame that fails to decode is counted and skipped; a file ends after ``max_bad_frames``
  consecutive failures.
* Closing the stream (``close()``, leaving a ``with`` block, breaking out of a ``for`` loop that
  was started with ``with``, or Ctrl-C) stops the threads and finalizes the output video, which is
  then renamed to its final name: an interrupted run leaves a playable file.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from retina_trt.io.reconnect import ReconnectPolicy, reopen
from retina_trt.io.sources import FrameSource
from retina_trt.io.writers import VideoOutput
from retina_trt.runtime.detections import Detections
from retina_trt.runtime.pipelined import END, Pipelined, request_depth, submit_frames
from retina_trt.utils import check_output_file, refuse_overwrite

logger = logging.getLogger(__name__)


class StreamFrame(NamedTuple):
    """One processed frame: ``for index, timestamp, frame, dets in det.stream(...)``."""

    index: int
    timestamp_s: float
    frame: np.ndarray
    detections: Detections


@dataclass
class StreamStats:
    """Counters and per-stage times of a stream (thread-safe enough for reporting)."""

    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    frames_skipped: int = 0  # by ``every``
    decode_errors: int = 0
    reconnects: int = 0
    reconnect_attempts: int = 0  # failed and successful
    gave_up: str | None = None  # why a lost live source was not reopened
    stage_s: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "inference": 0.0, "write": 0.0})
    started: float = field(default_factory=time.perf_counter)

    @property
    def fps(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.frames_processed / elapsed if elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames_read": self.frames_read,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "frames_skipped": self.frames_skipped,
            "decode_errors": self.decode_errors,
            "reconnects": self.reconnects,
            "reconnect_attempts": self.reconnect_attempts,
            "gave_up": self.gave_up,
            "fps": round(self.fps, 2),
            "stage_ms_per_frame": {
                k: round(1000 * v / max(1, self.frames_processed), 2) for k, v in self.stage_s.items()
            },
        }


class DetectionStream(Pipelined):
    """Iterator of :class:`StreamFrame` produced by a decode / inference pipeline (module docstring).

    Use it as ``with det.stream(src) as frames: for index, ts, frame, dets in frames: ...``;
    ``stats`` has the counters and stage times; ``close()`` stops everything.
    """

    # long function: the stream's options checked and its three threads wired, in one constructor
    def __init__(
        self,
        detector,
        source: str | int | os.PathLike,
        *,
        batch_size: int = 1,
        every: int = 1,
        max_frames: int | None = None,
        drop_stale: bool | None = None,
        queue_size: int = 8,
        reconnect: bool = True,
        max_reconnects: int | None = None,
        max_reconnect_attempts: int = 10,
        max_outage_s: float = 120.0,
        backoff_s: tuple[float, float] = (0.5, 8.0),
        max_bad_frames: int = 25,
        output: str | os.PathLike | None = None,
        min_score: float | None = None,
        draw: bool = True,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("every", every), ("queue_size", queue_size)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if max_frames is not None and int(max_frames) < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.policy = ReconnectPolicy(
            reconnect=reconnect,
            max_reconnects=max_reconnects,
            max_attempts=max_reconnect_attempts,
            max_outage_s=max_outage_s,
            backoff_s=backoff_s,
        )
        super().__init__(results=queue_size)
        self.detector = detector
        self.source = FrameSource(source, max_bad_frames=max_bad_frames)
        self.live = self.source.live
        self.batch_size = int(batch_size)
        self.every = int(every)
        self.max_frames = max_frames
        self.drop_stale = self.live if drop_stale is None else bool(drop_stale)
        self.min_score = min_score
        self.stats = StreamStats()
        self._frames: queue.Queue = queue.Queue(maxsize=queue_size)
        self._last_frame: float | None = None  # monotonic time of the last frame read
        if output is not None:
            check_output_file(output, "stream output")
            refuse_overwrite(output, [source] if not self.live else [], "stream output")
        self.output = VideoOutput(output, self.source.fps) if output is not None else None
        self._draw = draw
        self._writes: queue.Queue | None = queue.Queue(maxsize=queue_size) if self.output is not None else None
        self._threads = [
            threading.Thread(target=self._guard, args=(self._read_loop,), name="retina_trt-decode", daemon=True),
            threading.Thread(target=self._guard, args=(self._infer_loop,), name="retina_trt-infer", daemon=True),
        ]
        if self.output is not None:
            self._threads.append(
                threading.Thread(target=self._guard, args=(self._write_loop,), name="retina_trt-write", daemon=True)
            )
        self._register()
        for thread in self._threads:
            thread.start()

    # -- pipeline stages -----------------------------------------------------------------------
    def _reopen(self) -> bool:
        """Reopen a lost live stream under ``self.policy`` (``io/reconnect.py``); False when
        giving up (``stats.gave_up`` says why)."""
        return reopen(self.source, self.policy, self.stats, self._stop, self._last_frame)

    def _read_loop(self) -> None:
        index = 0
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self.stats.frames_read >= self.max_frames * self.every:
                    break
                start = time.perf_counter()
                try:
                    item = self.source.read()
                except EOFError:
                    if self.live and self.policy.reconnect and self._reopen():
                        continue
                    break
                self.stats.stage_s["decode"] += time.perf_counter() - start
                if item is None:
                    self.stats.decode_errors += 1
                    index += 1
                    continue
                self.stats.frames_read += 1
                self._last_frame = time.monotonic()  # the outage clock of _reopen starts here
                frame, timestamp = item
                if index % self.every:
                    self.stats.frames_skipped += 1
                else:
                    self._put(
                        self._frames, (index, timestamp, frame), drop_oldest=self.drop_stale, on_drop=self._dropped
                    )
                index += 1
        finally:
            self.source.release()
            self._put(self._frames, END)

    def _next_batch(self) -> tuple[list, bool]:
        """Up to ``batch_size`` waiting frames (none after 50 ms without one) and whether the
        source has ended."""
        try:
            first = self._frames.get(timeout=0.05)
        except queue.Empty:
            return [], False
        if first is END:
            return [], True
        batch = [first]
        while len(batch) < self.batch_size:
            try:
                item = self._frames.get(timeout=0 if self.live else 0.5)
            except queue.Empty:
                break
            if item is END:
                return batch, True
            batch.append(item)
        return batch, False

    def _dropped(self) -> None:
        self.stats.frames_dropped += 1

    def _infer_loop(self) -> None:
        """Batches go to the detector without waiting for the previous one where it runs several
        at once (OpenVINO: one per CPU stream), so decode, preprocessing and inference overlap;
        results leave in frame order. Elsewhere each batch runs in turn (``predict_batch``)."""
        depth = request_depth(self.detector)
        pending: deque = deque()
        done = False
        while not done and not self._stop.is_set():
            batch, done = self._next_batch()
            if batch:
                pending.append(
                    (batch, time.perf_counter(), submit_frames(self.detector, [frame for _, _, frame in batch], depth))
                )
            while pending and (done or len(pending) >= depth or pending[0][2].done()):
                self._emit(*pending.popleft())
        self._put(self._results, END)
        if self._writes is not None:
            self._put(self._writes, END)

    def _emit(self, batch: list, started: float, future: Future) -> None:
        results = future.result()
        self.stats.stage_s["inference"] += time.perf_counter() - started
        for (index, timestamp, frame), dets in zip(batch, results):
            if self.min_score is not None:
                dets = dets.filter(min_score=self.min_score)
            self.stats.frames_processed += 1
            result = StreamFrame(index, timestamp, frame, dets)
            if self._writes is not None:
                self._put(self._writes, result)
            self._put(self._results, result)

    def _write_loop(self) -> None:
        while True:
            try:
                item = self._writes.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is END:
                return
            start = time.perf_counter()
            self.output.write(item.detections.draw(item.frame) if self._draw else item.frame)
            self.stats.stage_s["write"] += time.perf_counter() - start

    # -- consumer side ---------------------------------------------------------------------------
    def _running(self) -> bool:
        if self._error is not None:
            return False
        return not (self._stop.is_set() and all(not t.is_alive() for t in self._threads[:2]))

    def _after_close(self) -> Path | None:
        return self.output.path if self.output is not None and self.output.path.exists() else None

    def _shutdown(self) -> Path | None:
        """Stop the threads, release the source and finalize the output video.

        Returns the output video's path if one was written."""
        writer = self._threads[2] if len(self._threads) > 2 else None
        if writer is not None and self._error is None and not self._threads[1].is_alive():
            writer.join(timeout=30)  # the run ended: let the writer encode everything produced
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        written = self.output.close() if self.output is not None else None
        self.source.release()
        return written

    def __enter__(self) -> DetectionStream:
        return self
