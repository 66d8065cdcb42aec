"""Trackers (retina_trt.analytics.tracking), supervision interop, and the one-OpenCV rule."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from retina_trt.analytics.tracking import TRACKERS, make_tracker
from retina_trt.runtime.detections import Detections

NAMES = ("circle", "square")


def _dets(boxes, classes=None, scores=None) -> Detections:
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return Detections(
        boxes, scores if scores is not None else np.full(n, 0.9), classes if classes is not None else [0] * n, NAMES
    )


def test_supervision_round_trip_keeps_everything():
    sv = pytest.importorskip("supervision")
    dets = Detections(np.array([[1, 2, 30, 40], [5, 6, 7, 8]], np.float32), [0.9, 0.4], [1, 0], NAMES, [7, 3])
    converted = dets.to_supervision()
    assert isinstance(converted, sv.Detections)
    assert converted.tracker_id.tolist() == [7, 3] and list(converted.data["class_name"]) == ["square", "circle"]
    back = Detections.from_supervision(converted, NAMES)
    assert np.array_equal(back.boxes_xyxy, dets.boxes_xyxy) and np.array_equal(back.scores, dets.scores)
    assert back.class_ids.tolist() == [1, 0] and back.tracker_ids.tolist() == [7, 3]
    assert back.filter(min_score=0.5).tracker_ids.tolist() == [7]
    # supervision's own annotators take our detections
    canvas = sv.BoxAnnotator().annotate(np.zeros((50, 50, 3), np.uint8), converted)
    assert canvas.any()


@pytest.mark.parametrize("name", TRACKERS)
def test_every_tracker_keeps_one_id_for_a_moving_object(name):
    tracker = make_tracker(name, fps=15)
    ids = []
    for frame in range(12):
        x = 10 + 6 * frame
        out = tracker.update(_dets([[x, 20, x + 40, 60], [200 - x, 100, 240 - x, 140]], [0, 1]))
        assert out.tracker_ids is not None and len(out.tracker_ids) == len(out)
        ids.append(sorted(out.tracker_ids.tolist()))
    assert len(ids[-1]) == 2 and ids[-1] == ids[-2] == ids[-3], ids  # two stable, distinct tracks
    tracker.reset()
    assert len(tracker.update(_dets([]))) == 0


@pytest.mark.parametrize("name", TRACKERS)
def test_a_track_never_changes_class(name):
    """Two objects of two classes pass through each other (IoU up to 1 across classes), then a
    box of the other class takes the place of one that left: every id keeps one class."""
    tracker, classes_of = make_tracker(name, fps=15), {}
    for frame in range(16):
        x = 10 + 8 * frame
        out = tracker.update(_dets([[x, 20, x + 40, 60], [130 - x, 22, 170 - x, 62]], [0, 1]))
        for track_id, class_id in zip(out.tracker_ids.tolist(), out.class_ids.tolist()):
            classes_of.setdefault(track_id, set()).add(class_id)
    last = {c: i for i, c in zip(out.tracker_ids.tolist(), out.class_ids.tolist())}
    for _ in range(6):  # the circle's place is taken by a square that stands still
        out = tracker.update(_dets([[138, 20, 178, 60]], [1]))
        for track_id, class_id in zip(out.tracker_ids.tolist(), out.class_ids.tolist()):
            classes_of.setdefault(track_id, set()).add(class_id)
    assert all(len(c) == 1 for c in classes_of.values()), classes_of
    assert last[0] not in out.tracker_ids.tolist()


def test_class_gate_scores_pairs_across_classes_far_below_any_iou():
    pytest.importorskip("trackers")
    from retina_trt.analytics.class_gate import CROSS_PENALTY, ClassGatedIoU, from_bands, to_bands

    boxes = np.array([[0.5, 1.25, 30.75, 40], [0.5, 1.25, 30.75, 40], [10, 10, 20, 20]], np.float32)
    classes = np.array([0, 7, 7])
    banded = to_bands(boxes, classes)
    assert np.array_equal(from_bands(banded, classes), boxes)  # no pixel lost on the way
    scores = ClassGatedIoU().compute(banded, banded)
    assert scores[0, 1] == scores[1, 0] == -CROSS_PENALTY  # the same box, two classes
    assert scores[0, 0] == scores[1, 1] == 1.0 and 0 < scores[1, 2] < 1


def test_unknown_tracker_and_bad_rates_are_refused():
    with pytest.raises(ValueError, match="bytetrack"):
        make_tracker("deepsort")
    with pytest.raises(ValueError, match="positive"):
        make_tracker("sort", fps=float("nan"))
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="confirm_frames"):
            make_tracker("ocsort", confirm_frames=bad)
    assert make_tracker("ocsort", confirm_frames=np.int64(3)) is not None  # numpy integers are integers


def test_confirm_frames_sets_when_a_track_gets_its_id():
    """OC-SORT gives a new object (seen after the tracker's first frames) its id once it has been
    matched ``confirm_frames`` times in a row after the frame that started its track."""
    pytest.importorskip("trackers")
    for confirm in (1, 2, 3):
        tracker = make_tracker("ocsort", fps=15, confirm_frames=confirm)
        for _ in range(5):  # past the library's start-up frames, where every track is confirmed
            tracker.update(_dets([[200, 200, 240, 240]]))
        first = next(
            frame
            for frame in range(1, 8)
            if len(tracker.update(_dets([[200, 200, 240, 240], [10 + 4 * frame, 20, 50 + 4 * frame, 60]], [0, 1]))) == 2
        )
        assert first == confirm + 1, (confirm, first)  # the first sighting starts the track


def test_environment_has_exactly_one_opencv():
    """trackers asks for opencv-python; make installs it without its dependencies so that
    opencv-python-headless stays the only cv2 (two distributions would overwrite each other)."""
    names = sorted(
        {
            d.metadata["Name"].lower()
            for d in importlib.metadata.distributions()
            if d.metadata["Name"] and d.metadata["Name"].lower().startswith("opencv")
        }
    )
    assert names == ["opencv-python-headless"], names
    files = [f for d in importlib.metadata.distributions() for f in (d.files or []) if str(f) == "cv2/__init__.py"]
    assert len(files) == 1, files
