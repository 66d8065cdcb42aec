"""The greedy IoU tracker kept as the baseline, and the two video samples run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retina_trt.analytics import IouTracker
from retina_trt.data.synthetic import write_video

SAMPLES = Path(__file__).parent.parent / "samples"


def test_tracker_keeps_ids_per_class_and_forgets_lost_tracks():
    tracker = IouTracker(max_missed=1)
    a = np.array([[10, 10, 50, 50]], dtype=np.float32)
    first = tracker.update(a, np.array([0]))
    second = tracker.update(a + 5, np.array([0]))
    assert first[0].track_id == second[0].track_id and second[0].previous_center == (30.0, 30.0)
    other = tracker.update(a + 5, np.array([1]))  # same place, another class: a new track
    assert other[0].track_id != first[0].track_id
    tracker.update(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    tracker.update(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert tracker.tracks == {}


def test_samples_run_on_generated_videos(onnx_models, tmp_path):
    model = str(onnx_models[("onnx", False)])
    a = write_video(tmp_path / "a.avi", num_frames=12, seed=5, frame_size=(256, 256))
    b = write_video(tmp_path / "b.avi", num_frames=8, seed=6, frame_size=(256, 320))
    events = tmp_path / "out" / "events.jsonl"
    run = subprocess.run(
        [sys.executable, str(SAMPLES / "video_analytics.py"), model, str(a), str(b), "--events", str(events)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in events.read_text().splitlines()]
    final = records[-1]
    assert final["type"] == "summary"
    assert final["sources"]["0"]["frames"] == 12 and final["sources"]["1"]["frames"] == 8
    assert set(final["sources"]["0"]["lines"]) == {"middle"} and set(final["sources"]["0"]["zones"]) == {"centre"}
    kinds = {"summary", "zone_count", "zone_enter", "zone_leave", "line_crossing"}
    assert all(r["type"] in kinds for r in records)
    assert len((SAMPLES / "video_analytics.py").read_text().splitlines()) <= 50

    minimal = subprocess.run(
        [sys.executable, str(SAMPLES / "embed_minimal.py"), model, str(a)], capture_output=True, text=True, timeout=300
    )
    assert minimal.returncode == 0, minimal.stderr[-2000:]
    lines = minimal.stdout.splitlines()
    assert len(lines) == 12 and lines[0].startswith("frame 0 at 0.00 s:")
    assert len((SAMPLES / "embed_minimal.py").read_text().splitlines()) <= 10


def test_confirm_frames_reaches_the_tracker_from_the_config():
    """AnalyticsConfig(confirm_frames=N) (retina-trt analyze --confirm-frames N) sets when a
    track gets its id; a bad value fails when the config is made."""
    pytest.importorskip("trackers")
    from retina_trt.analytics.source import AnalyticsConfig, SourceAnalytics
    from retina_trt.runtime.detections import Detections

    def first_id_frame(confirm):
        analytics = SourceAnalytics("cam", AnalyticsConfig(confirm_frames=confirm))
        for frame in range(10):  # one object from the start, one that appears at frame 5
            boxes = [[200, 200, 240, 240]] + ([[10 + 4 * frame, 20, 50 + 4 * frame, 60]] if frame >= 5 else [])
            tracked, _ = analytics.update(
                (256, 384, 3),
                Detections(np.array(boxes, np.float32), [0.9] * len(boxes), [0, 1][: len(boxes)], ("a", "b")),
                frame,
                frame / 15,
            )
            if len(tracked) == 2:
                return frame
        return None

    assert first_id_frame(1) == 6 and first_id_frame(3) == 8
    with pytest.raises(ValueError, match="confirm_frames"):
        AnalyticsConfig(confirm_frames=0)
