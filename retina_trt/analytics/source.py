"""One source's analytics: its tracker, its lines and zones, and the events they make.

:class:`SourceAnalytics` takes one processed frame at a time (a ``MultiFrame`` of
``det.streams`` or any frame with its detections) and returns the events of that frame. Zones
and lines are given as fractions of the frame (``"x,y;x,y;..."``) and placed when the first
frame shows the frame size (and again, keeping the counts, when the size changes). A new
``generation`` (the source reconnected) starts a fresh tracker, so ids stay unique per source
run and no track jumps across an outage.

A frame the inference schedule skipped (``MultiFrame.inferred`` False: ``streams/schedule.py``)
neither steps the tracker (a skipped frame never ages a track) nor reaches a counter (counts come
from real detections only); it shows the tracks' last boxes, marked held (``"inferred": false`` in
its frame message).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retina_trt.analytics.counting import LINE_FORGET_FRAMES, ZONE_FORGET_FRAMES, LineCounter, ZoneCounter
from retina_trt.analytics.events import deepstream_message, stamp
from retina_trt.analytics.geometry import parse_line, parse_zone
from retina_trt.analytics.health import HealthOptions, SourceHealth
from retina_trt.analytics.tracking import DEFAULT_TRACKER, make_tracker
from retina_trt.runtime.detections import Detections
from retina_trt.streams.schedule import InferSchedule

MAX_FPS = 1000.0  # a source's nominal frame rate: beyond it a typo, not a camera


@dataclass(frozen=True, kw_only=True)
class AnalyticsConfig:
    """What every source counts.

    Attributes:
        zones, lines: ``(name, "x,y;x,y;...")`` with coordinates as fractions of the frame.
        tracker: one of ``retina_trt.analytics.TRACKERS``.
        min_score: detections below it are not tracked.
        fps: the sources' nominal frame rate (sets the trackers' lost-track time in frames).
        confirm_frames: matches in a row before a library tracker's track gets its id (None: the
            tracker's default, ``OCSORT_CONFIRM_FRAMES`` for OC-SORT).
        frame_messages: also emit one DeepStream-schema ``frame`` message per frame.
        infer: when the model runs on a source's frame (``streams/schedule.py``: ``"adaptive"``, the
            default, ``"every"`` or a whole N); the trackers' and counters' time-outs follow it, so
            they stay in seconds however many frames the model skips.
        health: when a picture is frozen, black, blank or moved (``analytics/health.py``); None:
            no camera health events.
    """

    zones: Sequence[tuple[str, str]] = ()
    lines: Sequence[tuple[str, str]] = ()
    tracker: str = DEFAULT_TRACKER
    min_score: float = 0.4
    fps: float = 15.0
    confirm_frames: int | None = None
    frame_messages: bool = False
    infer: InferSchedule | str | int = "adaptive"  # measured: docs/analytics.md#adaptive-inference
    health: HealthOptions | None = HealthOptions()

    def __post_init__(self) -> None:
        object.__setattr__(self, "infer", InferSchedule.parse(self.infer))
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score!r}")
        if not (isinstance(self.fps, (int, float)) and 0 < self.fps <= MAX_FPS):
            raise ValueError(f"fps must be in (0, {MAX_FPS}] frames per second, got {self.fps!r}")
        for kind, items in (("zone", self.zones), ("line", self.lines)):
            names = [name for name, _ in items]
            if any(not str(name).strip() for name in names):
                raise ValueError(f"every {kind} needs a name; got an empty one in {names}")
            if len(names) != len(set(names)):
                raise ValueError(f"{kind} names must be unique, got {names}")
            parse = parse_zone if kind == "zone" else parse_line
            for _, text in items:
                parse(text, 100, 100)  # fails early, with the coordinates named
        make_tracker(self.tracker, fps=self.fps, confirm_frames=self.confirm_frames)  # bad options fail here

    def skipped_frames(self) -> int:
        """The most frames the schedule lets pass between two inferences of a quiet source: added
        to the counters' time-outs, which count frames."""
        schedule = self.infer
        if schedule.mode == "nth":
            return schedule.n - 1
        if schedule.mode == "adaptive":
            return min(schedule.adaptive.max_gap_frames, math.ceil(schedule.adaptive.refresh_s * self.fps))
        return 0


