"""This project's greedy per-class IoU tracker: the baseline the field's trackers are measured
against (``retina_trt.analytics.tracking``). Coordinates are pixels; boxes are xyxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retina_trt.contract.boxes import box_iou


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
            ious = box_iou(np.stack([t.box for t in tracks]), boxes)
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
