"""Video analytics on top of the runtime: trackers (``tracking``), zones and counting lines
(``geometry``, ``counting``), events and their sinks (``events``, ``sinks``), one source's
analytics (``source``) and the live view (``view``). See docs/analytics.md."""

from retina_trt.analytics.counting import LineCounter, ZoneCounter
from retina_trt.analytics.geometry import (
    Line,
    Zone,
    bottom_centre,
    parse_line,
    parse_points,
    parse_zone,
)
from retina_trt.analytics.tracking import DEFAULT_TRACKER, TRACKERS, make_tracker
from retina_trt.analytics.tracking_iou import IouTracker

__all__ = [
    "DEFAULT_TRACKER",
    "TRACKERS",
    "IouTracker",
    "Line",
    "LineCounter",
    "Zone",
    "ZoneCounter",
    "bottom_centre",
    "make_tracker",
    "parse_line",
    "parse_points",
    "parse_zone",
]
