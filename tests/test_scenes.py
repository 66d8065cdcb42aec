"""The scripted scenes are the ground truth of the tracking and counting tests: their videos,
MOTChallenge files and the counts their scripts state must agree with each other."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from retina_trt.analytics.counting import LineCounter, ZoneCounter
from retina_trt.analytics.geometry import Line, Zone
from retina_trt.data.scenes import (
    QUIET_SCENES,
    SCENES,
    Actor,
    Scene,
    read_ground_truth,
    render_scene,
    write_scene,
)
from retina_trt.data.synthetic import CLASS_NAMES
from retina_trt.runtime.detections import Detections


def _counts_of_ground_truth(scene: Scene) -> tuple[dict, dict]:
    line, zone = LineCounter(Line(*scene.line)), ZoneCounter(Zone(scene.zone))
    for frame, _, truth in render_scene(scene):
        boxes = np.array([t.box for t in truth], np.float32).reshape(-1, 4)
        tracked = Detections(
            boxes, np.ones(len(truth)), [t.class_id for t in truth], CLASS_NAMES, [t.track_id for t in truth]
        )
        line.update(tracked, frame)
        zone.update(tracked, frame)
    return line.counts, zone.counts


@pytest.mark.parametrize("scene", SCENES + QUIET_SCENES, ids=[s.name for s in SCENES + QUIET_SCENES])
def test_ground_truth_tracks_make_the_counts_the_script_states(scene):
    line, zone = _counts_of_ground_truth(scene)
    assert line == {k: scene.expected_line.get(k, {}) for k in ("in", "out")}
    assert zone == {k: scene.expected_zone.get(k, {}) for k in ("enter", "leave")}


def test_scenes_cover_what_the_counts_must_survive():
    by_name = {s.name: s for s in SCENES}
    assert {"plain", "textured"} <= {s.background for s in SCENES}
    edge = by_name["edge"]
    assert max(edge.line[0][1], edge.line[1][1]) >= edge.height - 10  # a line at the frame edge
    # the occlusion scene hides the star completely for some frames while it crosses the line
    visible = {f: {t.track_id for t in truth} for f, _, truth in render_scene(by_name["occlusion"])}
    hidden = [f for f, ids in visible.items() if 1 not in ids and 5 < f < 55]
    assert len(hidden) >= 3


def test_written_scene_has_video_mot_ground_truth_and_record(tmp_path):
    scene = SCENES[0]
    folder = write_scene(scene, tmp_path)
    capture = cv2.VideoCapture(str(folder / "video.avi"))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = capture.read()
    capture.release()
    assert ok and first.shape == (scene.height, scene.width, 3) and frames == scene.num_frames
    rows = [line.split(",") for line in (folder / "gt" / "gt.txt").read_text().splitlines()]
    assert all(len(r) == 9 for r in rows)
    frames_seen = {int(r[0]) for r in rows}
    assert min(frames_seen) >= 1 and max(frames_seen) <= scene.num_frames  # MOT frames count from 1
    assert {int(r[1]) for r in rows} == {a.track_id for a in scene.actors}
    assert all(float(r[4]) > 0 and float(r[5]) > 0 and r[7] == "1" and 0.35 <= float(r[8]) <= 1.0 for r in rows)
    assert set(json.loads((folder / "scene.json").read_text())["track_classes"]) == {
        str(a.track_id) for a in scene.actors
    }
    record = json.loads((folder / "scene.json").read_text())
    assert record["expected_line"] == scene.expected_line and record["class_names"] == list(CLASS_NAMES)
    per_frame, track_classes = read_ground_truth(folder)  # the reader gives the script's boxes back
    assert track_classes == {a.track_id: CLASS_NAMES[a.class_id] for a in scene.actors}
    for frame, _, truth in render_scene(scene):
        assert sorted(t for t, _ in per_frame[frame]) == sorted(t.track_id for t in truth)
        for (_, box), t in zip(sorted(per_frame[frame]), sorted(truth, key=lambda t: t.track_id)):
            np.testing.assert_allclose(box, t.box, atol=0.011)


def test_actor_and_scene_refuse_bad_scripts():
    with pytest.raises(ValueError, match="ascending"):
        Actor(track_id=1, class_id=0, size=(10, 10), path=((5, 0, 0), (2, 1, 1)))
    with pytest.raises(ValueError, match="class"):
        Actor(track_id=1, class_id=9, size=(10, 10), path=((0, 0, 0), (2, 1, 1)))
    actor = Actor(track_id=1, class_id=0, size=(10, 10), path=((0, 0, 0), (2, 1, 1)))
    with pytest.raises(ValueError, match="unique"):
        Scene(name="x", height=64, width=64, num_frames=3, actors=(actor, actor), line=((0, 0), (1, 1)), zone=())
