"""This project's greedy per-class IoU tracker: the baseline the field's trackers are measured
against (``retina_trt.analytics.tracking``). Coordinates are pixels; boxes are xyxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` [N, 4] against ``b`` [M, 4] (xyxy) -> [N, M]."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Track:
    track_id: int
    class_id: int
    box: np.ndarray
    center: tuple[float, float]
    previous_center: tuple[float, float] | None = None
    missed: int = 0


@dataclass
class IouTracker:
    """Greedy IoU matching per class; a track survives ``max_missed`` frames without a match."""

    iou_thresh: float = 0.3
    max_missed: int = 5
    tracks: dict[int, Track] = field(default_factory=dict)
    _next_id: int = 1

    def update(self, boxes: np.ndarray, class_ids: np.ndarray) -> list[Track]:
        """Match this frame's detections; returns the tracks seen in this frame."""
        seen: list[Track] = []
        unmatched = set(range(len(boxes)))
        tracks = list(self.tracks.values())
        if tracks and len(boxes):
            ious = _iou_matrix(np.stack([t.box for t in tracks]), boxes)
            for flat in np.argsort(-ious, axis=None):
                ti, di = np.unravel_index(flat, ious.shape)
                if ious[ti, di] < self.iou_thresh:
                    break
                track = tracks[ti]
                if di not in unmatched or track in seen or track.class_id != int(class_ids[di]):
                    continue
                unmatched.discard(di)
                self._move(track, boxes[di])
                seen.append(track)
        for di in sorted(unmatched):
            track = Track(self._next_id, int(class_ids[di]), boxes[di].copy(), _center(boxes[di]))
            self._next_id += 1
            self.tracks[track.track_id] = track
            seen.append(track)
        for track in tracks:
            if track not in seen:
                track.missed += 1
                track.previous_center = None
                if track.missed > self.max_missed:
                    del self.tracks[track.track_id]
        return seen

    @staticmethod
    def _move(track: Track, box: np.ndarray) -> None:
        track.previous_center = track.center
        track.box = box.copy()
        track.center = _center(box)
        track.missed = 0


def _center(box: np.ndarray) -> tuple[float, float]:
    return float((box[0] + box[2]) / 2), float((box[1] + box[3]) / 2)
