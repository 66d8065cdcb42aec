"""``retina-trt analyze``: several sources through one batched ``det.streams``, each with its own
tracker, lines and zones, events to one or more sinks, and optionally the live view.

:func:`run_analyze` is the whole job; the CLI (``cli/analytics.py``) only parses arguments.
Source health becomes events: a monitor thread turns each source's state changes
(``reconnecting``, ``running`` again, ``gave up``) into ``source_lost`` / ``source_recovered``,
so an outage is reported while every other source keeps running.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retina_trt.analytics.events import stamp
from retina_trt.analytics.overlay import snapshot
from retina_trt.analytics.source import AnalyticsConfig, SourceAnalytics
from retina_trt.errors import RetinaTrtError
from retina_trt.io.sources import mask_credentials

logger = logging.getLogger(__name__)


class SinkFailed(RetinaTrtError):
    """An event sink failed for good (its broker refused the credentials): the run stops."""


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How long and how often: ``max_frames`` per source (None: to the end), seconds between
    ``summary`` events, the stream's options (``det.streams(**stream_options)``), an event
    that stops the run when set (from another thread), and the model hot-swap's settings."""

    max_frames: int | None = None
    summary_every_s: float = 5.0
    stream_options: Mapping | None = None
    stop: threading.Event | None = None
    # model hot-swap (analytics/hotswap.py): how to load the model again, a file whose change
    # reloads it, and whether SIGHUP does (main thread only)
    reload: Callable[[], Any] | None = None
    watch: Path | None = None
    reload_on_sighup: bool = False


class _Emitter:
    """Every event to every sink (and to the view's event list)."""

    def __init__(self, sinks: Sequence, view=None) -> None:
        self.sinks, self.view = list(sinks), view

    def __call__(self, event: dict) -> None:
        for sink in self.sinks:
            sink.emit(event)
        if self.view is not None and event.get("type") != "frame":
            self.view.event(event)

    def failed(self) -> str | None:
        """The first sink's failure that will not heal by itself (credentials refused), if any."""
        return next((sink.fatal for sink in self.sinks if getattr(sink, "fatal", None)), None)


class _HealthMonitor(threading.Thread):
    """Polls the stream's per-source state; emits ``source_lost`` / ``source_recovered``."""

    def __init__(self, streams, emit, period_s: float = 0.25) -> None:
        super().__init__(name="source health", daemon=True)
        self.streams, self.emit, self.period_s = streams, emit, period_s
        self.states: dict[str, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period_s):
            self.poll()

    def poll(self) -> None:
        for source_id, stats in self.streams.stats().items():
            state, before = stats["state"], self.states.get(source_id)
            self.states[source_id] = state
            if state == before:
                continue
            if state in ("reconnecting", "gave up"):
                reason = stats["gave_up"] or stats["last_error"] or state
                self.emit(
                    stamp(
                        {"type": "source_lost", "state": state, "reason": reason, "reconnects": stats["reconnects"]},
                        source_id,
                    )
                )
            elif state == "running" and before in ("reconnecting",):
                self.emit(stamp({"type": "source_recovered", "reconnects": stats["reconnects"]}, source_id))


def run_analyze(
    det,
    sources: Mapping[str, object],
    config: AnalyticsConfig,
    sinks: Sequence,
    *,
    options: RunOptions | None = None,
    view=None,
    metrics=None,
    snapshots=None,
    clips=None,
) -> dict:
    """Run until every source ended (or gave up, or ``max_frames``), or Ctrl-C; returns the
    final summary: per source its counts and stream stats, each sink's delivery stats, and
    ``interrupted``: None, or the signal's name (``"SIGINT"``) when interrupted.

    Optional parts (docs/operating.md): ``view`` (``LiveView``), ``metrics``
    (``AnalyticsMetrics``, read when scraped), ``snapshots`` (``Snapshots``: a JPEG per counted
    event) and ``clips`` (``Clips``: a video around each event, then ``clip_ready``)."""
    options = options or RunOptions()
    emit = _Emitter(sinks, view)
    names = {sid: mask_credentials(str(source)) for sid, source in sources.items()}
    hooks = _Hooks(view, metrics, snapshots, clips, names)
    states = {sid: SourceAnalytics(sid, config) for sid in sources}
    stream_options = {"infer": config.infer, **dict(options.stream_options or {})}
    with det.streams(dict(sources), **stream_options) as streams:
        if metrics is not None:
            metrics.attach(streams, states, sinks)
        monitor = _HealthMonitor(streams, emit)
        monitor.start()
        reloader = _start_reloader(streams, emit, options)
        interrupted = None
        try:
            _loop(streams, states, emit, options, hooks)
        except KeyboardInterrupt as err:  # Ctrl-C, or the CLI's SIGTERM: finish every output, then say so
            logger.info("interrupted: closing the sources and the sinks")
            interrupted = int(getattr(err, "signum", signal.SIGINT))
        finally:
            if reloader is not None:
                reloader.stop()
            monitor.stop.set()
            monitor.join()
            monitor.poll()
            stats = streams.close()
    for event in clips.close() if clips is not None else ():
        emit(event)
    final = _summary(states, stats)
    emit(final)
    final["sinks"] = [sink.close() for sink in sinks]
    final["interrupted"] = None if interrupted is None else signal.Signals(interrupted).name
    return final


