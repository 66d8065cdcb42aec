"""Video analytics over several sources at once: per-class counts in a polygon zone, line
crossings of tracked objects, events to JSONL and a periodic summary.

  python samples/video_analytics.py MODEL SRC [SRC ...] --zone "0.1,0.1;0.9,0.1;0.9,0.9;0.1,0.9" \
      --line "0.5,0;0.5,1" --events out/events.jsonl [--summary-every 5] [--min-score 0.4] [--max-frames N]

All sources (video files, rtsp:// or http:// streams, camera indices, image folders) run through
one `det.streams(...)`: frames of every source are batched into one model call, a dead camera is
left out and reconnected in the background, and each source has its own tracker (reset when the
source reconnects). Zone and line coordinates are fractions of each frame.
Events (JSON lines): {"type": "zone_count", ...} when a source's per-class zone counts change,
{"type": "line_crossing", "direction": "in"|"out", "track_id", "class", ...} and
{"type": "summary", ...} every --summary-every seconds and at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from retina_trt import Detector
from retina_trt.analytics import IouTracker, Line, Zone, parse_points
from retina_trt.utils import atomic_path


class EventLog:
    """Thread-safe JSONL events, written under a temporary name and renamed when closed."""

    def __init__(self, path: Path) -> None:
        self._context = atomic_path(path)
        self._file = open(self._context.__enter__(), "w")
        self._lock = threading.Lock()

    def emit(self, event: dict) -> None:
        with self._lock:
            self._file.write(json.dumps(event) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()
        self._context.__exit__(None, None, None)


class SourceAnalytics:
    """One source's tracker, zone and line (made at its first frame, from its frame size)."""

    def __init__(self, source: str) -> None:
        self.source, self.frames, self.zone_counts, self.crossings = source, 0, {}, {}
        self.tracker, self.zone, self.line, self.generation = IouTracker(), None, None, 0

    def update(self, result, names: tuple[str, ...], args: argparse.Namespace, events: EventLog) -> None:
        if self.zone is None:
            height, width = result.frame.shape[:2]
            self.zone = Zone(parse_points(args.zone, width, height))
            self.line = Line(*parse_points(args.line, width, height))
        if result.generation != self.generation:  # the source reconnected: its tracks are gone
            self.tracker, self.generation = IouTracker(), result.generation
        dets = result.detections.filter(min_score=args.min_score)
        where = {"source": self.source, "frame": result.index, "t": round(result.timestamp_s, 3)}
        counts = self.zone.count(dets.boxes_xyxy, list(dets.class_names))
        if counts != self.zone_counts:
            events.emit({"type": "zone_count", **where, "counts": counts})
            self.zone_counts = counts
        for track in self.tracker.update(dets.boxes_xyxy, dets.class_ids):
            direction = track.previous_center is not None and self.line.crossing(track.previous_center, track.center)
            if direction:
                self.crossings[direction] = self.crossings.get(direction, 0) + 1
                events.emit({"type": "line_crossing", **where, "track_id": track.track_id,
                             "class": names[track.class_id], "direction": direction})  # fmt: skip
        self.frames = result.index + 1


def summary(states: dict[str, SourceAnalytics], stats: dict[str, dict]) -> dict:
    return {
        "type": "summary",
        "time": round(time.time(), 3),
        "sources": {
            s.source: {"frames": s.frames, "zone": s.zone_counts, "crossings": s.crossings,
                       **{k: stats.get(key, {}).get(k) for k in ("fps", "dropped", "decode_errors", "reconnects", "gave_up")}}
            for key, s in states.items()
        },
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--zone", default="0.25,0.25;0.75,0.25;0.75,0.75;0.25,0.75")
    parser.add_argument("--line", default="0.5,0;0.5,1")
    parser.add_argument("--events", type=Path, default=Path("analytics-output/events.jsonl"))
    parser.add_argument("--summary-every", type=float, default=5.0, help="seconds between summaries")
    parser.add_argument("--min-score", type=float, default=0.4)
    parser.add_argument("--max-frames", type=int, default=None)
    args = parser.parse_args(argv)

    events = EventLog(args.events)
    sources = {str(i): src for i, src in enumerate(args.sources)}
    states = {key: SourceAnalytics(src) for key, src in sources.items()}
    with Detector(args.model) as det, det.streams(sources) as streams:
        last = time.monotonic()
        try:
            for result in streams:
                states[result.source_id].update(result, det.spec.class_names, args, events)
                if args.max_frames and result.index + 1 >= args.max_frames and result.source_id in streams.source_ids:
                    streams.remove(result.source_id)
                if time.monotonic() - last >= args.summary_every:
                    report = summary(states, streams.stats())
                    events.emit(report)
                    print(json.dumps(report["sources"]))
                    last = time.monotonic()
        except KeyboardInterrupt:
            pass
        stats = streams.close()
    final = summary(states, stats)
    errors = {sources[k]: s["gave_up"] or s["last_error"] for k, s in stats.items() if s["gave_up"] or s["last_error"]}
    final["errors"] = errors
    events.emit(final)
    events.close()
    for src, err in errors.items():
        print(f"{src}: {err}", file=sys.stderr)
    print(f"events: {args.events}")
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
