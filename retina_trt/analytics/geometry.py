"""Zones and counting lines in frame pixels, the point of a box that counts, and their parsing.

Boxes are xyxy pixels. The counting point of a box is its bottom centre (DeepStream's
nvdsanalytics rule): where an object stands on the ground plane, and a point that stays inside
the frame while the box is clipped at the left, right or top edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Point = tuple[float, float]


def bottom_centre(box: np.ndarray) -> Point:
    """The counting point of one box (xyxy pixels): ((x1 + x2) / 2, y2)."""
    return float((box[0] + box[2]) / 2), float(box[3])


def bottom_centres(boxes: np.ndarray) -> np.ndarray:
    """boxes (ndarray[N, 4] float32): xyxy pixels -> ndarray[N, 2] float64 counting points."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], axis=1)


@dataclass(frozen=True)
class Zone:
    """A polygon (pixel vertices, at least 3, not all on one line)."""

    points: tuple[Point, ...]

    def __post_init__(self) -> None:
        points = tuple((float(x), float(y)) for x, y in self.points)
        if len(points) < 3:
            raise ValueError(f"a zone needs at least 3 points, got {len(points)}: give 'x,y;x,y;x,y'")
        if not all(math.isfinite(v) for p in points for v in p):
            raise ValueError(f"zone points must be finite numbers, got {points}")
        crossing = _self_crossing(points)
        if crossing is not None:
            raise ValueError(
                f"a zone's border must not cross itself (edges {crossing[0] + 1} and {crossing[1] + 1} cross: "
                "a bow-tie has no single inside); list the corners in order around the zone"
            )
        if abs(cv2.contourArea(np.asarray(points, np.float32))) < 1e-6:
            raise ValueError(f"a zone must enclose an area; its points {points} lie on one line")
        object.__setattr__(self, "points", points)

    def contains(self, point: Point) -> bool:
        """True for a point inside or on the border."""
        contour = np.asarray(self.points, dtype=np.float32).reshape(-1, 1, 2)
        return cv2.pointPolygonTest(contour, (float(point[0]), float(point[1])), False) >= 0

    def distance(self, point: Point) -> float:
        """Distance in pixels from the zone's border (positive inside)."""
        contour = np.asarray(self.points, dtype=np.float32).reshape(-1, 1, 2)
        return float(cv2.pointPolygonTest(contour, (float(point[0]), float(point[1])), True))

    def count(self, boxes: np.ndarray, class_names: list[str]) -> dict[str, int]:
        """Objects per class whose counting point is in the zone."""
        counts: dict[str, int] = {}
        for point, name in zip(bottom_centres(boxes), class_names):
            if self.contains(point):
                counts[name] = counts.get(name, 0) + 1
        return counts


@dataclass(frozen=True)
class Line:
    """A counting line from ``a`` to ``b``. ``side`` is positive to the left of a->b (in image
    coordinates, y down: for a line drawn top to bottom, the right half of the frame)."""

    a: Point
    b: Point

    def __post_init__(self) -> None:
        a, b = (float(self.a[0]), float(self.a[1])), (float(self.b[0]), float(self.b[1]))
        if not all(math.isfinite(v) for v in a + b):
            raise ValueError(f"line points must be finite numbers, got {a}, {b}")
        if a == b:
            raise ValueError(f"a line needs two different points, got {a} twice")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)

    def side(self, p: Point) -> float:
        """Signed distance in pixels from the (infinite) line, positive on its left."""
        (ax, ay), (bx, by) = self.a, self.b
        return ((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)) / math.hypot(bx - ax, by - ay)

    def spans(self, p: Point, q: Point) -> bool:
        """True when the segment p->q meets the line's own segment a->b (end points included)."""
        seg = Line(p, q) if p != q else None
        if seg is None:
            return False
        t0, t1 = seg.side(self.a), seg.side(self.b)
        return not ((t0 > 0 and t1 > 0) or (t0 < 0 and t1 < 0))

    def crossing(self, previous: Point, current: Point) -> str | None:
        """``"in"`` (onto the left side), ``"out"``, or None: the move previous->current crosses
        the segment a->b from one side to the other (a point on the line is on neither side)."""
        s0, s1 = self.side(previous), self.side(current)
        if s0 == 0 or s1 == 0 or (s0 > 0) == (s1 > 0) or not self.spans(previous, current):
            return None
        return "in" if s1 > 0 else "out"


def parse_points(text: str, width: int, height: int, *, what: str = "points") -> tuple[Point, ...]:
    """``"0.1,0.2;0.5,0.2;..."`` (fractions of the frame in [0, 1]) -> pixel points.

    Raises:
        ValueError: a pair that is not two numbers, or a coordinate outside [0, 1] (outside the
            frame); the message names the pair.
    """
    points = []
    for pair in text.split(";"):
        try:
            x, y = (float(v) for v in pair.split(","))
        except ValueError as err:
            raise ValueError(f"{what}: expected 'x,y' pairs separated by ';', got {pair!r} in {text!r}") from err
        if not (0 <= x <= 1 and 0 <= y <= 1):
            raise ValueError(f"{what}: coordinates are fractions of the frame in [0, 1] (inside it), got {pair!r}")
        points.append((x * width, y * height))
    return tuple(points)


def _self_crossing(points: tuple[Point, ...]) -> tuple[int, int] | None:
    """The first two edges of the closed polygon that cross (not neighbours), or None."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # neighbours through the closing edge
            if _segments_cross(*edges[i], *edges[j]):
                return i, j
    return None


def _segments_cross(a: Point, b: Point, c: Point, d: Point) -> bool:
    """True when segments ab and cd cross at a point inside both (touching ends do not count)."""

    def side(p: Point, q: Point, r: Point) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    d1, d2, d3, d4 = side(c, d, a), side(c, d, b), side(a, b, c), side(a, b, d)
    return d1 * d2 < 0 and d3 * d4 < 0


def parse_zone(text: str, width: int, height: int) -> Zone:
    """A zone from ``"x,y;x,y;x,y[;...]"`` fractions of the frame."""
    return Zone(parse_points(text, width, height, what="zone"))


def parse_line(text: str, width: int, height: int) -> Line:
    """A line from ``"x,y;x,y"`` fractions of the frame."""
    points = parse_points(text, width, height, what="line")
    if len(points) != 2:
        raise ValueError(f"line: expected two points 'x,y;x,y', got {len(points)} in {text!r}")
    return Line(*points)