class SourceAnalytics:
    """Tracker, counters and events of one source."""

    def __init__(self, source_id: str, config: AnalyticsConfig) -> None:
        self.source_id, self.config = source_id, config
        self.tracker = make_tracker(
            config.tracker, fps=config.infer.tracker_fps(config.fps), confirm_frames=config.confirm_frames
        )
        self.lines: list[LineCounter] = []
        self.zones: list[ZoneCounter] = []
        self.generation = 0
        self.frames = 0
        self.inferred = 0
        self.held: Detections | None = None  # the last tracked detections: what a skipped frame shows
        self.frame_size: tuple[int, int] | None = None
        self._occupancy: dict[str, dict] = {}
        self.health = SourceHealth(config.health, config.fps) if config.health is not None else None
        self._health_generation = 0

    def _place(self, height: int, width: int) -> list[dict]:
        """Lines and zones in this frame size's pixels. At a new size (a camera that came back at
        another resolution) the counters keep their counts and forget their tracks (their last
        points were in the old pixels); zones say who left (``reason: reset``)."""
        self.frame_size = (height, width)
        if not self.lines and not self.zones:
            gap = self.config.skipped_frames()
            self.lines = [
                LineCounter(parse_line(text, width, height), name=name, forget_after=LINE_FORGET_FRAMES + gap)
                for name, text in self.config.lines
            ]
            self.zones = [
                ZoneCounter(parse_zone(text, width, height), name=name, forget_after=ZONE_FORGET_FRAMES + gap)
                for name, text in self.config.zones
            ]
            return []
        for counter, (_, text) in zip(self.lines, self.config.lines):
            counter.line = parse_line(text, width, height)
        for counter, (_, text) in zip(self.zones, self.config.zones):
            counter.zone = parse_zone(text, width, height)
        return [event for counter in self.lines + self.zones for event in counter.reset_tracks()]

    def update(
        self,
        frame_shape: tuple[int, ...],
        detections: Detections,
        index: int,
        t: float,
        generation: int = 0,
        *,
        inferred: bool = True,
    ) -> tuple[Detections, list[dict]]:
        """Track one frame's detections; returns (tracked detections, this frame's events).

        ``inferred=False`` (the model skipped the frame): the tracks' last boxes, no tracker step,
        no counting."""
        if not inferred and self.held is not None and generation == self.generation:
            return self._skipped(index, t)
        events = []
        if generation != self.generation:  # reconnected: a fresh tracker, the counts go on
            self.tracker.reset()
            for counter in self.lines + self.zones:
                events += counter.reset_tracks()
            self.generation = generation
        if tuple(frame_shape[:2]) != self.frame_size:
            events += self._place(*frame_shape[:2])
        tracked = self.tracker.update(detections.filter(min_score=self.config.min_score))
        self.held, self.inferred = tracked, self.inferred + 1
        for counter in self.lines:
            events += counter.update(tracked, index)
        for counter in self.zones:
            events += counter.update(tracked, index)
            if counter.occupancy != self._occupancy.get(counter.name, {}):
                self._occupancy[counter.name] = counter.occupancy
                events.append({"type": "zone_count", "zone": counter.name, "counts": counter.occupancy})
        if self.config.frame_messages:
            events.append(deepstream_message(tracked, self.source_id, index))
        self.frames = index + 1
        return tracked, [stamp(e, self.source_id, index, t) if e["type"] != "frame" else e for e in events]

    def _skipped(self, index: int, t: float) -> tuple[Detections, list[dict]]:
        events = []
        if self.config.frame_messages:
            events.append({**deepstream_message(self.held, self.source_id, index), "inferred": False})
        self.frames = index + 1
        return self.held, [stamp(e, self.source_id, index, t) if e["type"] != "frame" else e for e in events]

    def check_health(self, frame: np.ndarray, index: int, t: float, motion=None, generation: int = 0) -> list[dict]:
        """Camera health events of this frame (``analytics/health.py``), stamped."""
        if self.health is None:
            return []
        if generation != self._health_generation:
            self.health.reset()
            self._health_generation = generation
        return [stamp(e, self.source_id, index, t) for e in self.health.update(frame, t, motion)]

    def counts(self) -> dict:
        """Per line in/out and per zone enter/leave/occupancy, per class."""
        return {
            "lines": {c.name: c.counts for c in self.lines},
            "zones": {c.name: {**c.counts, "occupancy": c.occupancy} for c in self.zones},
        }
