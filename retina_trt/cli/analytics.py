"""``analyze``: tracking, line and zone counts and events over several sources (analytics/app.py)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from retina_trt.argtypes import infer_schedule, positive, positive_float, positive_int, score
from retina_trt.cli.flags import detector_options
from retina_trt.contract import BACKENDS, CPU_PRECISIONS


def register(sub) -> None:
    """Add this group's subcommands to the ``retina-trt`` parser."""
    p = sub.add_parser("analyze", help="track, count (lines, zones) and send events over several sources")
    p.add_argument("model", help=".engine, .onnx or .pt model, or grpc://HOST:PORT/NAME (a Triton server)")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="video files, folders, stream URLs or camera indices")
    p.add_argument(
        "--zone",
        action="append",
        default=[],
        metavar="[NAME=]X,Y;X,Y;X,Y...",
        help="a zone polygon, coordinates as fractions of the frame (repeatable)",
    )
    p.add_argument(
        "--line",
        action="append",
        default=[],
        metavar="[NAME=]X,Y;X,Y",
        help="a counting line, fractions of the frame; 'in' is onto its left side (repeatable)",
    )
    _events_flags(p)
    p.add_argument("--tracker", default=None, help="ocsort (default), bytetrack, sort or iou")
    p.add_argument(
        "--confirm-frames",
        type=positive_int,
        default=None,
        metavar="N",
        help="matches in a row before a track gets its id (default: 2 for ocsort, the library's for "
        "bytetrack and sort); 2 or more keeps 1-2-frame false detections from being counted",
    )
    p.add_argument("--min-score", type=score, default=0.4, help="detections below are not tracked (default 0.4)")
    p.add_argument(
        "--fps", type=positive(float, "frame rate", 1000.0), default=15.0, help="the sources' nominal frame rate (15)"
    )
    p.add_argument("--frame-messages", action="store_true", help="also one DeepStream-schema message per frame")
    p.add_argument(
        "--infer",
        type=infer_schedule,
        default="adaptive",
        metavar="every|N|adaptive",
        help="when the model runs on a frame: adaptive (default: motion, moving objects, a refresh every 2 s; "
        "counts stay exact), every frame, or every N-th; docs/analytics.md#adaptive-inference",
    )
    p.add_argument("--summary-every", type=positive_float, default=5.0, help="seconds between summary events")
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop each source after N frames")
    p.add_argument("--buffer", type=positive_int, default=10_000, help="events buffered per broker while it is away")
    _operations_flags(p)
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--cpu-precision", default="auto", choices=CPU_PRECISIONS)
    p.set_defaults(run=_cmd_analyze)


def _events_flags(p) -> None:
    """Where analyze's events go (docs/analytics.md#sinks)."""
    p.add_argument(
        "--events",
        action="append",
        default=[],
        metavar="URL",
        help="events.jsonl (default analytics-output/events.jsonl), mqtt://HOST:1883/TOPIC or "
        "redis://HOST:6379/STREAM; mqtts:// and rediss:// over TLS (repeatable)",
    )
    p.add_argument(
        "--events-ca",
        default=None,
        metavar="PEM",
        help="the CA certificate that signed the mqtts:// and rediss:// brokers' certificates "
        "(default: the system's trust store)",
    )
    p.add_argument("--events-cert", default=None, metavar="PEM", help="client certificate for brokers that require one")
    p.add_argument("--events-key", default=None, metavar="PEM", help="its private key (if not in --events-cert)")


def _operations_flags(p) -> None:
    """analyze's flags for running it unattended: health, the view, metrics, snapshots, clips
    (docs/operating.md)."""
    p.add_argument(
        "--frozen-s",
        type=positive_float,
        default=None,
        help="seconds of the same picture before a camera is reported frozen (default 10)",
    )
    p.add_argument("--no-health", action="store_true", help="no camera health events (frozen, black, blank, moved)")
    p.add_argument("--view", type=int, default=None, metavar="PORT", help="serve the live view on this port")
    p.add_argument("--view-host", default="127.0.0.1", help="address of the live view (default 127.0.0.1)")
    p.add_argument(
        "--view-allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the view answers besides its addresses and localhost (repeatable)",
    )
    p.add_argument(
        "--view-token-file", default=None, metavar="F", help="require the token in F (or $RETINA_TRT_VIEW_TOKEN)"
    )
    p.add_argument(
        "--metrics", type=int, default=None, metavar="PORT", help="serve Prometheus metrics on PORT (/metrics)"
    )
    p.add_argument("--snapshots", default=None, metavar="DIR", help="a JPEG per line crossing and zone event in DIR")
    p.add_argument("--snapshot-crop", action="store_true", help="snapshots crop the object instead of the whole frame")
    p.add_argument(
        "--snapshot-budget-mb", type=positive_float, default=1000.0, help="disk for snapshots; oldest removed (1000)"
    )
    p.add_argument("--clips", default=None, metavar="DIR", help="a video clip around each line or zone event in DIR")
    p.add_argument("--pre", type=float, default=5.0, metavar="S", help="seconds of a clip before its event (5)")
    p.add_argument("--post", type=float, default=5.0, metavar="S", help="seconds of a clip after its last event (5)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics (default 127.0.0.1)")


