"""Many sources, one model: frames of every source batched into one model call.

``det.streams([src, ...])`` (or ``MultiStream(det, ...)``) starts a decode thread per source
(``streams/source.py``) and one inference thread. The inference thread builds each batch as
DeepStream's ``nvstreammux`` does: it takes the oldest buffered frame of each source in turn, up
to the batch size, and pushes the batch when it is full or when ``push_timeout_ms`` has passed
since its first frame, whichever comes first. A source with nothing buffered is passed over, so a
stalled, reconnecting or dead source never delays the others. One backend call runs at a time
per Detector; where the backend runs several requests at once (OpenVINO's infer requests) the
next batch is submitted while the previous runs, and results still leave in batch order, so the
results of one source come in frame order.

Results (:class:`MultiFrame`) carry the source id, frame index, timestamp, the frame, the
detections and the latency from decode to result. ``stats()`` gives per-source counters.
``add()`` and ``remove()`` work while the stream runs. ``close()``, a ``with`` block, Ctrl-C in the
consuming loop (it leaves the ``with``) and interpreter exit stop every thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from typing import Any, NamedTuple

import numpy as np

from retina_trt.io.reconnect import ReconnectPolicy
from retina_trt.runtime.detections import Detections
from retina_trt.runtime.pipelined import END, Pipelined, request_depth, submit_frames
from retina_trt.streams.motion import MotionSample
from retina_trt.streams.schedule import InferSchedule

from .source import SourceFrame, SourceReader

logger = logging.getLogger(__name__)


# frames each live source may buffer while a new model loads (``holding``): at 15 fps about 4 s;
# the memory is that many decoded frames per source (docs/operating.md#model-hot-swap)
SWAP_HOLD_FRAMES = 64


class MultiFrame(NamedTuple):
    """One processed frame of a multi-source stream."""

    source_id: str
    index: int
    timestamp_s: float
    frame: np.ndarray
    detections: Detections
    latency_s: float  # from decode to this result
    generation: int  # the source's reconnect count when the frame was read (reset per-source state on change)
    inferred: bool = True  # False: the schedule skipped the model; ``detections`` are the last inferred ones
    reason: str | None = None  # why the model ran (``streams/schedule.py``), None when it did not
    motion: MotionSample | None = None  # what the adaptive schedule's motion gate saw (camera health reads it)


class SourceEnd(NamedTuple):
    """With ``end_markers=True``: ``source_id`` ended and every frame of it has been handed over
    (its outputs can be finished now, whatever the other sources do)."""

    source_id: str


class MultiStream(Pipelined):
    """Frames of several sources through one Detector, batched across sources (module docstring).

    Args:
        detector: a :class:`~retina_trt.Detector` (any backend) or anything with its
            ``predict_batch``, ``max_batch`` and optionally ``submit``/``parallel_requests``.
        sources: a list (ids "0", "1", ...) or a mapping id -> source: files, folders, stream
            URLs, camera indices.
        batch_size: frames per model call, at most the model's max batch; default: one frame per
            running source (as nvstreammux's batch-size = number of sources), capped by the
            model's max batch.
        push_timeout_ms: a batch that is not full goes this long after its first frame.
        buffer: frames buffered per source (live sources drop the oldest beyond it).
        every: process every N-th frame of each source.
        min_score: filter detections.
        reconnect, max_reconnects, max_reconnect_attempts, max_outage_s, backoff_s: the
            live-source reconnect policy (``io/reconnect.py``).
        timeout_s: how long a live source's open or read may block before it counts as lost.
        results: results buffered for the consumer (the pipeline waits beyond it).
        infer: when the model runs on a source's frame: ``"every"`` (default), a whole number N
            (every N-th frame) or ``"adaptive"`` (motion, moving objects, refresh, gap), or an
            :class:`~retina_trt.streams.schedule.InferSchedule` with its thresholds
            (``streams/schedule.py``). Every frame is still delivered, in order; a skipped one
            holds the source's last detections and has ``inferred=False``.
        until_closed: keep running when every source has ended (to ``add()`` more later);
            by default the iteration ends when every source has ended or been removed.
    """

    # long function: the stream's options checked and its state set up, one constructor
    def __init__(
        self,
        detector,
        sources: Iterable[Any] | Mapping[str, Any] = (),
        *,
        batch_size: int | None = None,
        push_timeout_ms: float = 40.0,
        buffer: int = 4,
        every: int = 1,
        min_score: float | None = None,
        reconnect: bool = True,
        max_reconnects: int | None = None,
        max_reconnect_attempts: int = 10,
        max_outage_s: float = 120.0,
        backoff_s: tuple[float, float] = (0.5, 8.0),
        timeout_s: float = 10.0,
        results: int = 16,
        until_closed: bool = False,
        infer: InferSchedule | str | int = "every",
        end_markers: bool = False,
    ) -> None:
        max_batch = int(detector.max_batch)
        self.max_batch = max_batch
        self.batch_size = None if batch_size is None else int(batch_size)
        if self.batch_size is not None and not 1 <= self.batch_size <= max_batch:
            raise ValueError(f"batch_size must be in [1, {max_batch}] (the model's max batch), got {batch_size}")
        if not 0 <= float(push_timeout_ms) < 3_600_000:
            raise ValueError(f"push_timeout_ms must be in [0, 3600000), got {push_timeout_ms}")
        for name, value in (("buffer", buffer), ("every", every), ("results", results)):
            if not 1 <= int(value) <= 10_000:
                raise ValueError(f"{name} must be in [1, 10000], got {value}")
        super().__init__(results=int(results))
        self.detector = detector
        self.push_timeout_s = float(push_timeout_ms) / 1000.0
        self.min_score = min_score
        self.policy = ReconnectPolicy(
            reconnect=reconnect,
            max_reconnects=max_reconnects,
            max_attempts=max_reconnect_attempts,
            max_outage_s=max_outage_s,
            backoff_s=backoff_s,
        )
        self.schedule = InferSchedule.parse(infer)
        self._reader_options = {
            "buffer": int(buffer),
            "every": int(every),
            "timeout_s": float(timeout_s),
            "schedule": self.schedule,
        }
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._readers: dict[str, SourceReader] = {}
        self._retired: dict[str, SourceReader] = {}
        self._next_id = 0
        self._turn = 0
        self.until_closed = bool(until_closed)
        self._ever_added = False
        self.batches = 0
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self.in_flight_frames = 0  # frames in batches submitted to the model and not yet handed over
        self._flying: dict[Future, Any] = {}  # batch's marker -> the detector it runs on (``swap`` waits)
        self.swaps = 0
        self.end_markers = bool(end_markers)
        self._source_in_flight: dict[str, int] = {}  # frames of each source taken and not yet handed over
        self._announced: set[str] = set()
        # called with (frames the model ran on, seconds from submit to results) per batch: metrics
        self.on_batch: Callable[[int, float], None] | None = None
        items = sources.items() if isinstance(sources, Mapping) else ((None, s) for s in sources)
        for source_id, source in items:
            self.add(source, source_id)
        self._register()
        self._thread = threading.Thread(target=self._run, name="retina_trt-multistream-infer", daemon=True)
        self._thread.start()

    # -- sources -------------------------------------------------------------------------------
    def add(self, source: Any, source_id: str | None = None, *, drop_stale: bool | None = None) -> str:
        """Start reading ``source`` (while the stream runs, too); returns its id.

        Raises VideoError for a file or folder that does not exist or holds no images, ValueError
        for an id in use. A live source that cannot connect is retried in the background."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this MultiStream is closed")
            if source_id is None:
                while str(self._next_id) in self._readers or str(self._next_id) in self._retired:
                    self._next_id += 1
                source_id = str(self._next_id)
            source_id = str(source_id)
            if source_id in self._readers:
                raise ValueError(f"source id {source_id!r} is in use; remove it first or pass another id")
            reader = SourceReader(
                source_id, source, ready=self._ready, policy=self.policy, drop_stale=drop_stale, **self._reader_options
            )
            self._readers[source_id] = reader
            self._retired.pop(source_id, None)
            self._ever_added = True
        reader.start()
        logger.info("source %s: %s (%s)", source_id, source, "live" if reader.live else "file")
        return source_id

    def remove(self, source_id: str) -> dict[str, Any]:
        """Stop reading a source (frames it still buffers count as dropped); returns its stats."""
        with self._lock:
            reader = self._readers.pop(str(source_id), None)
            if reader is None:
                raise KeyError(f"no source {source_id!r} in this stream (ids: {', '.join(self._readers) or 'none'})")
            self._retired[reader.id] = reader
        reader.stop("removed")
        self._ready.set()
        return reader.stats_dict()

    @property
    def source_ids(self) -> list[str]:
        with self._lock:
            return list(self._readers)

    def source_fps(self, source_id: str) -> float:
        """The frame rate a source declares (its container's; 25 where unknown, e.g. cameras)."""
        with self._lock:
            reader = self._readers.get(source_id) or self._retired.get(source_id)
        if reader is None:
            raise KeyError(f"no source {source_id!r}")
        return reader.source.fps

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-source counters (running and removed sources), by source id."""
        with self._lock:
            readers = {**self._retired, **self._readers}
        return {source_id: reader.stats_dict() for source_id, reader in readers.items()}

    # -- batching and inference ----------------------------------------------------------------
    def _collect(self, in_flight: bool = False) -> list[tuple[SourceReader, SourceFrame, str | None]]:
        """The next batch: one frame per source in turn, each with the schedule's reason to run
        the model on it (None: skipped), until ``batch_size`` frames are to be inferred or the
        push timeout after the first of them; skipped frames alone go at once. [] when every
        source has finished (or the stream stops), or at once when nothing is buffered and
        batches are ``in_flight`` (their results go out first)."""
        batch: list[tuple[SourceReader, SourceFrame, str | None]] = []
        deadline = None
        while not self._stop.is_set():
            self._ready.clear()
            if not batch:  # a source whose last frames are in this batch has not ended for its consumer yet
                self._announce_ended()
            readers = self._readers_in_turn()
            limit = self.batch_size or min(self.max_batch, max(1, len(readers)))
            self._take_round(batch, readers, limit)
            inferred = sum(reason is not None for _, _, reason in batch)
            now = time.perf_counter()
            if inferred and deadline is None:
                deadline = now + self.push_timeout_s
            if inferred >= limit or (inferred and now >= deadline) or (batch and not inferred):
                return batch
            if not batch and (in_flight or self._finished(readers)):
                return []
            self._ready.wait(0.05 if deadline is None else max(0.0, min(0.05, deadline - now)))
        return batch

    def _readers_in_turn(self) -> list[SourceReader]:
        with self._lock:
            readers = list(self._readers.values())
        if readers:
            self._turn = (self._turn + 1) % len(readers)
            readers = readers[self._turn :] + readers[: self._turn]
        return readers

    def _take_round(self, batch: list, readers: list[SourceReader], limit: int) -> None:
        """Take buffered frames, one per source in turn, until ``limit`` are to be inferred (at
        most ``4 * limit`` frames in all, so a run of skipped frames cannot grow a batch forever)."""
        took = True
        while took and len(batch) < 4 * max(limit, len(readers)):
            took = False
            for reader in readers:
                if sum(reason is not None for _, _, reason in batch) >= limit:
                    return
                item = reader.take()
                if item is not None:
                    reason = reader.schedule.decide(item.index, item.timestamp_s, item.motion, reader.generation)
                    batch.append((reader, item, reason))
                    took = True

    def _run(self) -> None:
        try:
            self._guard(self._infer_loop)
        finally:
            self._announce_ended()
            self._put(self._results, END)

    def _infer_loop(self) -> None:
        pending: deque = deque()
        depth = request_depth(self.detector)
        while not self._stop.is_set():
            batch = self._collect(in_flight=bool(pending))
            if batch:
                self.batches += 1
                self.batch_sizes.append(len(batch))
                frames = [item.frame for _, item, reason in batch if reason is not None]
                with self._lock:  # the model this batch runs on, marked before use: ``swap`` waits for it
                    detector, marker = self.detector, Future()
                    self._flying[marker] = detector
                    for reader, _, _ in batch:
                        self._source_in_flight[reader.id] = self._source_in_flight.get(reader.id, 0) + 1
                depth = request_depth(detector)
                submitted = time.perf_counter()
                future = submit_frames(detector, frames, depth) if frames else _done([])
                future.add_done_callback(lambda _, marker=marker: marker.set_result(None))
                pending.append((batch, future, marker))
                self.in_flight_frames += len(batch)
                self._observe(len(frames), submitted, future)
            while pending and (not batch or len(pending) >= depth or pending[0][1].done()):
                done = pending.popleft()
                self._emit(done[0], done[1])
                self.in_flight_frames -= len(done[0])
                with self._lock:
                    self._flying.pop(done[2], None)
                    for reader, _, _ in done[0]:
                        self._source_in_flight[reader.id] -= 1
                self._announce_ended()
            if not batch and not pending:
                with self._lock:
                    readers = list(self._readers.values())
                if self._finished(readers):
                    return
        for batch, future, _ in pending:  # stopped with batches in flight: their frames are dropped
            future.exception()
            for reader, _, _ in batch:
                reader.stats.dropped += 1

    def swap(self, detector, *, warm: bool = True, timeout_s: float = 120.0):
        """Run the next batches on ``detector`` instead, without stopping any source; returns the
        old detector once no batch runs on it any more (the caller closes it).

        The new model is warmed on one frame first (``warm``), beside the old one, which keeps
        running meanwhile; batches in flight finish on the old model, so no frame is lost.

        Raises:
            ValueError: the new model has other classes, or a smaller max batch than this stream's
                batches; the old model keeps running.
        """
        old = self.detector
        check_swappable(old, detector, self.batch_size)
        if warm:
            height, width = getattr(detector, "input_size", None) or (480, 640)
            detector.predict_batch([np.zeros((height, width, 3), np.uint8)])
        with self._lock:
            self.detector, self.max_batch = detector, int(detector.max_batch)
            self.swaps += 1
            running = [future for future, det in self._flying.items() if det is old]
        futures_wait(running, timeout=timeout_s)
        return old

    @contextlib.contextmanager
    def holding(self, frames: int = SWAP_HOLD_FRAMES):
        """Live sources buffer up to ``frames`` frames each instead of dropping the oldest, for the
        time of the block (loading and warming a new model takes the CPU from the running one);
        afterwards each goes back to its buffer once the backlog is analysed."""
        with self._lock:
            readers = list(self._readers.values())
        for reader in readers:
            reader.hold(frames)
        try:
            yield self
        finally:
            for reader in readers:
                reader.release()

    def _observe(self, frames: int, submitted: float, future: Future) -> None:
        """``on_batch(frames, seconds)`` once the model's results are there (not for batches of
        skipped frames only)."""
        if frames and self.on_batch is not None:
            on_batch = self.on_batch
            future.add_done_callback(lambda _: on_batch(frames, time.perf_counter() - submitted))

    def queue_depth(self) -> int:
        """Frames waiting for results: buffered by the sources plus those in batches in flight."""
        with self._lock:
            readers = list(self._readers.values())
        return sum(reader.buffered for reader in readers) + self.in_flight_frames

    def _announce_ended(self) -> None:
        """With ``end_markers``: a :class:`SourceEnd` for each source that ended (or was
        removed) with none of its frames left to hand over, once."""
        if not self.end_markers:
            return
        with self._lock:
            readers = {**self._retired, **self._readers}
            ended = [
                sid
                for sid, reader in readers.items()
                if sid not in self._announced and reader.finished and not self._source_in_flight.get(sid)
            ]
            self._announced.update(ended)
        for sid in ended:
            self._put(self._results, SourceEnd(sid))

    def _finished(self, readers: list[SourceReader]) -> bool:
        """Every source ended (or was removed), unless ``until_closed``."""
        return not self.until_closed and self._ever_added and all(r.finished for r in readers)

    def _emit(self, batch: list[tuple[SourceReader, SourceFrame, str | None]], future: Future) -> None:
        """Hand over a batch's results in order; a skipped frame holds its source's last detections."""
        try:
            results = iter(future.result())
        except Exception as err:  # a failing batch is counted and skipped
            logger.warning("inference failed for a batch of %d frames: %s: %s", len(batch), type(err).__name__, err)
            results = None
        now = time.perf_counter()
        for reader, item, reason in batch:
            if reason is not None and results is None:
                reader.stats.errors += 1
                reader.stats.last_error = "inference failed (see the log)"
                continue
            dets = self._detections(reader, next(results) if reason is not None else None)
            reader.stats.latency_ms = round(1000 * (now - item.read_at), 2)
            result = MultiFrame(
                reader.id,
                item.index,
                item.timestamp_s,
                item.frame,
                dets,
                now - item.read_at,
                reader.generation,
                reason is not None,
                reason,
                item.motion,
            )
            if self._put(self._results, result):
                reader.stats.processed += 1
            else:
                reader.stats.dropped += 1  # closed before the result was handed over

    def _detections(self, reader: SourceReader, inferred: Detections | None) -> Detections:
        """An inference's detections (filtered, and remembered by the source), or the source's
        last ones for a skipped frame (none before its first inference)."""
        if inferred is None:
            if reader.held is None:
                names = getattr(getattr(self.detector, "spec", None), "class_names", ())
                reader.held = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0), names)
            return reader.held
        dets = inferred.filter(min_score=self.min_score) if self.min_score is not None else inferred
        reader.held = dets
        reader.schedule.inferred(dets)
        return dets

    # -- the consumer's side ---------------------------------------------------------------------
    def _running(self) -> bool:
        return self._thread.is_alive() or not self._results.empty()

    def _after_close(self) -> dict[str, dict[str, Any]]:
        return self.stats()

    def _shutdown(self) -> dict[str, dict[str, Any]]:
        """Stop every thread; returns the final per-source stats. Results not yet taken by the
        consumer stay counted as processed; frames still buffered count as dropped."""
        self._stop.set()
        self._ready.set()
        with self._lock:
            readers = list(self._readers.values())
        for reader in readers:
            reader.stop()
        self._thread.join(10)
        return self.stats()

    def __enter__(self) -> MultiStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_swappable(old, new, batch_size: int | None = None) -> None:
    """ValueError unless ``new`` can take over from ``old`` in a running stream: the same class
    names (tracks, counts and events name classes), and room for this stream's batches."""
    old_names = tuple(getattr(getattr(old, "spec", None), "class_names", ()))
    new_names = tuple(getattr(getattr(new, "spec", None), "class_names", ()))
    if old_names != new_names:
        raise ValueError(
            f"the new model's classes {list(new_names)[:8]} differ from the running model's {list(old_names)[:8]}; "
            "the running model stays (a model with other classes needs a restart)"
        )
    if batch_size is not None and int(new.max_batch) < batch_size:
        raise ValueError(
            f"the new model's max batch {new.max_batch} is below this stream's batch_size {batch_size}; "
            "the running model stays"
        )


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future
