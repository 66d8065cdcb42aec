"""Multi-object trackers behind one small interface: ``update(Detections) -> Detections`` with
``tracker_ids`` set on the detections that belong to a confirmed track.

The field's trackers come from Roboflow's ``trackers`` library (ByteTrack, SORT, OC-SORT; they
take and return ``supervision.Detections``); ``"iou"`` is this project's greedy IoU tracker, kept
as the baseline of the comparison (docs/analytics.md has the table that chose the default).
One tracker follows one source: ids are unique per source, and ``reset()`` starts over (a
source that reconnected).
"""

from __future__ import annotations

import numbers

import numpy as np

from retina_trt.analytics.tracking_iou import IouTracker
from retina_trt.runtime.detections import Detections

TRACKERS = ("bytetrack", "sort", "ocsort", "iou")
MAX_CLASSES = 10_000  # ModelSpec's bound on num_classes: the id stride where class names are unknown
DEFAULT_TRACKER = "ocsort"  # exact counts on every scripted scene (docs/analytics.md)
# OC-SORT gives a track its id once it was matched this many frames in a row after the frame that
# started it (the library's default is 3): at 2, an object gets its id on its third frame, and a
# false detection of one or two frames never becomes a track. Chosen by measurement
# (docs/analytics.md: 1, 2 and 3 on the scripted scenes, also with flickering false detections
# added inside the zone): 1 scores best without flicker but miscounts zone entries with it.
OCSORT_CONFIRM_FRAMES = 2