def named(items: list[str], kind: str) -> list[tuple[str, str]]:
    """``["gate=0,0;1,1", "0.5,0;0.5,1"]`` -> ``[("gate", ...), ("line2", ...)]``."""
    out = []
    for i, item in enumerate(items, 1):
        name, sep, text = item.partition("=")
        if sep and not name.strip():
            raise ValueError(
                f"--{kind} {item!r}: the name before '=' is empty; give one (door=...) or leave out the '='"
            )
        out.append((name.strip(), text) if sep else (f"{kind}{i}", item))
    return out


def _analytics_config(args: argparse.Namespace):
    """The ``AnalyticsConfig`` of the flags, after the checks argparse cannot make."""
    from retina_trt.analytics.health import HealthOptions
    from retina_trt.analytics.source import AnalyticsConfig
    from retina_trt.analytics.tracking import DEFAULT_TRACKER

    for flag, port, host in (("--view", args.view, args.view_host), ("--metrics", args.metrics, args.metrics_host)):
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"{flag} needs a port number in 0..65535, got {port}")
        if port is not None and not host.strip():
            raise ValueError(
                f"{flag}-host is empty; give an address (127.0.0.1: this machine only, 0.0.0.0: every one)"
            )
    if args.tracker is not None and not args.tracker.strip():
        raise ValueError("--tracker is empty; give ocsort (the default), bytetrack, sort or iou, or leave it out")
    return AnalyticsConfig(
        zones=named(args.zone, "zone"),
        lines=named(args.line, "line"),
        tracker=args.tracker or DEFAULT_TRACKER,
        min_score=args.min_score,
        fps=args.fps,
        confirm_frames=args.confirm_frames,
        frame_messages=args.frame_messages,
        infer=args.infer,
        health=None if args.no_health else HealthOptions(**({"frozen_s": args.frozen_s} if args.frozen_s else {})),
    )


def _cmd_analyze(args: argparse.Namespace) -> int:
    from retina_trt import Detector
    from retina_trt.analytics.app import RunOptions, run_analyze
    from retina_trt.analytics.sinks import open_sink

    config = _analytics_config(args)
    sources = {str(i): src for i, src in enumerate(args.sources)}
    sinks = []
    view = metrics = None
    try:
        view = _open_view(args)
        metrics = _serve_metrics(args)
        pictures = _pictures(args, config.fps)
        inputs = _inputs(args)
        tls = {"ca_file": args.events_ca, "cert_file": args.events_cert, "key_file": args.events_key}
        for url in _unique_events(args.events or ["analytics-output/events.jsonl"], tls):
            sinks.append(open_sink(url, buffer=args.buffer, inputs=inputs, **tls))
        with Detector(args.model, **detector_options(args)) as det:
            print(f"backend: {det.backend} ({det.precision}); tracker: {config.tracker}", flush=True)
            final = run_analyze(
                det,
                sources,
                config,
                sinks,
                view=view,
                metrics=metrics,
                **pictures,
                options=RunOptions(
                    max_frames=args.max_frames,
                    summary_every_s=args.summary_every,
                    reload=lambda: Detector(args.model, **detector_options(args)),
                    watch=Path(args.model) if Path(args.model).is_file() else None,
                    reload_on_sighup=True,
                ),
            )
    finally:
        for sink in sinks:
            sink.close()
        for server in (view, metrics):
            if server is not None:
                server.close()
    return _report(final, sources)


