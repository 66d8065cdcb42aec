"""The events the analytics emit, as JSON-ready dicts.

Every event has ``type``, ``source`` (the source id) and ``time`` (Unix seconds); frame events
also ``frame`` (index in the source) and ``t`` (seconds into the source). Types:
``line_crossing`` (line, direction in/out, track_id, class), ``zone_enter`` / ``zone_leave``
(zone, track_id, class; ``reason: lost`` when the track vanished inside), ``zone_count``
(zone, per-class occupancy, when it changes), ``source_lost`` / ``source_recovered`` (reason,
reconnects), ``summary`` (periodic: counts, fps, drops per source) and ``frame`` (DeepStream's
minimal schema, one per frame: see :func:`deepstream_message`).
"""

from __future__ import annotations

import datetime as _dt
import time

from retina_trt.runtime.detections import Detections


def stamp(event: dict, source: str, frame: int | None = None, t: float | None = None) -> dict:
    """The event with ``source``, ``time`` (and ``frame``, ``t`` where given) added."""
    where = {"source": source, "time": round(time.time(), 3)}
    if frame is not None:
        where["frame"] = int(frame)
    if t is not None:
        where["t"] = round(float(t), 3)
    return {**event, **where}


def deepstream_message(tracked: Detections, source: str, frame: int) -> dict:
    """One frame's objects in DeepStream's minimal schema (nvmsgconv, payload type 1):
    ``{"version": "4.0", "id": frame, "@timestamp": ISO 8601 UTC, "sensorId": source,
    "objects": ["track|left|top|right|bottom|label", ...]}`` with boxes in frame pixels."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    ids = tracked.tracker_ids if tracked.tracker_ids is not None else [-1] * len(tracked)
    objects = [
        f"{int(track)}|{x1:.1f}|{y1:.1f}|{x2:.1f}|{y2:.1f}|{name}"
        for track, (x1, y1, x2, y2), name in zip(ids, tracked.boxes_xyxy.tolist(), tracked.class_names)
    ]
    return {
        "type": "frame",
        "version": "4.0",
        "id": int(frame),
        "@timestamp": now,
        "sensorId": source,
        "objects": objects,
    }
