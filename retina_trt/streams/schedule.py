"""When the model runs on a source's frame: every frame, every N-th, or adaptively.

``det.streams(..., infer=...)``, ``retina-trt analyze --infer`` and multi-source ``retina-trt
detect --infer`` take ``"every"``, a whole number N (``2``: every second frame) or ``"adaptive"``.
Every frame is still delivered in order; on a frame the model skips, the result holds the source's
last detections, marked ``inferred=False``.

``adaptive`` runs the model on a frame when there is a reason to, checked in this order:

* ``tracks``: objects found by the last inference are present and the picture changes inside their
  boxes (they move): the model runs on every such frame, so identities and counts stay exact; and
  for ``follow_frames`` frames after an inference found more objects than the one before (a
  tracker confirms a new track only after it has seen it in a row);
* ``motion``: the motion gate (``streams/motion.py``) sees change anywhere;
* ``refresh``: ``refresh_s`` seconds of the source's own time passed since the last inference
  (slow movers, an object that appears while the camera is quiet, objects that stopped); the first
  frame of a source, and the first after a reconnect, count as a refresh;
* ``gap``: ``max_gap_frames`` frames passed since the last inference, whatever the clock says.

Every threshold is an :class:`AdaptiveOptions` field with its unit. The measured cost and accuracy
of each choice are in docs/analytics.md (adaptive inference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from retina_trt.streams.motion import MotionGate, MotionSample

INFER_MODES = ("every", "nth", "adaptive")
INFER_REASONS = ("motion", "tracks", "refresh", "gap")


@dataclass(frozen=True, kw_only=True)
class AdaptiveOptions:
    """The thresholds of ``adaptive`` inference, each with its unit.

    Attributes:
        gate_width_px: width in pixels of the small colour copy the motion gate compares.
        pixel_threshold: levels (0-255) a channel of a copy pixel must change by to count as changed.
        motion_area: share (0-1) of the copy's pixels that must change for ``motion``.
        track_motion: share (0-1) of a detected object's box that must change for ``tracks``.
        box_margin_px: pixels the boxes of the last detections grow by before the gate looks inside.
        min_score: detections at or above this score count as objects present.
        background_s: seconds over which the gate's background follows the picture.
        refresh_s: seconds of source time after which the model runs again, motion or not.
        max_gap_frames: frames after which the model runs again, whatever the clock says.
        follow_frames: frames the model keeps running after it found new objects, so that a
            tracker confirms them now rather than a refresh later.
    """

    gate_width_px: int = 160
    pixel_threshold: float = 18.0
    motion_area: float = 0.002
    track_motion: float = 0.02
    box_margin_px: float = 8.0
    min_score: float = 0.3
    background_s: float = 2.0
    refresh_s: float = 2.0
    max_gap_frames: int = 60
    follow_frames: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.gate_width_px, bool) or not 16 <= int(self.gate_width_px) <= 4096:
            raise ValueError(f"gate_width_px must be in [16, 4096] pixels, got {self.gate_width_px!r}")
        if isinstance(self.max_gap_frames, bool) or not 1 <= int(self.max_gap_frames) <= 100_000:
            raise ValueError(f"max_gap_frames must be in [1, 100000] frames, got {self.max_gap_frames!r}")
        if isinstance(self.follow_frames, bool) or not 0 <= int(self.follow_frames) <= 1000:
            raise ValueError(f"follow_frames must be in [0, 1000] frames, got {self.follow_frames!r}")
        for name, low, high in (
            ("pixel_threshold", 0.0, 255.0),
            ("motion_area", 0.0, 1.0),
            ("track_motion", 0.0, 1.0),
            ("min_score", 0.0, 1.0),
            ("box_margin_px", 0.0, 10_000.0),
            ("background_s", 1e-3, 86_400.0),
            ("refresh_s", 1e-3, 86_400.0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")


@dataclass(frozen=True)
class InferSchedule:
    """``mode`` ``"every"``, ``"nth"`` (the model on every ``n``-th frame) or ``"adaptive"``."""

    mode: str = "every"
    n: int = 1
    adaptive: AdaptiveOptions = field(default_factory=AdaptiveOptions)

    def __post_init__(self) -> None:
        if self.mode not in INFER_MODES:
            raise ValueError(f"infer mode must be one of {INFER_MODES}, got {self.mode!r}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 1 <= self.n <= 100_000:
            raise ValueError(f"infer every n-th frame needs a whole n in [1, 100000], got {self.n!r}")

    @classmethod
    def parse(cls, value: InferSchedule | str | int) -> InferSchedule:
        """``"every"``, ``"adaptive"``, a whole number N >= 1 (or its text), or a schedule.

        Raises ValueError for anything else (``0``, ``-1``, ``1.5``, ``"foo"``), saying what is taken."""
        if isinstance(value, InferSchedule):
            return value
        text = str(value).strip().lower()
        if text in ("every", "adaptive"):
            return cls(mode=text)
        if isinstance(value, (int, str)) and not isinstance(value, bool) and text.isdigit() and int(text) >= 1:
            return cls(mode="every") if int(text) == 1 else cls(mode="nth", n=int(text))
        raise ValueError(f"`infer` takes every, adaptive or a whole number N >= 1 (every N-th frame), got {value!r}")

    def tracker_fps(self, fps: float) -> float:
        """The frame rate a tracker stepped on this schedule's inferences sees, so that its
        time-outs stay in seconds (every N-th frame: fps / N; adaptive runs every frame while
        objects move, and a skipped frame never ages a track)."""
        return fps / self.n if self.mode == "nth" else fps


class SourceSchedule:
    """One source's decisions: :meth:`decide` per frame, :meth:`inferred` per inference result."""

    def __init__(self, schedule: InferSchedule, fps: float) -> None:
        self.schedule = schedule
        options = schedule.adaptive
        self.gate = (
            MotionGate(
                gate_width_px=options.gate_width_px,
                pixel_threshold=options.pixel_threshold,
                background_s=options.background_s,
                fps=fps,
            )
            if schedule.mode == "adaptive"
            else None
        )
        self.reasons = dict.fromkeys(INFER_REASONS, 0)
        self.inferred_frames = 0
        self._last_index: int | None = None
        self._last_time: float = -math.inf
        self._boxes = np.zeros((0, 4), np.float32)
        self._follow = 0  # frames still to run after new objects were found
        self._generation = 0

    def sample(self, frame: np.ndarray) -> MotionSample | None:
        """The gate's look at a decoded frame (in the source's own thread); None without a gate."""
        return self.gate.update(frame) if self.gate is not None else None

    def decide(self, index: int, timestamp_s: float, motion: MotionSample | None, generation: int = 0) -> str | None:
        """Why the model runs on frame ``index`` (a reason; ``"every"``/``"nth"`` outside adaptive),
        or None to skip it."""
        mode = self.schedule.mode
        if mode == "every":
            return self._count("every", index, timestamp_s)
        if mode == "nth":
            return self._count("nth", index, timestamp_s) if index % self.schedule.n == 0 else None
        return self._adaptive(index, timestamp_s, motion, generation)

    def _adaptive(self, index: int, timestamp_s: float, motion: MotionSample | None, generation: int) -> str | None:
        options = self.schedule.adaptive
        if self._last_index is None or generation != self._generation:
            self._generation = generation
            return self._count("refresh", index, timestamp_s)
        if self._follow > 0:
            self._follow -= 1
            return self._count("tracks", index, timestamp_s)
        if motion is not None and len(self._boxes):
            if motion.changed_in(self._boxes, options.box_margin_px) >= options.track_motion:
                return self._count("tracks", index, timestamp_s)
        if motion is not None and motion.changed >= options.motion_area:
            return self._count("motion", index, timestamp_s)
        if timestamp_s - self._last_time >= options.refresh_s:
            return self._count("refresh", index, timestamp_s)
        if index - self._last_index >= options.max_gap_frames:
            return self._count("gap", index, timestamp_s)
        return None

    def _count(self, reason: str, index: int, timestamp_s: float) -> str:
        self.inferred_frames += 1
        if reason in self.reasons:
            self.reasons[reason] += 1
        self._last_index, self._last_time = index, timestamp_s
        return reason

    def inferred(self, detections) -> None:
        """The result of an inference: its boxes are where ``tracks`` looks for moving objects."""
        strong = detections.scores >= self.schedule.adaptive.min_score
        if int(strong.sum()) > len(self._boxes):
            self._follow = self.schedule.adaptive.follow_frames
        self._boxes = detections.boxes_xyxy[strong]