def _open_view(args: argparse.Namespace):
    """The live view of ``--view`` (None without it), with its access rules; a warning when it is
    open to the network without a token."""
    from retina_trt.analytics.view import LiveView
    from retina_trt.analytics.view_access import read_token, warn_if_exposed

    if args.view is None:
        return None
    token = read_token(args.view_token_file)
    view = LiveView(
        args.view, host=args.view_host, snapshots=args.snapshots, allowed_hosts=args.view_allow_host, token=token
    )
    warning = warn_if_exposed(args.view_host, token)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"live view: {view.url}" + (" (open it once as ?token=TOKEN)" if token else ""), flush=True)
    return view


def _inputs(args: argparse.Namespace) -> list:
    """Every file the run reads: the model, the sources and the files of folders and globs (no
    output may be one of them)."""
    from retina_trt.io.sources import expand_sources

    try:
        images, videos = expand_sources([str(s) for s in args.sources])
    except Exception:  # a missing source is reported by the stream, with its own message
        images, videos = [], []
    read = [args.model, *args.sources, *images, *(v for v in videos if isinstance(v, Path))]
    return read + [f for f in (args.events_ca, args.events_cert, args.events_key) if f]


def _unique_events(urls: list[str], tls: dict | None = None) -> list[str]:
    """``--events`` with each file given once: the same file twice (``a.jsonl``, ``./a.jsonl``)
    is refused before any work; so are TLS files without a TLS broker to use them."""
    given = [name for name, path in (tls or {}).items() if path is not None]
    if given and not any(url.startswith(("mqtts://", "rediss://")) for url in urls):
        flags = ", ".join("--events-" + name.removesuffix("_file") for name in given)
        raise ValueError(f"{flags}: for mqtts:// and rediss:// events; no --events URL uses TLS")
    seen: dict[str, str] = {}
    for url in urls:
        key = str(Path(url).resolve()) if "://" not in url else url
        if key in seen:
            raise ValueError(f"--events {url!r} names the same place as --events {seen[key]!r}; give each once")
        seen[key] = url
    return urls


def _pictures(args: argparse.Namespace, fps: float) -> dict:
    """``run_analyze``'s ``snapshots`` and ``clips`` from the flags (docs/operating.md)."""
    from retina_trt.analytics.clips import Clips
    from retina_trt.analytics.snapshots import Snapshots

    parts = {}
    if args.snapshots:
        parts["snapshots"] = Snapshots(args.snapshots, budget_mb=args.snapshot_budget_mb, crop=args.snapshot_crop)
    if args.clips:
        parts["clips"] = Clips(args.clips, pre_s=args.pre, post_s=args.post, fps=fps)
    return parts


def _serve_metrics(args: argparse.Namespace):
    """The run's Prometheus metrics served on ``--metrics`` (None without the flag)."""
    if args.metrics is None:
        return None
    from retina_trt.analytics.metrics import AnalyticsMetrics

    try:
        metrics = AnalyticsMetrics(model=Path(args.model).name)
    except ImportError as err:  # prometheus-client is in the analytics extra
        raise ImportError("--metrics needs prometheus-client: pip install 'retina-trt[analytics]'") from err
    host, port = metrics.serve(args.metrics, args.metrics_host)
    print(f"metrics: http://{host}:{port}/metrics", flush=True)
    return metrics


def _report(final: dict, sources: dict) -> int:
    from retina_trt.io.sources import mask_credentials

    failed = 0
    for sid, s in final["sources"].items():
        print(
            f"{sources[sid]}: {s['frames']} frames, lines {s['lines']}, zones "
            f"{ {k: {'enter': v['enter'], 'leave': v['leave']} for k, v in s['zones'].items()} }"
        )
        if s.get("gave_up"):
            failed += 1
            print(f"{sources[sid]}: gave up: {s['gave_up']}", file=sys.stderr)
    for sink in final["sinks"]:
        print(f"events -> {mask_credentials(sink['sink'])}: {sink['delivered']} delivered, {sink['dropped']} dropped")
    fatal = [sink["fatal"] for sink in final["sinks"] if sink.get("fatal")]
    if fatal:  # a sink that delivered nothing for a reason that will not heal is a failed run
        print(f"retina-trt analyze: error: events cannot be delivered: {fatal[0]}", file=sys.stderr)
        return 2
    if final.get("interrupted"):  # the outputs are whole, but the run is not a success
        signum = signal.Signals[final["interrupted"]]
        print(f"retina-trt analyze: interrupted ({signum.name}); finished outputs are kept", file=sys.stderr)
        return 128 + int(signum)
    return 2 if failed else 0
