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

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from retina_trt.errors import ImageError, VideoError
from retina_trt.image import read_image
from retina_trt.runtime.detections import Detections
from retina_trt.runtime.reconnect import ReconnectPolicy, reopen
from retina_trt.utils import check_output_file, refuse_overwrite

logger = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
LIVE_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
_END = object()


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


def is_live(source: str | int | os.PathLike) -> bool:
    """Cameras and network streams are live; files and folders are not."""
    if isinstance(source, int):
        return True
    text = str(source)
    return text.lower().startswith(LIVE_PREFIXES) or (text.isdigit() and not Path(text).exists())


class FrameSource:
    """Frames of a video file, a stream URL, a camera index or an image folder.

    ``read()`` returns ``(frame, timestamp_s)``, ``None`` for a frame that failed to decode (the
    caller counts and skips it), or raises ``EOFError`` at the end / when the stream is lost.
    """

    def __init__(
        self,
        source: str | int | os.PathLike,
        *,
        max_bad_frames: int = 25,
        open_now: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        """``open_now=False``: a live source is opened by the caller (``open()``), so one that
        never connects can be retried; ``timeout_s``: how long a live open or read may block."""
        self.source = source
        self.live = is_live(source)
        self.max_bad_frames = max_bad_frames
        self.timeout_s = float(timeout_s)
        self._files: list[Path] | None = None
        self._capture: cv2.VideoCapture | None = None
        self._position = 0
        self._bad_run = 0
        self._total: int | None = None
        self._start = time.perf_counter()
        path = None if isinstance(source, int) or self.live else Path(source)
        if path is not None and path.is_dir():
            self._files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            if not self._files:
                raise VideoError(f"folder {path} has no images")
        elif path is not None and not path.exists():
            raise VideoError(f"video not found: {path}")
        elif open_now or not self.live:
            self.open()

    def open(self) -> None:
        """(Re)open a capture; raises :class:`VideoError` when it cannot be opened."""
        self.release()
        target = int(self.source) if str(self.source).isdigit() and self.live else str(self.source)
        if self.live and isinstance(target, str):  # a stalled network source must not block for ever
            ms = int(1000 * self.timeout_s)
            capture = cv2.VideoCapture(
                target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            )
        else:
            capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            capture.release()
            raise VideoError(
                f"cannot open video {self.source}: not a video or stream OpenCV can decode, or unreachable"
            )
        self._capture = capture
        self._bad_run = 0
        if not self.live:
            self._total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    @property
    def frame_count(self) -> int | None:
        """Frames (or images) of a file source; None for live sources or when unknown."""
        return len(self._files) if self._files is not None else self._total

    @property
    def fps(self) -> float:
        if self._capture is not None:
            fps = self._capture.get(cv2.CAP_PROP_FPS)
            if fps and 0 < fps < 1000:
                return float(fps)
        return 25.0

    def read(self) -> tuple[np.ndarray, float] | None:
        if self._files is not None:
            if self._position >= len(self._files):
                raise EOFError
            path = self._files[self._position]
            self._position += 1
            try:
                return read_image(path), (self._position - 1) / self.fps
            except ImageError as err:
                logger.warning("skipped %s: %s", path, err)
                return None
        if self._capture is None:
            raise EOFError
        ok, frame = self._capture.read()
        if ok and frame is not None:
            self._bad_run = 0
            self._position += 1
            if self.live:
                return frame, time.perf_counter() - self._start
            return frame, self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        # A failed read before a file's known end is a bad frame; otherwise the end / a lost stream.
        self._bad_run += 1
        self._position += 1
        if (
            not self.live
            and self._total is not None
            and self._position < self._total
            and self._bad_run < self.max_bad_frames
        ):
            return None
        raise EOFError

    def release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def letterbox_to(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` resized to fit ``size`` (H, W) keeping its aspect ratio, centred on black."""
    height, width = size
    scale = min(height / frame.shape[0], width / frame.shape[1])
    new_h, new_w = max(1, round(frame.shape[0] * scale)), max(1, round(frame.shape[1] * scale))
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return canvas


def _plays(path: Path) -> bool:
    """True when OpenCV decodes a first frame of the video at ``path``."""
    capture = cv2.VideoCapture(str(path))
    try:
        ok, _ = capture.read()
        return bool(ok)
    finally:
        capture.release()


class VideoOutput:
    """An annotated video written under a temporary name and renamed when closed (also when the
    run is interrupted: the partial file is finalized, so it stays playable)."""

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}{self.path.suffix}")
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)
        self.frames = 0
        self.letterboxed = 0

    def write(self, frame: np.ndarray) -> None:
        """Append ``frame``; a frame of another size than the first is letterboxed to it (OpenCV's
        writer would drop it silently), and counted in ``letterboxed``."""
        if self._writer is not None and frame.shape[:2] != self._size:
            frame = letterbox_to(frame, self._size)
            self.letterboxed += 1
        if self._writer is None:
            height, width = frame.shape[:2]
            self._size = (height, width)
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self._writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise VideoError(f"cannot write video {self.path}")
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> Path | None:
        """Finalize and rename; None (and nothing left behind) when no frame was written.

        Raises:
            VideoError: the finished file does not play (OpenCV's writer fails silently, e.g. on a
                full disk): it is removed, never left under the final name."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        if not _plays(self.tmp):
            with contextlib.suppress(OSError):
                self.tmp.unlink()
            raise VideoError(
                f"the annotated video {self.path} could not be written completely (a full disk?); "
                "nothing was left under its name"
            )
        os.replace(self.tmp, self.path)
        return self.path


_OPEN_STREAMS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_abandoned_streams() -> None:
    """Streams never closed (no ``with``, no ``close()``) are closed at interpreter exit, so their
    threads stop before the C++ runtimes are torn down (that aborted the process) and their
    output video is finalized under its name instead of being left as a temporary file."""
    for stream in list(_OPEN_STREAMS):
        with contextlib.suppress(Exception):
            stream.close()


class DetectionStream:
    """Iterator of :class:`StreamFrame` produced by a decode / inference pipeline (module docstring).

    Use it as ``with det.stream(src) as frames: for index, ts, frame, dets in frames: ...``;
    ``stats`` has the counters and stage times; ``close()`` stops everything.
    """

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
        self._results: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._last_frame: float | None = None  # monotonic time of the last frame read
        self._closed = False
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
        _OPEN_STREAMS.add(self)
        for thread in self._threads:
            thread.start()

    # -- pipeline stages -----------------------------------------------------------------------
    def _guard(self, loop) -> None:
        try:
            loop()
        except BaseException as err:  # surfaced in the consumer's thread
            self._error = err
            self._stop.set()

    def _put(self, q: queue.Queue, item, *, drop_oldest: bool = False) -> bool:
        """Put ``item`` on ``q``; False if the stream stopped first.

        ``drop_oldest`` (live sources): never wait. A full queue loses its oldest item at once,
        so the reader keeps draining the capture and results stay current. Otherwise wait for
        room (files and folders never lose a frame)."""
        if drop_oldest:
            while not self._stop.is_set():
                try:
                    q.put_nowait(item)
                    return True
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        q.get_nowait()
                        self.stats.frames_dropped += 1
            return False
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=0.05)
                return True
        return False

    def _reopen(self) -> bool:
        """Reopen a lost live stream under ``self.policy`` (``runtime/reconnect.py``); False when
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
                    self._put(self._frames, (index, timestamp, frame), drop_oldest=self.drop_stale)
                index += 1
        finally:
            self.source.release()
            self._put(self._frames, _END)

    def _next_batch(self) -> tuple[list, bool]:
        """Up to ``batch_size`` waiting frames (none after 50 ms without one) and whether the
        source has ended."""
        try:
            first = self._frames.get(timeout=0.05)
        except queue.Empty:
            return [], False
        if first is _END:
            return [], True
        batch = [first]
        while len(batch) < self.batch_size:
            try:
                item = self._frames.get(timeout=0 if self.live else 0.5)
            except queue.Empty:
                break
            if item is _END:
                return batch, True
            batch.append(item)
        return batch, False

    def _submit(self, frames: list[np.ndarray], depth: int) -> Future:
        if depth > 1 and len(frames) <= self.detector.max_batch:
            return self.detector.submit(frames)
        future: Future = Future()  # one request at a time (or beyond the model's batch): run now
        future.set_result(self.detector.predict_batch(frames))
        return future

    def _infer_loop(self) -> None:
        """Batches go to the detector without waiting for the previous one where it runs several
        at once (OpenVINO: one per CPU stream), so decode, preprocessing and inference overlap;
        results leave in frame order. Elsewhere each batch runs in turn (``predict_batch``)."""
        depth = max(1, int(getattr(self.detector, "parallel_requests", 1)))
        pending: deque = deque()
        done = False
        while not done and not self._stop.is_set():
            batch, done = self._next_batch()
            if batch:
                pending.append((batch, time.perf_counter(), self._submit([frame for _, _, frame in batch], depth)))
            while pending and (done or len(pending) >= depth or pending[0][2].done()):
                self._emit(*pending.popleft())
        self._put(self._results, _END)
        if self._writes is not None:
            self._put(self._writes, _END)

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
            if item is _END:
                return
            start = time.perf_counter()
            self.output.write(item.detections.draw(item.frame) if self._draw else item.frame)
            self.stats.stage_s["write"] += time.perf_counter() - start

    # -- consumer side ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[StreamFrame]:
        return self

    def __next__(self) -> StreamFrame:
        while True:
            if self._closed:
                raise StopIteration
            try:
                item = self._results.get(timeout=0.1)
            except queue.Empty:
                item = None
            if item is None:
                if self._error is not None:
                    self.close()
                    raise self._error
                if self._stop.is_set() and all(not t.is_alive() for t in self._threads[:2]):
                    self.close()
                    raise StopIteration
                continue
            if item is _END:
                self.close()
                if self._error is not None:
                    raise self._error
                raise StopIteration
            return item

    def close(self) -> Path | None:
        """Stop the threads, release the source and finalize the output video (idempotent).

        Returns the output video's path if one was written."""
        if self._closed:
            return self.output.path if self.output is not None and self.output.path.exists() else None
        self._closed = True
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

    def __exit__(self, *exc) -> None:
        self.close()
