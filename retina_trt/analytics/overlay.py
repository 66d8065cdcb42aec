"""The lines and zones of one source drawn over its frame, with their counts, for the live view.

Lines are drawn with an arrow towards their ``in`` side and ``name in N out M``; zones as closed
outlines with ``name N inside``. Colours are fixed per kind so a person can tell them from the
tracked boxes (which ``Detections.draw`` colours by class)."""

from __future__ import annotations

import cv2
import numpy as np

LINE_COLOUR = (0, 215, 255)  # BGR amber
ZONE_COLOUR = (255, 160, 0)  # BGR azure
HELD_COLOUR = (200, 200, 200)  # BGR light grey


def snapshot(analytics) -> dict:
    """What ``draw_geometry`` draws, copied from ``analytics`` (a ``SourceAnalytics``) in the
    analytics loop: the view draws in its own threads, never from counters that are changing."""
    return {
        "lines": [
            (c.name, c.line.a, c.line.b, {d: sum(n.values()) for d, n in c.counts.items()}) for c in analytics.lines
        ],
        "zones": [(c.name, c.zone.points, sum(c.occupancy.values())) for c in analytics.zones],
    }


def draw_geometry(canvas: np.ndarray, shapes: dict) -> np.ndarray:
    """Draw a ``snapshot``'s lines and zones with their counts onto ``canvas`` in place."""
    thickness = max(2, round(min(canvas.shape[:2]) / 240))
    for name, points, inside in shapes["zones"]:
        polygon = np.round(np.asarray(points)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [polygon], True, ZONE_COLOUR, thickness, cv2.LINE_AA)
        _label(canvas, f"{name} {inside} inside", polygon[:, 0].min(axis=0), ZONE_COLOUR)
    for name, a, b, totals in shapes["lines"]:
        a, b = np.round(np.asarray(a)).astype(int), np.round(np.asarray(b)).astype(int)
        cv2.line(canvas, tuple(a.tolist()), tuple(b.tolist()), LINE_COLOUR, thickness, cv2.LINE_AA)
        _in_arrow(canvas, a, b, thickness)
        _label(canvas, f"{name} in {totals['in']} out {totals['out']}", np.minimum(a, b), LINE_COLOUR)
    if shapes.get("held"):  # the model skipped this frame: the boxes are the tracks' last ones
        _label(canvas, "held: last boxes (model skipped)", np.array([4, canvas.shape[0] - 24]), HELD_COLOUR)
    return canvas


def _in_arrow(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, thickness: int) -> None:
    """A short arrow from the line's middle towards its ``in`` side (the left of a->b, y down)."""
    direction = (b - a).astype(float)
    normal = np.array([-direction[1], direction[0]]) / max(np.hypot(*direction), 1e-9)
    middle = (a + b) / 2
    tip = middle + normal * max(12, 8 * thickness)
    cv2.arrowedLine(
        canvas,
        tuple(np.round(middle).astype(int).tolist()),
        tuple(np.round(tip).astype(int).tolist()),
        LINE_COLOUR,
        thickness,
        cv2.LINE_AA,
        tipLength=0.4,
    )


def _label(canvas: np.ndarray, text: str, corner: np.ndarray, colour: tuple[int, int, int]) -> None:
    scale = max(0.4, min(canvas.shape[:2]) / 900)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = int(np.clip(corner[0], 0, max(canvas.shape[1] - w, 0)))
    y = int(np.clip(corner[1] - 4, h + base, canvas.shape[0] - 1))
    cv2.rectangle(canvas, (x, y - h - base), (x + w, y + base), (0, 0, 0), -1)
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
