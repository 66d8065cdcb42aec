"""Line crossings and zone entries of tracked objects, per class, as events.

The counting point of a box is its bottom centre (``geometry.bottom_centre``). A track crosses
a line when its counting point is seen on the other side of the line than where it was last
seen (frames where it is missing or exactly on the line are passed over), and the move meets
the line's segment; so an object that is occluded or undetected while it crosses still counts
once it is seen again on the other side under the same track id. A track enters a zone when
its point is first seen inside (also at its first sighting) and leaves when it is seen outside
again or its track is forgotten (not seen for ``forget_after`` frames) while inside. The class
of a track is the class it was detected as most often so far.

Both counters have a dead band of ``margin`` pixels: a point closer than that to the line (or
to the zone's border) is on neither side, so a box that jitters by a pixel or two around the
line while it stands there is not counted in and out again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from retina_trt.analytics.geometry import Line, Point, Zone, bottom_centre
from retina_trt.runtime.detections import Detections


@dataclass
class _TrackState:
    classes: Counter = field(default_factory=Counter)
    point: Point | None = None
    side: float = 0.0  # the last non-zero side of the line
    inside: bool = False
    last_frame: int = 0

    @property
    def class_name(self) -> str:
        return self.classes.most_common(1)[0][0]


def _margin(value: float) -> float:
    if not 0 <= value < 1e4:
        raise ValueError(f"margin must be a number of pixels >= 0, got {value!r}")
    return float(value)


LINE_FORGET_FRAMES = 150  # frames a line's track state survives unseen
ZONE_FORGET_FRAMES = 30  # frames a track inside a zone survives unseen before it counts as gone


class _Tracks:
    """Per-track state, forgotten after ``forget_after`` frames unseen."""

    def __init__(self, forget_after: int) -> None:
        if forget_after < 1:
            raise ValueError(f"forget_after must be >= 1 frame, got {forget_after}")
        self.forget_after = forget_after
        self.states: dict[int, _TrackState] = {}

    def observe(self, tracked: Detections, frame: int):
        """Yield (track id, state, counting point) of each tracked detection, class votes updated."""
        for box, track_id, name in zip(tracked.boxes_xyxy, tracked.tracker_ids, tracked.class_names):
            state = self.states.setdefault(int(track_id), _TrackState())
            state.classes[name] += 1
            state.last_frame = frame
            yield int(track_id), state, bottom_centre(box)

    def expire(self, frame: int) -> list[tuple[int, _TrackState]]:
        gone = [(tid, s) for tid, s in self.states.items() if frame - s.last_frame > self.forget_after]
        for tid, _ in gone:
            del self.states[tid]
        return gone


def _need_ids(tracked: Detections) -> None:
    if tracked.tracker_ids is None:
        raise ValueError("counting needs tracked detections (tracker_ids set): pass them through a tracker first")


class LineCounter:
    """In/out crossings of one line per class; ``update`` returns this frame's crossing events."""

    def __init__(
        self, line: Line, *, name: str = "line", forget_after: int = LINE_FORGET_FRAMES, margin: float = 2.0
    ) -> None:
        self.line, self.name, self.margin = line, name, _margin(margin)
        self.counts: dict[str, dict[str, int]] = {"in": {}, "out": {}}
        self._tracks = _Tracks(forget_after)

    def update(self, tracked: Detections, frame: int) -> list[dict]:
        _need_ids(tracked)
        events = []
        for track_id, state, point in self._tracks.observe(tracked, frame):
            side = self.line.side(point)
            if abs(side) > self.margin:
                if state.side and (side > 0) != (state.side > 0) and self.line.spans(state.point, point):
                    direction = "in" if side > 0 else "out"
                    per_class = self.counts[direction]
                    per_class[state.class_name] = per_class.get(state.class_name, 0) + 1
                    events.append(
                        {
                            "type": "line_crossing",
                            "line": self.name,
                            "direction": direction,
                            "track_id": track_id,
                            "class": state.class_name,
                        }
                    )
                state.side, state.point = side, point
        self._tracks.expire(frame)
        return events

    def reset_tracks(self) -> list[dict]:
        """Forget every track (the tracker started over); the counts stay."""
        self._tracks.states.clear()
        return []


class ZoneCounter:
    """Enter/leave events and occupancy per class of one zone."""

    def __init__(
        self, zone: Zone, *, name: str = "zone", forget_after: int = ZONE_FORGET_FRAMES, margin: float = 2.0
    ) -> None:
        self.zone, self.name, self.margin = zone, name, _margin(margin)
        self.counts: dict[str, dict[str, int]] = {"enter": {}, "leave": {}}
        self._tracks = _Tracks(forget_after)

    @property
    def occupancy(self) -> dict[str, int]:
        """Tracks inside the zone now, per class."""
        inside = Counter(s.class_name for s in self._tracks.states.values() if s.inside)
        return dict(sorted(inside.items()))

    def update(self, tracked: Detections, frame: int) -> list[dict]:
        _need_ids(tracked)
        events = []
        for track_id, state, point in self._tracks.observe(tracked, frame):
            distance = self.zone.distance(point)
            if abs(distance) <= self.margin:
                continue  # in the dead band: keep the last state
            inside = distance > 0
            if inside != state.inside:
                events.append(self._event("zone_enter" if inside else "zone_leave", track_id, state.class_name))
                state.inside = inside
        for track_id, state in self._tracks.expire(frame):
            if state.inside:
                events.append(self._event("zone_leave", track_id, state.class_name, reason="lost"))
        return events

    def reset_tracks(self) -> list[dict]:
        """Forget every track (the tracker started over): those inside leave (``reason: reset``)."""
        events = [
            self._event("zone_leave", tid, s.class_name, reason="reset")
            for tid, s in self._tracks.states.items()
            if s.inside
        ]
        self._tracks.states.clear()
        return events

    def _event(self, kind: str, track_id: int, class_name: str, **extra) -> dict:
        key = "enter" if kind == "zone_enter" else "leave"
        self.counts[key][class_name] = self.counts[key].get(class_name, 0) + 1
        return {"type": kind, "zone": self.name, "track_id": track_id, "class": class_name, **extra}
