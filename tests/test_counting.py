"""Line and zone counting of tracked objects (retina_trt.analytics.counting, geometry)."""

from __future__ import annotations

import numpy as np
import pytest

from retina_trt.analytics.counting import LineCounter, ZoneCounter
from retina_trt.analytics.geometry import Line, Zone, bottom_centre, parse_line, parse_zone
from retina_trt.runtime.detections import Detections

NAMES = ("circle", "square")


def _tracked(*objects) -> Detections:
    """objects: (track_id, class_id, bottom-centre x, bottom-centre y) -> 20x20 boxes."""
    boxes = [[x - 10, y - 20, x + 10, y] for _, _, x, y in objects]
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.ones(len(objects)),
        [o[1] for o in objects],
        NAMES,
        [o[0] for o in objects],
    )


def test_counting_point_is_the_bottom_centre():
    assert bottom_centre(np.array([10, 20, 30, 60])) == (20.0, 60.0)


def test_line_counts_each_direction_once_per_class():
    counter = LineCounter(Line((100, 0), (100, 200)))  # "in" is onto the left side: x < 100
    events = []
    for frame, x in enumerate([60, 80, 95, 105, 130]):
        events += counter.update(_tracked((1, 0, x, 50), (2, 1, 200 - x, 150)), frame)
    assert counter.counts == {"in": {"square": 1}, "out": {"circle": 1}}
    assert [(e["track_id"], e["direction"]) for e in events] == [(1, "out"), (2, "in")]


def test_line_counts_a_crossing_made_while_the_track_was_unseen():
    counter = LineCounter(Line((100, 0), (100, 200)))
    counter.update(_tracked((1, 0, 80, 50)), 0)
    for frame in range(1, 6):  # occluded: the tracker reports nothing
        counter.update(_tracked(), frame)
    counter.update(_tracked((1, 0, 130, 50)), 6)
    assert counter.counts == {"in": {}, "out": {"circle": 1}}


def test_line_dead_band_ignores_jitter_on_the_line_and_touching():
    counter = LineCounter(Line((100, 0), (100, 200)), margin=2.0)
    for frame, x in enumerate([90, 99, 101.5, 99, 101, 98.5, 90]):  # stands on the line, never beyond 2 px
        counter.update(_tracked((1, 0, x, 50)), frame)
    assert counter.counts == {"in": {}, "out": {}}


def test_line_segment_bounds_and_class_by_majority():
    counter = LineCounter(Line((100, 0), (100, 100)))
    counter.update(_tracked((1, 0, 80, 150)), 0)
    counter.update(_tracked((1, 0, 120, 150)), 1)  # passes below the segment's end
    assert counter.counts == {"in": {}, "out": {}}
    counter.update(_tracked((2, 1, 80, 50)), 2)
    counter.update(_tracked((2, 1, 85, 50)), 3)
    counter.update(_tracked((2, 0, 120, 50)), 4)  # misclassified once, as it crosses
    assert counter.counts == {"in": {}, "out": {"square": 1}}


def test_zone_enter_leave_occupancy_and_lost_tracks():
    zone = ZoneCounter(Zone(((50, 50), (150, 50), (150, 150), (50, 150))), forget_after=2)
    kinds = []
    for frame, x in enumerate([20, 60, 100, 160]):
        kinds += [e["type"] for e in zone.update(_tracked((1, 0, x, 100)), frame)]
        if frame == 2:
            assert zone.occupancy == {"circle": 1}
    assert kinds == ["zone_enter", "zone_leave"] and zone.occupancy == {}
    zone.update(_tracked((2, 1, 100, 100)), 10)  # first seen inside: enters
    events = []
    for frame in range(11, 15):
        events += zone.update(_tracked(), frame)
    assert [(e["type"], e.get("reason")) for e in events] == [("zone_leave", "lost")]
    assert zone.counts == {"enter": {"circle": 1, "square": 1}, "leave": {"circle": 1, "square": 1}}


def test_reset_forgets_tracks_and_keeps_counts():
    zone = ZoneCounter(Zone(((0, 0), (100, 0), (100, 100), (0, 100))))
    zone.update(_tracked((1, 0, 50, 50)), 0)
    assert [e["reason"] for e in zone.reset_tracks()] == ["reset"]
    assert zone.counts["enter"] == {"circle": 1} and zone.occupancy == {}


def test_counters_need_tracked_detections():
    with pytest.raises(ValueError, match="tracker"):
        LineCounter(Line((0, 0), (1, 1))).update(Detections.empty(NAMES), 0)


@pytest.mark.parametrize(
    "text, match",
    [
        ("0.1,0.1;0.5,0.5", "at least 3 points"),
        ("0.1,0.1;0.5,0.5;0.9,0.9", "one line"),
        ("0.1,0.1;1.5,0.5;0.9,0.2", r"inside it"),
        ("0.1,0.1;x,0.5;0.9,0.2", "pairs"),
    ],
)
def test_bad_zones_are_refused_with_the_reason(text, match):
    with pytest.raises(ValueError, match=match):
        parse_zone(text, 640, 480)


def test_bad_lines_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="two points"):
        parse_line("0.1,0.1;0.2,0.2;0.3,0.3", 640, 480)
    with pytest.raises(ValueError, match="different"):
        parse_line("0.5,0.5;0.5,0.5", 640, 480)
    with pytest.raises(ValueError, match="margin"):
        LineCounter(Line((0, 0), (1, 1)), margin=float("nan"))
