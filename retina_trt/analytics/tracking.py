"""Multi-object trackers behind one small interface: ``update(Detections) -> Detections`` with
``tracker_ids`` set on the detections that belong to a confirmed track.

The field's trackers come from Roboflow's ``trackers`` library (ByteTrack, SORT, OC-SORT; they
take and return ``supervision.Detections``); ``"iou"`` is this project's greedy IoU tracker, kept
as the baseline of the comparison (docs/analytics.md has the table that chose the default).
One tracker follows one source: ids are unique per source, and ``reset()`` starts over (a
source that reconnected).
"""

from __future__ import annotations

import numpy as np

from retina_trt.analytics.tracking_iou import IouTracker
from retina_trt.runtime.detections import Detections

TRACKERS = ("bytetrack", "sort", "ocsort", "iou")
DEFAULT_TRACKER = "bytetrack"


class LibraryTracker:
    """A tracker of the ``trackers`` library (``bytetrack``, ``sort``, ``ocsort``)."""

    def __init__(self, name: str, *, fps: float = 15.0, lost_track_seconds: float = 2.0) -> None:
        try:
            import trackers
        except ImportError as err:
            raise ImportError(
                f"tracker {name!r} needs the trackers library: pip install 'retina-trt[analytics]' and "
                "pip install --no-deps trackers==2.6.1 (it asks for opencv-python, which must not sit beside "
                "opencv-python-headless; docs/analytics.md)"
            ) from err
        kinds = {"bytetrack": trackers.ByteTrackTracker, "sort": trackers.SORTTracker, "ocsort": trackers.OCSORTTracker}
        # lost_track_buffer is in frames at 30 fps: scale it so a track survives lost_track_seconds.
        self._tracker = kinds[name](lost_track_buffer=max(1, int(round(lost_track_seconds * 30))), frame_rate=fps)
        self.name = name

    def update(self, detections: Detections) -> Detections:
        out = self._tracker.update(detections.to_supervision())
        tracked = Detections.from_supervision(out, detections.all_class_names)
        if tracked.tracker_ids is None:
            return tracked._subset(np.zeros(len(tracked), dtype=bool))
        return tracked._subset(tracked.tracker_ids >= 0)

    def reset(self) -> None:
        self._tracker.reset()


class GreedyIouTracker:
    """This project's greedy per-class IoU matcher (the baseline)."""

    name = "iou"

    def __init__(self, *, fps: float = 15.0, lost_track_seconds: float = 2.0) -> None:
        self._max_missed = max(1, int(round(lost_track_seconds * fps)))
        self._tracker = IouTracker(max_missed=self._max_missed)

    def update(self, detections: Detections) -> Detections:
        tracks = self._tracker.update(detections.boxes_xyxy, detections.class_ids)
        boxes = np.stack([t.box for t in tracks]) if tracks else np.zeros((0, 4), np.float32)
        return Detections(boxes, _scores_of(detections, boxes), [t.class_id for t in tracks],
                          detections.all_class_names, [t.track_id for t in tracks])  # fmt: skip

    def reset(self) -> None:
        self._tracker = IouTracker(max_missed=self._max_missed)


def _scores_of(detections: Detections, boxes: np.ndarray) -> np.ndarray:
    """The score of the detection each tracked box was matched to (the same box)."""
    scores = np.ones(len(boxes), np.float32)
    for i, box in enumerate(boxes):
        same = np.all(np.isclose(detections.boxes_xyxy, box), axis=1)
        if same.any():
            scores[i] = detections.scores[np.argmax(same)]
    return scores


def make_tracker(name: str = DEFAULT_TRACKER, *, fps: float = 15.0, lost_track_seconds: float = 2.0):
    """A new tracker by name (one of ``TRACKERS``) for a source of ``fps`` frames per second."""
    if name not in TRACKERS:
        raise ValueError(f"tracker must be one of {', '.join(TRACKERS)}, got {name!r}")
    if not (np.isfinite(fps) and fps > 0 and np.isfinite(lost_track_seconds) and lost_track_seconds > 0):
        raise ValueError(f"fps and lost_track_seconds must be positive, got {fps!r}, {lost_track_seconds!r}")
    if name == "iou":
        return GreedyIouTracker(fps=fps, lost_track_seconds=lost_track_seconds)
    return LibraryTracker(name, fps=fps, lost_track_seconds=lost_track_seconds)

