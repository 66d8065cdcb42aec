"""What the live view draws over a frame (retina_trt.analytics.overlay), and lines and zones that
follow a source whose frame size changes (SourceAnalytics)."""

from __future__ import annotations

import numpy as np

from retina_trt.analytics.overlay import LINE_COLOUR, ZONE_COLOUR, draw_geometry, snapshot
from retina_trt.analytics.source import AnalyticsConfig, SourceAnalytics
from retina_trt.runtime.detections import Detections

CONFIG = AnalyticsConfig(zones=(("left", "0,0;0.5,0;0.5,1;0,1"),), lines=(("mid", "0.75,0;0.75,1"),), tracker="iou")


def _one_object(x: float, y: float) -> Detections:
    """One detection whose counting point (bottom centre) is (x, y)."""
    return Detections(np.array([[x - 5, y - 10, x + 5, y]], np.float32), np.array([0.9], np.float32), [0], ("circle",))


def _run(analytics: SourceAnalytics, size: tuple[int, int], points, start: int) -> list[dict]:
    events = []
    for i, (x, y) in enumerate(points):
        events += analytics.update((*size, 3), _one_object(x, y), start + i, (start + i) / 15)[1]
    return events


def test_lines_and_zones_follow_a_new_frame_size_and_keep_their_counts():
    analytics = SourceAnalytics("cam", CONFIG)
    events = _run(analytics, (100, 200), [(40, 60)] * 4, 0)
    assert [e["type"] for e in events if e["type"] == "zone_enter"] == ["zone_enter"]
    assert analytics.zones[0].zone.points == ((0, 0), (100, 0), (100, 100), (0, 100))
    events = _run(analytics, (200, 400), [(80, 120)] * 4, 4)  # the camera came back at twice the size
    assert analytics.zones[0].zone.points == ((0, 0), (200, 0), (200, 200), (0, 200))
    assert analytics.lines[0].line.a == (300.0, 0.0) and analytics.frame_size == (200, 400)
    leaves = [e for e in events if e["type"] == "zone_leave"]
    assert [e["reason"] for e in leaves] == ["reset"]  # the old track's pixels meant nothing any more
    assert analytics.counts()["zones"]["left"]["enter"] == {"circle": 2}  # counts kept, the object seen again
    assert analytics.counts()["zones"]["left"]["occupancy"] == {"circle": 1}


def test_overlay_draws_each_line_with_its_in_side_and_each_zone_with_its_counts():
    analytics = SourceAnalytics("cam", CONFIG)
    _run(analytics, (240, 320), [(60, 200)] * 3, 0)
    canvas = draw_geometry(np.zeros((240, 320, 3), np.uint8), snapshot(analytics))

    def near(pixel, colour) -> bool:
        return bool(np.abs(pixel.astype(int) - colour).max() <= 40)

    assert near(canvas[120, 240], LINE_COLOUR)  # the line x = 0.75 * 320
    assert near(canvas[120, 160], ZONE_COLOUR) and near(canvas[200, 0], ZONE_COLOUR)  # the zone's edges
    line = analytics.lines[0].line
    arrow = np.argwhere(np.all(np.abs(canvas[110:131, 200:280].astype(int) - LINE_COLOUR) <= 40, axis=2))
    arrow_x = arrow[:, 1] + 200
    assert line.side((float(arrow_x.min()), 120.0)) > 0 and arrow_x.min() < 236  # the arrow points to "in"
    assert np.count_nonzero(canvas[:30].max(axis=2)) > 50  # the labels are written
    assert snapshot(analytics)["zones"] == [("left", analytics.zones[0].zone.points, 1)]
    assert snapshot(analytics)["lines"][0][3] == {"in": 0, "out": 0}


def test_overlay_leaves_a_frame_without_lines_or_zones_as_it_was():
    analytics = SourceAnalytics("cam", AnalyticsConfig(tracker="iou"))
    _run(analytics, (48, 64), [(10, 20)], 0)
    canvas = np.full((48, 64, 3), 7, np.uint8)
    assert np.array_equal(draw_geometry(canvas.copy(), snapshot(analytics)), canvas)
