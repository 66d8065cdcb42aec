"""Event snapshots and clips through ``run_analyze`` on the scripted crossing scene: each counted
event names a whole JPEG (box drawn, or a crop) and the clip it belongs to; clips are playable,
hold the frames around their events (checked with OpenCV), overlapping events share one, and
``clip_ready`` comes once the file is complete. The snapshot folder keeps to its disk budget, and
a 720p source's pre-roll buffer keeps to its memory goal."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import scene
from helpers import ListSink

from retina_trt import Detector
from retina_trt.analytics.app import RunOptions, run_analyze
from retina_trt.analytics.clips import Clips, SourceClips
from retina_trt.analytics.snapshots import SNAPSHOT_EVENTS, Snapshots
from retina_trt.analytics.source import AnalyticsConfig
from retina_trt.data.scenes import SCENES, write_scene

PRE_S, POST_S = 1.0, 1.0


def _fractions(scene_, points) -> str:
    return ";".join(f"{x / scene_.width:.6f},{y / scene_.height:.6f}" for x, y in points)


@pytest.fixture(scope="module")
def crossing_run(demo_onnx, tmp_path_factory):
    scene_ = SCENES[0]
    folder = tmp_path_factory.mktemp("pictures")
    video = write_scene(scene_, folder / "scene") / "video.avi"
    config = AnalyticsConfig(
        lines=(("mid", _fractions(scene_, scene_.line)),), zones=(("right", _fractions(scene_, scene_.zone)),)
    )
    sink = ListSink()
    snapshots = Snapshots(folder / "snapshots")
    clips = Clips(folder / "clips", pre_s=PRE_S, post_s=POST_S, fps=scene_.fps)
    with Detector(demo_onnx) as det:
        final = run_analyze(det, {"cam": video}, config, [sink], snapshots=snapshots, clips=clips, options=RunOptions())
    return sink.events, final, video


def test_counted_events_carry_a_whole_snapshot(crossing_run):
    events, _, video = crossing_run
    counted = [e for e in events if e["type"] in SNAPSHOT_EVENTS and e.get("reason") is None]
    assert len(counted) >= 2
    width = int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_WIDTH))
    for event in counted:
        picture = cv2.imread(event["snapshot"])
        assert picture is not None and picture.shape[1] == width, event  # the whole frame
        assert Path(event["snapshot"]).parent.name == "cam"
        yellow = (picture[..., 0] < 80) & (picture[..., 1] > 200) & (picture[..., 2] > 200)
        assert yellow.sum() > 20, "the object's box is drawn"
    assert not list(Path(counted[0]["snapshot"]).parent.glob("*.part*"))  # no temporary file left


def test_clips_hold_the_frames_around_their_events(crossing_run):
    events, _, _ = crossing_run
    ready = [e for e in events if e["type"] == "clip_ready"]
    counted = [e for e in events if e["type"] in SNAPSHOT_EVENTS]
    assert ready and len(ready) < len(counted), "overlapping events share a clip"
    by_path = {e["clip"]: e for e in ready}
    for event in counted:
        clip = by_path[event["clip"]]  # every event's clip was announced
        assert clip["start_t"] <= event["t"] <= clip["end_t"]
        assert any(held["frame"] == event["frame"] and held["type"] == event["type"] for held in clip["events"])
    for clip in ready:
        capture = cv2.VideoCapture(clip["clip"])
        frames = 0
        while capture.read()[0]:
            frames += 1
        assert frames == clip["frames"] > 0, clip
        first, last = min(e["t"] for e in clip["events"]), max(e["t"] for e in clip["events"])
        assert clip["start_t"] <= max(0.0, first - PRE_S) + 0.1, clip  # the pre-roll (or the video's start)
        assert clip["end_t"] >= last + POST_S - 0.1 or clip is ready[-1], clip  # the post-roll (or the end)
        fps = capture.get(cv2.CAP_PROP_FPS)
        assert abs((clip["frames"] - 1) / fps - (clip["end_t"] - clip["start_t"])) < 0.2, clip  # its time range


def test_clip_ready_comes_after_the_events_it_holds(crossing_run):
    events, _, _ = crossing_run
    position = {id(e): i for i, e in enumerate(events)}
    for clip in (e for e in events if e["type"] == "clip_ready"):
        held = [e for e in events if e.get("clip") == clip["clip"] and e["type"] != "clip_ready"]
        assert held and all(position[id(e)] < position[id(clip)] for e in held)


def test_snapshot_folder_keeps_to_its_budget(tmp_path):
    frame = scene(480, 640, 5)
    mine = tmp_path / "holiday" / "beach.jpg"  # the user's own picture in the folder: never counted or removed
    mine.parent.mkdir()
    cv2.imwrite(str(mine), frame)
    snapshots = Snapshots(tmp_path, budget_mb=0.2)

    class Tracked:
        tracker_ids = np.array([7])
        boxes_xyxy = np.array([[100.0, 100.0, 200.0, 220.0]], np.float32)

    for i in range(40):
        event = {"type": "line_crossing", "track_id": 7, "class": "star", "frame": i, "source": "a/../b"}
        assert "snapshot" in snapshots.attach(event, frame, Tracked())
    on_disk = [p for p in tmp_path.rglob("*.jpg") if p != mine]
    assert mine.is_file() and snapshots.removed > 0 and len(on_disk) == 40 - snapshots.removed
    assert sum(p.stat().st_size for p in on_disk) == snapshots.total_bytes <= 0.2e6
    assert all(p.parent.parent == tmp_path for p in on_disk)  # the source id cannot climb out
    again = Snapshots(tmp_path, budget_mb=0.2)  # a second run counts what is there
    assert again.total_bytes == snapshots.total_bytes
    again_event = dict(event, frame=39, time=event.get("time", 0) + 3600)  # a later run, same frame number
    assert again.attach(again_event, frame, Tracked())["snapshot"] not in {str(p) for p in on_disk}
    crop = Snapshots(tmp_path / "crop", crop=True).attach(dict(event, frame=99), frame, Tracked())
    assert cv2.imread(crop["snapshot"]).shape[:2] == (181, 151)  # the box and a quarter of it each side


def test_pre_roll_of_a_720p_source_stays_within_20_mb():
    clips = SourceClips("cam", Path("."), pre_s=5.0, post_s=5.0, fps=15.0)
    frames = [scene(720, 1280, seed) for seed in range(8)]
    for i in range(15 * 7):
        clips.frame(frames[i % len(frames)], i / 15.0)
    assert len(clips.ring) == 76  # 5 s at 15 fps, both ends included
    assert clips.peak_ring_bytes <= 20e6, clips.peak_ring_bytes


def test_clip_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="--pre"):
        Clips(tmp_path, pre_s=-1)
    with pytest.raises(ValueError, match="budget"):
        Snapshots(tmp_path, budget_mb=0)


def test_analyze_cli_writes_snapshots_and_clips(demo_onnx, crossing_run, tmp_path):
    import json
    import subprocess
    import sys

    _, _, video = crossing_run
    scene_ = SCENES[0]
    events = tmp_path / "events.jsonl"
    command = [sys.executable, "-m", "retina_trt.cli", "analyze", str(demo_onnx), str(video)]
    command += ["--line", f"mid={_fractions(scene_, scene_.line)}", "--events", str(events)]
    command += ["--snapshots", str(tmp_path / "snaps"), "--clips", str(tmp_path / "clips"), "--pre", "1", "--post", "1"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    crossings = [r for r in records if r["type"] == "line_crossing"]
    ready = {r["clip"] for r in records if r["type"] == "clip_ready"}
    assert crossings and all(Path(r["snapshot"]).is_file() and r["clip"] in ready for r in crossings)
    assert all(Path(path).is_file() for path in ready)