def _start_reloader(streams, emit, options: RunOptions):
    """The model reloader of ``options`` (None without ``reload``), started; SIGHUP reloads
    when asked and possible (the main thread)."""
    if options.reload is None:
        return None
    from retina_trt.analytics.hotswap import ModelReloader

    reloader = ModelReloader(streams, options.reload, emit, watch=options.watch)
    reloader.start()
    if options.reload_on_sighup and threading.current_thread() is threading.main_thread():
        reloader.previous_sighup = signal.signal(signal.SIGHUP, lambda *_: reloader.request())
    return reloader


@dataclass(frozen=True)
class _Hooks:
    """The optional parts of a run (``run_analyze``'s docstring)."""

    view: Any = None
    metrics: Any = None
    snapshots: Any = None
    clips: Any = None
    names: Mapping[str, str] = field(default_factory=dict)  # source id -> what it is, shown in the view

    def events(self, events: list[dict], result, tracked) -> list[dict]:
        """This frame's events with their snapshot and clip, then the clips that became ready."""
        if self.snapshots is not None:
            events = [self.snapshots.attach(e, result.frame, tracked) for e in events]
        if self.clips is None:
            return events
        events = [self.clips.event(e, result.timestamp_s) for e in events]
        self.clips.frame(result.source_id, result.frame, result.timestamp_s)
        return events + self.clips.ready()


def _loop(streams, states: dict, emit, options: RunOptions, hooks: _Hooks) -> None:
    last = checked = time.monotonic()
    view = hooks.view
    for result in streams:
        if options.stop is not None and options.stop.is_set():
            break
        if time.monotonic() - checked >= 1.0:
            checked = time.monotonic()
            if emit.failed():  # events would go nowhere: stop, and say why
                raise SinkFailed(f"events cannot be delivered: {emit.failed()}")
        if options.max_frames and result.index >= options.max_frames:
            continue  # already in flight when the source was removed
        if hooks.metrics is not None:
            hooks.metrics.observe_frame(result.source_id, result.latency_s)
        analytics = states[result.source_id]
        tracked, events = analytics.update(
            result.frame.shape,
            result.detections,
            result.index,
            result.timestamp_s,
            result.generation,
            inferred=getattr(result, "inferred", True),
        )
        events += analytics.check_health(
            result.frame, result.index, result.timestamp_s, getattr(result, "motion", None), result.generation
        )
        for event in hooks.events(events, result, tracked):
            emit(event)
        if view is not None:
            view.publish(result.source_id, result.frame, tracked, {**snapshot(analytics), "held": not result.inferred})
            view.status(result.source_id, _view_status(analytics, streams, hooks.names.get(result.source_id, "")))
        if options.max_frames and result.index + 1 >= options.max_frames and result.source_id in streams.source_ids:
            streams.remove(result.source_id)
        if time.monotonic() - last >= options.summary_every_s:
            emit(_summary(states, streams.stats()))
            last = time.monotonic()


def _view_status(analytics: SourceAnalytics, streams, name: str) -> dict:
    """What the live view shows of a source: its name, counts, stream state and picture health."""
    stats = streams.stats().get(analytics.source_id, {})
    health = None if analytics.health is None else (analytics.health.reason or "ok")
    return {
        "name": name,
        "frames": analytics.frames,
        "counts": analytics.counts(),
        "health": health,
        **{k: stats.get(k) for k in ("state", "fps", "inferred", "infer_reasons")},
    }


def _summary(states: dict[str, SourceAnalytics], stats: dict[str, dict]) -> dict:
    keys = (
        "state",
        "fps",
        "read",
        "processed",
        "dropped",
        "decode_errors",
        "errors",
        "reconnects",
        "gave_up",
        "inferred",
        "infer_reasons",
    )
    return {
        "type": "summary",
        "time": round(time.time(), 3),
        "sources": {
            sid: {"frames": s.frames, **s.counts(), **{k: stats.get(sid, {}).get(k) for k in keys}}
            for sid, s in states.items()
        },
    }