class LibraryTracker:
    """A tracker of the ``trackers`` library (``bytetrack``, ``sort``, ``ocsort``).

    The library's trackers ignore classes; a track must never jump to an object of another class
    where two cross or one hides the other (measured on the scripted scenes, docs/analytics.md).
    ByteTrack and OC-SORT take an IoU of ours, so one tracker follows every class with each
    association kept inside a class (``analytics/class_gate.py``: one call per frame); SORT takes
    none and runs once per class (ids interleaved by class). Ids stay unique per source."""

    GATED = ("bytetrack", "ocsort")  # the library trackers that take ``iou=``

    def __init__(
        self, name: str, *, fps: float = 15.0, lost_track_seconds: float = 2.0, confirm_frames: int | None = None
    ) -> None:
        self.name = name
        self._make = lambda: self._new(name, fps, lost_track_seconds, confirm_frames)
        self._trackers: dict[int, object] = {}

    @staticmethod
    def _new(name: str, fps: float, lost_track_seconds: float, confirm_frames: int | None = None):
        try:
            import trackers

            from retina_trt.analytics.class_gate import ClassGatedIoU
        except ImportError as err:
            raise ImportError(
                f"tracker {name!r} needs the trackers library: pip install 'retina-trt[analytics]' and "
                "pip install --no-deps trackers==2.6.1 (it asks for opencv-python, which must not sit beside "
                "opencv-python-headless; docs/analytics.md)"
            ) from err
        kinds = {"bytetrack": trackers.ByteTrackTracker, "sort": trackers.SORTTracker, "ocsort": trackers.OCSORTTracker}
        # lost_track_buffer is in frames at 30 fps: scale it so a track survives lost_track_seconds.
        options = {"lost_track_buffer": max(1, int(round(lost_track_seconds * 30))), "frame_rate": fps}
        if name in LibraryTracker.GATED:
            options["iou"] = ClassGatedIoU()
        if name == "ocsort":
            options["minimum_consecutive_frames"] = int(confirm_frames or OCSORT_CONFIRM_FRAMES)
        elif confirm_frames is not None:
            options["minimum_consecutive_frames"] = int(confirm_frames)
        return kinds[name](**options)

    def update(self, detections: Detections) -> Detections:
        boxes, scores, classes = detections.boxes_xyxy, detections.scores, detections.class_ids
        if self.name in self.GATED:
            from retina_trt.analytics.class_gate import from_bands, to_bands

            boxes, scores, classes, ids = self._track(0, to_bands(boxes, classes), scores, classes)
            return Detections(from_bands(boxes, classes), scores, classes, detections.all_class_names, ids)
        stride = len(detections.all_class_names) or MAX_CLASSES
        groups = [(boxes[:0], scores[:0], classes[:0], np.zeros(0, np.int64))]
        for c in sorted(set(classes.tolist()) | set(self._trackers)):
            b, s, k, ids = self._track(c, boxes[classes == c], scores[classes == c], classes[classes == c])
            groups.append((b, s, k, ids * stride + c))  # unique per source: the classes' ids interleaved
        boxes, scores, classes, ids = (np.concatenate(part) for part in zip(*groups))
        return Detections(boxes, scores, classes, detections.all_class_names, ids)

    def _track(self, key: int, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> tuple:
        """One tracker's update on plain arrays: (boxes, scores, classes, ids) of its confirmed tracks.
        A tracker with no tracks and nothing to track is not called (the library returns nothing
        then and keeps no per-call state when no timestamps are given)."""
        tracker = self._trackers.get(key)
        if tracker is None:
            tracker = self._trackers[key] = self._make()
        if not len(boxes) and not tracker.tracks:
            return boxes, scores, classes, np.zeros(0, np.int64)
        import supervision as sv  # a dependency of the trackers library

        tracked = tracker.update(sv.Detections(xyxy=boxes, confidence=scores, class_id=classes.astype(int)))
        if tracked.tracker_id is None or not len(tracked.xyxy):
            return boxes[:0], scores[:0], classes[:0], np.zeros(0, np.int64)
        keep = tracked.tracker_id >= 0
        confidence = tracked.confidence if tracked.confidence is not None else np.ones(len(keep), np.float32)
        return tracked.xyxy[keep], confidence[keep], tracked.class_id[keep], tracked.tracker_id[keep].astype(np.int64)

    def reset(self) -> None:
        self._trackers.clear()


class GreedyIouTracker:
    """This project's greedy per-class IoU matcher (the baseline)."""

    name = "iou"

    def __init__(self, *, fps: float = 15.0, lost_track_seconds: float = 2.0) -> None:
        self._max_missed = max(1, int(round(lost_track_seconds * fps)))
        self._tracker = IouTracker(max_missed=self._max_missed)

    def update(self, detections: Detections) -> Detections:
        tracks = self._tracker.update(detections.boxes_xyxy, detections.class_ids)
        boxes = np.stack([t.box for t in tracks]) if tracks else np.zeros((0, 4), np.float32)
        return Detections(
            boxes,
            _scores_of(detections, boxes),
            [t.class_id for t in tracks],
            detections.all_class_names,
            [t.track_id for t in tracks],
        )

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


def make_tracker(
    name: str = DEFAULT_TRACKER,
    *,
    fps: float = 15.0,
    lost_track_seconds: float = 2.0,
    confirm_frames: int | None = None,
):
    """A new tracker by name (one of ``TRACKERS``) for a source of ``fps`` frames per second.
    ``confirm_frames``: matches in a row (after the frame that starts a track) before a library
    tracker's track gets its id (the library's default; ``OCSORT_CONFIRM_FRAMES`` for OC-SORT)."""
    if name not in TRACKERS:
        raise ValueError(f"tracker must be one of {', '.join(TRACKERS)}, got {name!r}")
    if not (np.isfinite(fps) and fps > 0 and np.isfinite(lost_track_seconds) and lost_track_seconds > 0):
        raise ValueError(f"fps and lost_track_seconds must be positive, got {fps!r}, {lost_track_seconds!r}")
    if confirm_frames is not None and (
        isinstance(confirm_frames, bool) or not isinstance(confirm_frames, numbers.Integral) or confirm_frames < 1
    ):
        raise ValueError(f"confirm_frames must be an integer >= 1, got {confirm_frames!r}")
    if name == "iou":  # confirms at once
        return GreedyIouTracker(fps=fps, lost_track_seconds=lost_track_seconds)
    tracker = LibraryTracker(name, fps=fps, lost_track_seconds=lost_track_seconds, confirm_frames=confirm_frames)
    tracker._new(name, fps, lost_track_seconds, confirm_frames)  # a missing library fails here, not at the first frame
    return tracker
