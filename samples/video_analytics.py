"""Video analytics over several sources at once: per-class counts in a polygon zone, line
crossings of tracked objects, events to JSONL and a periodic summary.

  python samples/video_analytics.py MODEL SRC [SRC ...] --zone "0.1,0.1;0.9,0.1;0.9,0.9;0.1,0.9" \
      --line "0.5,0;0.5,1" --events out/events.jsonl [--summary-every 5] [--min-score 0.4] [--max-frames N]

Each source (video file, rtsp:// or http:// stream, camera index, image folder) runs its own
`Detector.stream` in a thread; one Detector (one model, one TensorRT engine or ONNX Runtime
session) serves them all. Zone and line coordinates are fractions of each frame.
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


def analyze(det: Detector, source: str, args: argparse.Namespace, events: EventLog, state: dict) -> None:
    tracker = IouTracker()
    zone = line = None
    last_counts: dict[str, int] = {}
    with det.stream(source, max_frames=args.max_frames) as frames:
        state["stream"] = frames
        for index, timestamp, frame, dets in frames:
            height, width = frame.shape[:2]
            if zone is None:
                zone = Zone(parse_points(args.zone, width, height))
                line = Line(*parse_points(args.line, width, height))
            keep = dets.scores >= args.min_score
            boxes, class_ids = dets.boxes_xyxy[keep], dets.class_ids[keep]
            names = [det.spec.class_names[c] if c < len(det.spec.class_names) else str(c) for c in class_ids]
            counts = zone.count(boxes, names)
            if counts != last_counts:
                events.emit({"type": "zone_count", "source": source, "frame": index, "t": round(timestamp, 3), "counts": counts})
                last_counts = counts
            state["zone"] = counts
            for track in tracker.update(boxes, class_ids):
                if track.previous_center is None:
                    continue
                direction = line.crossing(track.previous_center, track.center)
                if direction:
                    name = det.spec.class_names[track.class_id]
                    state["crossings"][direction] = state["crossings"].get(direction, 0) + 1
                    events.emit({"type": "line_crossing", "source": source, "frame": index, "t": round(timestamp, 3),
                                 "track_id": track.track_id, "class": name, "direction": direction})
            state["frames"] = index + 1


def summary(states: dict[str, dict]) -> dict:
    return {
        "type": "summary",
        "time": round(time.time(), 3),
        "sources": {
            src: {"frames": s["frames"], "zone": s["zone"], "crossings": s["crossings"],
                  **({"fps": round(s["stream"].stats.fps, 2), "dropped": s["stream"].stats.frames_dropped,
                      "decode_errors": s["stream"].stats.decode_errors} if "stream" in s else {})}
            for src, s in states.items()
        },
    }


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
    states = {src: {"frames": 0, "zone": {}, "crossings": {}} for src in args.sources}
    errors: dict[str, str] = {}
    with Detector(args.model, session_config={"session.intra_op.allow_spinning": "0"}) as det:
        def worker(src: str) -> None:
            try:
                analyze(det, src, args, events, states[src])
            except Exception as err:  # one broken source must not stop the others
                errors[src] = f"{type(err).__name__}: {err}"

        threads = [threading.Thread(target=worker, args=(src,), daemon=True) for src in args.sources]
        for thread in threads:
            thread.start()
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=args.summary_every / max(1, len(threads)))
                report = summary(states)
                events.emit(report)
                print(json.dumps(report["sources"]))
        except KeyboardInterrupt:
            for state in states.values():
                if "stream" in state:
                    state["stream"].close()
        final = summary(states)
        final["errors"] = errors
        events.emit(final)
    events.close()
    for src, err in errors.items():
        print(f"{src}: {err}", file=sys.stderr)
    print(f"events: {args.events}")
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
