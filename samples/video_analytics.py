"""Video analytics over several sources with the library API: one batched stream, an OC-SORT
tracker per source, a counting line and a zone, events to a file, MQTT or Redis.

  python samples/video_analytics.py MODEL SRC [SRC ...] [--events out/events.jsonl | mqtt://host:1883/topic]

The same as `retina-trt analyze MODEL SRC ... --line ... --zone ... --events URL` (docs/analytics.md).
"""

from __future__ import annotations

import argparse
import sys

from retina_trt import Detector
from retina_trt.analytics.app import run_analyze
from retina_trt.analytics.sinks import open_sink
from retina_trt.analytics.source import AnalyticsConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--events", default="analytics-output/events.jsonl")
    args = parser.parse_args(argv)

    config = AnalyticsConfig(
        lines=[("middle", "0.5,0;0.5,1")],  # fractions of the frame; "in" = onto its left
        zones=[("centre", "0.25,0.25;0.75,0.25;0.75,0.75;0.25,0.75")],
        tracker="ocsort",
        min_score=0.4,
    )
    sink = open_sink(args.events)  # a path, mqtt://... or redis://...
    with Detector(args.model) as det:
        final = run_analyze(det, {str(i): s for i, s in enumerate(args.sources)}, config, [sink])
    for source, summary in final["sources"].items():
        print(source, summary["frames"], "frames", summary["lines"], summary["zones"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
