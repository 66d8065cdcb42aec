"""Prometheus metrics of a running ``retina-trt analyze`` (``--metrics PORT``), from the
``prometheus-client`` library: its registry, metric families and HTTP server; nothing here writes
the exposition format.

Counters that the stream and the analytics already keep (frames, errors, reconnects, counts,
sink deliveries) are read at scrape time by one collector, so the per-frame path pays nothing for
them; the histograms (end-to-end latency per source, batch size and inference latency per model)
are observed as frames and batches finish. Names follow Prometheus' conventions (``_total``
counters, ``_seconds``); docs/operating.md lists them with a scrape config and alert rules.

Embedding the library: ``AnalyticsMetrics().registry`` is a ``prometheus_client``
``CollectorRegistry``; pass the object to ``run_analyze(metrics=...)`` and expose the registry
however the application does (``prometheus_client.generate_latest(registry)``, or ``serve``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from retina_trt.analytics.health import HEALTH_REASONS
from retina_trt.io.sources import mask_credentials

SOURCE_STATES = ("starting", "running", "reconnecting", "ended", "gave up", "removed")
SOURCE_COUNTERS = (  # stream stats key -> metric name (``_total`` added), help
    ("read", "retina_trt_source_frames_read", "Frames decoded from the source."),
    ("processed", "retina_trt_source_frames_processed", "Frames analysed (tracked and counted)."),
    ("dropped", "retina_trt_source_frames_dropped", "Frames dropped (buffer full on a live source, or closing)."),
    ("inferred", "retina_trt_source_frames_inferred", "Frames the model ran on (the schedule skips the others)."),
    ("decode_errors", "retina_trt_source_decode_errors", "Frames that failed to decode."),
    ("errors", "retina_trt_source_errors", "Frames whose inference failed."),
    ("reconnects", "retina_trt_source_reconnects", "Reconnects of the source."),
)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class AnalyticsMetrics:
    """The metrics of one run: ``registry`` (a ``prometheus_client.CollectorRegistry``), the
    histograms, and a collector that reads the run's stream, analytics and sinks when scraped.

    Args:
        registry: where the metrics live (a new registry by default; the process's global
            ``prometheus_client.REGISTRY`` works too).
        model: the ``model`` label (the model file's name in ``retina-trt analyze``).
    """

    def __init__(self, registry=None, *, model: str = "model") -> None:
        from prometheus_client import CollectorRegistry, Histogram

        self.registry = CollectorRegistry() if registry is None else registry
        self.model = model
        self.latency = Histogram(
            "retina_trt_source_latency_seconds",
            "From a frame's decode to its analysed result.",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "retina_trt_model_batch_size",
            "Frames per model call.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "retina_trt_model_inference_seconds",
            "From a batch's submission to the model's results.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._collector = _RunCollector(model)
        self.registry.register(self._collector)
        self._server = None

    def attach(self, streams, states: Mapping[str, Any], sinks: Sequence) -> None:
        """Read ``streams`` (a ``MultiStream``), the per-source analytics and the sinks when
        scraped, and observe the model's batches."""
        self._collector.attach(streams, states, sinks)
        streams.on_batch = self.observe_batch

    def observe_batch(self, frames: int, seconds: float) -> None:
        self.batch_size.labels(self.model).observe(frames)
        self.inference.labels(self.model).observe(seconds)

    def observe_frame(self, source_id: str, latency_s: float) -> None:
        self.latency.labels(source_id).observe(latency_s)

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
        """Serve ``/metrics`` on ``host:port`` (a thread of ``prometheus_client``); returns the
        bound address (port 0: a free one)."""
        from prometheus_client import start_http_server

        try:
            server, _ = start_http_server(int(port), addr=host, registry=self.registry)
        except OSError as err:
            raise OSError(
                f"the metrics cannot listen on {host}:{port} ({err.strerror or err}); "
                "pick another port with --metrics PORT"
            ) from err
        self._server = server
        return server.server_address[:2]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _RunCollector:
    """Yields the run's counters and gauges from its live objects at scrape time."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._streams, self._states, self._sinks = None, {}, []

    def attach(self, streams, states: Mapping[str, Any], sinks: Sequence) -> None:
        with self._lock:
            self._streams, self._states, self._sinks = streams, states, list(sinks)

    def describe(self) -> list:
        return []  # families depend on the run: registered without a fixed description

    def collect(self) -> Iterator:
        with self._lock:
            streams, states, sinks = self._streams, dict(self._states), list(self._sinks)
        if streams is not None:
            stats = streams.stats()
            yield from _source_families(stats)
            yield from _model_families(self.model, streams)
        yield from _count_families(states)
        yield from _sink_families(sinks)


def _family(kind: str, name: str, help_text: str, labels: Sequence[str]):
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    return (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_text, labels=list(labels))


def _source_families(stats: Mapping[str, dict]) -> Iterator:
    for key, name, help_text in SOURCE_COUNTERS:
        family = _family("counter", name, help_text, ["source"])
        for source_id, s in stats.items():
            family.add_metric([source_id], float(s.get(key) or 0))
        yield family
    state = _family(
        "gauge", "retina_trt_source_state", "1 for the source's current state, 0 otherwise.", ["source", "state"]
    )
    fps = _family("gauge", "retina_trt_source_fps", "Frames analysed per second, lately.", ["source"])
    for source_id, s in stats.items():
        for name in SOURCE_STATES:
            state.add_metric([source_id, name], 1.0 if s.get("state") == name else 0.0)
        fps.add_metric([source_id], float(s.get("fps") or 0.0))
    yield state
    yield fps


def _model_families(model: str, streams) -> Iterator:
    depth = _family("gauge", "retina_trt_model_queue_depth", "Frames waiting for the model's results.", ["model"])
    depth.add_metric([model], float(streams.queue_depth()))
    yield depth
    swaps = _family("counter", "retina_trt_model_swaps", "Models swapped in while running (hot-swap).", ["model"])
    swaps.add_metric([model], float(getattr(streams, "swaps", 0)))
    yield swaps


def _count_families(states: Mapping[str, Any]) -> Iterator:
    lines = _family("counter", "retina_trt_line_crossings", "Line crossings.", ["source", "line", "class", "direction"])
    zones = _family(
        "counter", "retina_trt_zone_events", "Zone entries and exits.", ["source", "zone", "class", "event"]
    )
    occupancy = _family(
        "gauge", "retina_trt_zone_occupancy", "Objects inside the zone now.", ["source", "zone", "class"]
    )
    for source_id, analytics in states.items():
        counts = analytics.counts()
        for line, by_direction in counts["lines"].items():
            _add_per_class(lines, [source_id, line], by_direction)
        for zone, zone_counts in counts["zones"].items():
            _add_per_class(zones, [source_id, zone], {k: zone_counts[k] for k in ("enter", "leave")})
            for class_name, n in zone_counts["occupancy"].items():
                occupancy.add_metric([source_id, zone, class_name], float(n))
    yield lines
    yield zones
    yield occupancy
    yield _health_family(states)


def _health_family(states: Mapping[str, Any]):
    unhealthy = _family(
        "gauge",
        "retina_trt_source_unhealthy",
        "1 while the source's picture is unhealthy for the reason (frozen, black, blank, moved).",
        ["source", "reason"],
    )
    for source_id, analytics in states.items():
        health = getattr(analytics, "health", None)
        for reason in HEALTH_REASONS if health is not None else ():
            unhealthy.add_metric([source_id, reason], 1.0 if health.reason == reason else 0.0)
    return unhealthy


def _add_per_class(family, labels: list[str], by_kind: Mapping[str, Mapping[str, int]]) -> None:
    for kind, per_class in by_kind.items():
        for class_name, n in per_class.items():
            family.add_metric([*labels[:2], class_name, kind], float(n))


def _sink_families(sinks: Sequence) -> Iterator:
    families = {
        "delivered": _family("counter", "retina_trt_sink_events_delivered", "Events delivered.", ["sink"]),
        "dropped": _family("counter", "retina_trt_sink_events_dropped", "Events dropped.", ["sink"]),
        "buffered": _family("gauge", "retina_trt_sink_events_buffered", "Events waiting to be sent.", ["sink"]),
    }
    for sink in sinks:
        stats = sink.stats()
        for key, family in families.items():
            family.add_metric([mask_credentials(str(stats["sink"]))], float(stats.get(key) or 0))
    yield from families.values()
