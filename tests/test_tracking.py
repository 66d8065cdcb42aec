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
    return Detections(boxes, scores if scores is not None else np.full(n, 0.9), classes if classes is not None else [0] * n, NAMES)


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


def test_unknown_tracker_and_bad_rates_are_refused():
    with pytest.raises(ValueError, match="bytetrack"):
        make_tracker("deepsort")
    with pytest.raises(ValueError, match="positive"):
        make_tracker("sort", fps=float("nan"))


def test_environment_has_exactly_one_opencv():
    """trackers asks for opencv-python; make installs it without its dependencies so that
    opencv-python-headless stays the only cv2 (two distributions would overwrite each other)."""
    names = sorted({d.metadata["Name"].lower() for d in importlib.metadata.distributions()
                    if d.metadata["Name"] and d.metadata["Name"].lower().startswith("opencv")})  # fmt: skip
    assert names == ["opencv-python-headless"], names
    files = [f for d in importlib.metadata.distributions() for f in (d.files or []) if str(f) == "cv2/__init__.py"]
    assert len(files) == 1, files
