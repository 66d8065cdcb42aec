"""Camera health: is the picture frozen, black or blank, or suddenly another one (the camera was
moved or covered)? Raised as ``source_unhealthy`` events with the reason, and ``source_healthy``
when the picture is fine again.

It reads three numbers of the motion gate's small colour copy (``streams/motion.py``): its mean
level, its spread and its largest change against the previous copy, plus the share of the copy
that differs from the running background. Under ``--infer adaptive`` the gate already ran in the
source's thread and the numbers come with the frame; under the other schedules this module runs
its own gate on the analysed frames. Each condition must hold for its time, in the source's own
seconds, before it is reported:

* ``black``: a uniform (``blank_spread``) and dark (``black_level``) picture for ``blank_s``;
* ``blank``: a uniform picture of any colour for ``blank_s``;
* ``frozen``: no copy pixel changed by more than ``frozen_diff`` levels for ``frozen_s`` while
  frames still arrive (a decoder that repeats its last picture gives the same pixels);
* ``moved``: at least ``moved_area`` of the copy differs from the background for ``moved_s`` (the
  view changed; the background then learns the new view and the source recovers).

Recovery needs ``recover_s`` without any condition. Thresholds and why: docs/operating.md#camera-health.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from retina_trt.streams.motion import MotionGate, MotionSample
from retina_trt.streams.schedule import AdaptiveOptions

HEALTH_REASONS = ("black", "blank", "frozen", "moved")


@dataclass(frozen=True, kw_only=True)
class HealthOptions:
    """When a picture is unhealthy (module docstring); times in seconds, levels in 0-255."""

    frozen_s: float = 10.0
    frozen_diff: float = 0.5
    blank_s: float = 3.0
    blank_spread: float = 4.0
    black_level: float = 24.0
    moved_area: float = 0.6
    moved_s: float = 1.0
    recover_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("frozen_s", "blank_s", "moved_s", "recover_s", "frozen_diff", "blank_spread", "black_level"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"health option {name} must be a finite number >= 0, got {value!r}")
        if not 0.0 < self.moved_area <= 1.0:
            raise ValueError(f"health option moved_area must be in (0, 1], got {self.moved_area!r}")

    def hold_s(self, reason: str) -> float:
        """How long ``reason``'s condition must hold before it is reported."""
        return {"black": self.blank_s, "blank": self.blank_s, "frozen": self.frozen_s, "moved": self.moved_s}[reason]


class SourceHealth:
    """One source's health (module docstring): ``update`` per analysed frame returns the events."""

    def __init__(self, options: HealthOptions, fps: float) -> None:
        self.options = options
        self.fps = float(fps)
        self.reason: str | None = None  # the reported problem, None while healthy
        self._since: dict[str, float] = {}  # condition -> source time it began
        self._unhealthy_at = 0.0
        self._fine_since: float | None = None
        self._gate: MotionGate | None = None

    def update(self, frame: np.ndarray, t: float, motion: MotionSample | None = None) -> list[dict]:
        """Events this frame raises (``source_unhealthy`` / ``source_healthy``; not yet stamped)."""
        motion = motion if motion is not None else self._own_gate().update(frame)
        held = [
            reason for reason in self._conditions(motion, t) if t - self._since[reason] >= self.options.hold_s(reason)
        ]
        if held:
            self._fine_since = None
            if held[0] != self.reason:
                self.reason, self._unhealthy_at = held[0], t
                return [{"type": "source_unhealthy", "reason": held[0], "for_s": round(t - self._since[held[0]], 3)}]
            return []
        return self._recovered(t, bool(self._since))

    def reset(self) -> None:
        """A reconnected camera starts over (its conditions; a reported problem stays until it clears)."""
        self._since.clear()
        if self._gate is not None:
            self._gate.reset()

    def _conditions(self, motion: MotionSample, t: float) -> list[str]:
        """The conditions true now, in report order; their start times kept in ``_since``."""
        o = self.options
        uniform = motion.spread < o.blank_spread
        now = {
            "black": uniform and motion.level < o.black_level,
            "blank": uniform and motion.level >= o.black_level,
            "frozen": motion.still <= o.frozen_diff,
            "moved": motion.changed >= o.moved_area,
        }
        for reason, true in now.items():
            if not true:
                self._since.pop(reason, None)
            else:
                self._since.setdefault(reason, t)
        return [reason for reason in HEALTH_REASONS if now[reason]]

    def _recovered(self, t: float, pending: bool) -> list[dict]:
        if self.reason is None or pending:
            self._fine_since = None if pending else self._fine_since
            return []
        self._fine_since = t if self._fine_since is None else self._fine_since
        if t - self._fine_since < self.options.recover_s:
            return []
        event = {"type": "source_healthy", "reason": self.reason, "unhealthy_s": round(t - self._unhealthy_at, 3)}
        self.reason, self._fine_since = None, None
        return [event]

    def _own_gate(self) -> MotionGate:
        if self._gate is None:
            defaults = AdaptiveOptions()
            self._gate = MotionGate(
                gate_width_px=defaults.gate_width_px,
                pixel_threshold=defaults.pixel_threshold,
                background_s=defaults.background_s,
                fps=self.fps,
            )
        return self._gate
