"""The motion gate of adaptive inference: is anything changing in this source's picture?

Each frame is shrunk to a small colour copy (``gate_width_px`` wide: bilinear to twice that, then
area averaging, so sensor noise and compression artefacts average out before anything is compared)
and compared with a running background of the same size, channel by channel (a grey copy misses an
object whose colour differs from the background's but whose brightness does not):

* a pixel changed when a channel differs from the background by more than ``pixel_threshold``
  levels, after that channel's median difference over the whole copy is taken away (a global brightness
  change, a slow lighting drift or the camera's own gain, moves every pixel alike and is not
  motion);
* the background follows the picture with a time constant of ``background_s`` seconds, so slow
  drift is absorbed and an object that stops becomes background;
* the previous frame is compared too, so a change the background has not seen yet (an object
  that vanishes where it had only just arrived) still counts;
* the gate reports the changed share of the copy and the changed mask, which the schedule also
  reads inside the boxes of the objects last detected, and three numbers of the copy that camera
  health reads (``analytics/health.py``): its mean level, its spread and its largest change
  against the previous copy.

Why these choices and what they cost are measured in docs/analytics.md (adaptive inference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MotionSample:
    """What the gate saw in one frame.

    Attributes:
        changed: share of the copy's pixels that changed (0..1).
        mask: bool[h, w] changed pixels of the copy.
        scale: copy pixels per frame pixel (boxes in frame pixels times ``scale`` are copy pixels).
        level: the copy's mean level (0-255).
        spread: the copy's standard deviation in levels (a uniform picture has almost none).
        still: the largest change of any copy pixel's channel against the previous copy, in
            levels (0: the same picture; infinite on a first frame).
    """

    changed: float
    mask: np.ndarray
    scale: float
    level: float = 0.0
    spread: float = 0.0
    still: float = math.inf

    def changed_in(self, boxes_xyxy: np.ndarray, margin_px: float = 0.0) -> float:
        """The largest changed share inside any of ``boxes_xyxy`` (ndarray[N, 4], frame pixels,
        grown by ``margin_px`` frame pixels); 0 without boxes."""
        best = 0.0
        height, width = self.mask.shape
        for x1, y1, x2, y2 in np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4):
            c = (np.array([x1 - margin_px, y1 - margin_px, x2 + margin_px, y2 + margin_px]) * self.scale).round()
            cx1, cy1 = int(np.clip(c[0], 0, width)), int(np.clip(c[1], 0, height))
            cx2, cy2 = int(np.clip(c[2], 0, width)), int(np.clip(c[3], 0, height))
            if cx2 > cx1 and cy2 > cy1:
                best = max(best, float(self.mask[cy1:cy2, cx1:cx2].mean()))
        return best


class MotionGate:
    """One source's gate (module docstring). ``update(frame)`` per decoded frame."""

    def __init__(self, *, gate_width_px: int, pixel_threshold: float, background_s: float, fps: float) -> None:
        self.gate_width_px = int(gate_width_px)
        self.pixel_threshold = float(pixel_threshold)
        self.alpha = min(1.0, 1.0 / max(1e-6, background_s * max(fps, 1e-6)))  # per-frame weight
        self._background: np.ndarray | None = None
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the background (a reconnected camera may show another picture)."""
        self._background = None

    def update(self, frame: np.ndarray) -> MotionSample:
        """Compare ``frame`` (HxWx3 uint8 BGR) with the background, then let the background follow."""
        height, width = frame.shape[:2]
        scale = min(1.0, self.gate_width_px / width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = frame
        if scale < 1.0:  # bilinear to twice the copy's size, then area-averaged: a fraction of one area pass
            if scale < 0.5:
                small = cv2.resize(frame, (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_LINEAR)
            small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
        copy = small.astype(np.float32)
        mean, std = cv2.meanStdDev(small)
        level, spread = float(mean.mean()), float(std.mean())
        if self._background is None or self._background.shape != copy.shape:
            self._background, self._previous = copy, copy
            return MotionSample(0.0, np.zeros(copy.shape[:2], bool), scale, level, spread)
        step = cv2.absdiff(copy, self._previous)
        mask = self._changed(copy, self._background) | (_channel_max(step) > self.pixel_threshold)
        cv2.accumulateWeighted(copy, self._background, self.alpha)
        self._previous = copy
        return MotionSample(float(mask.mean()), mask, scale, level, spread, float(step.max()))

    def _changed(self, copy: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Pixels whose colour differs from ``reference`` by more than the threshold in any channel
        (two colours of one brightness still differ), after each channel's median difference is
        taken away (drift builds up against the background, not between two frames)."""
        diff = copy - reference
        diff -= np.median(diff[::4, ::4].reshape(-1, 3), axis=0)  # every 16th pixel: the median of a smooth field
        return _channel_max(np.abs(diff)) > self.pixel_threshold


def _channel_max(image: np.ndarray) -> np.ndarray:
    """The largest of each pixel's channels (HxWx3 -> HxW), as two element-wise maxima over the
    channel views (``max(axis=2)`` is many times slower)."""
    return np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])
