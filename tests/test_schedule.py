"""Inference schedules (``streams/schedule.py``, ``streams/motion.py``): every, every N-th and
adaptive, through the multi-source stream, the analytics and the CLI, on real video files and the
scripted scenes with ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retina_trt.analytics.source import AnalyticsConfig, SourceAnalytics
from retina_trt.analytics.tracking import make_tracker
from retina_trt.cli import main
from retina_trt.data.scenes import QUIET_SCENES, SCENES, write_scene
from retina_trt.runtime.detections import Detections
from retina_trt.streams.motion import MotionGate
from retina_trt.streams.schedule import AdaptiveOptions, InferSchedule, SourceSchedule

DEMO = __import__("pathlib").Path(__file__).parent.parent / "samples" / "models" / "shapes_r18.pt"


@pytest.fixture(scope="module")
def demo_fixed(tmp_path_factory):
    """The demo model exported at the scenes' 256x384."""
    from retina_trt import export_onnx

    return export_onnx(DEMO, tmp_path_factory.mktemp("schedule") / "demo.onnx", input_size=(256, 384))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "foo", "0", "-1", "1.5", "", True, None])
def test_bad_schedules_are_one_clear_error(bad):
    with pytest.raises(ValueError, match="every, adaptive or a whole number"):
        InferSchedule.parse(bad)


def test_schedules_parse_and_validate():
    assert InferSchedule.parse("every") == InferSchedule() == InferSchedule.parse(1) == InferSchedule.parse("1")
    assert InferSchedule.parse(3) == InferSchedule(mode="nth", n=3) == InferSchedule.parse(" 3 ")
    assert InferSchedule.parse("ADAPTIVE").mode == "adaptive"
    assert InferSchedule.parse(3).tracker_fps(15.0) == 5.0 and InferSchedule.parse("adaptive").tracker_fps(15.0) == 15
    for field, value in (("refresh_s", 0), ("motion_area", 1.5), ("max_gap_frames", 0), ("gate_width_px", 8)):
        with pytest.raises(ValueError, match=field):
            AdaptiveOptions(**{field: value})


def _frame(rng, level: float = 100.0, sigma: float = 4.0, box=None) -> np.ndarray:
    image = np.full((720, 1280, 3), level) + rng.normal(0, sigma, (720, 1280, 3))
    if box is not None:
        x, y = box
        image[y : y + 80, x : x + 80] = 230
    return np.clip(image, 0, 255).astype(np.uint8)


def test_the_gate_ignores_noise_and_drift_and_sees_what_moves():
    """Sensor noise and a slow brightness drift never reach the motion threshold; an object
    moving does, and so does one that vanishes where it had only just arrived."""
    options = AdaptiveOptions()
    gate = MotionGate(gate_width_px=160, pixel_threshold=options.pixel_threshold, background_s=2.0, fps=15)
    rng = np.random.default_rng(0)
    quiet = [gate.update(_frame(rng, level=60 + 0.5 * i)).changed for i in range(120)]  # +60 levels in 8 s
    assert max(quiet) < options.motion_area, max(quiet)
    moving = [gate.update(_frame(rng, level=120, box=(100 + 20 * i, 300))).changed for i in range(5)]
    assert min(moving[1:]) >= options.motion_area
    gone = gate.update(_frame(rng, level=120))
    assert gone.changed >= options.motion_area and gone.changed_in(np.array([[180, 300, 260, 380]])) > 0.2


def test_the_adaptive_schedule_says_why_it_runs():
    """First frame: refresh; quiet: skipped; moving objects: tracks; motion elsewhere: motion;
    refresh_s of source time: refresh; max_gap_frames: gap."""
    options = AdaptiveOptions(max_gap_frames=20, follow_frames=0)
    schedule = SourceSchedule(InferSchedule(mode="adaptive", adaptive=options), fps=15)
    still = np.zeros((90, 160), bool)

    def motion(mask):
        from retina_trt.streams.motion import MotionSample

        return MotionSample(float(mask.mean()), mask, 0.125)

    assert schedule.decide(0, 0.0, motion(still)) == "refresh"
    assert schedule.decide(1, 1 / 15, motion(still)) is None
    moved = still.copy()
    moved[10:20, 10:20] = True  # inside the box below, at 1/8 scale
    schedule.inferred(Detections(np.array([[80, 80, 160, 160]]), np.array([0.9]), np.array([0]), ("a",)))
    assert schedule.decide(2, 2 / 15, motion(moved)) == "tracks"
    schedule.inferred(Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0), ("a",)))
    assert schedule.decide(3, 3 / 15, motion(moved)) == "motion"
    assert schedule.decide(4, 4 / 15 + 1.0, motion(still)) is None
    assert schedule.decide(33, 33 / 15 + 0.01, motion(still)) == "refresh"  # 2 s after frame 3
    assert schedule.decide(53, 34 / 15, motion(still)) == "gap"  # 20 frames (a source clock that stalled)
    assert schedule.reasons == {"motion": 1, "tracks": 1, "refresh": 2, "gap": 1}
    # follow_frames: after an inference finds new objects, the next frames run, moving or not
    follow = SourceSchedule(InferSchedule(mode="adaptive"), fps=15)
    assert follow.decide(0, 0.0, motion(still)) == "refresh"
    follow.inferred(Detections(np.array([[80, 80, 160, 160]]), np.array([0.9]), np.array([0]), ("a",)))
    decisions = [follow.decide(i, i / 15, motion(still)) for i in range(1, 5)]
    assert decisions == ["tracks", "tracks", None, None]


def test_every_nth_frame_through_the_stream_holds_the_last_detections(demo_fixed, tmp_path):
    """infer=3: every frame delivered, in order; the model on frames 0, 3, 6, ...; a skipped frame
    carries the last inferred detections and inferred=False; the counters add up."""
    from retina_trt import Detector

    video = write_scene(SCENES[0], tmp_path) / "video.avi"
    with Detector(demo_fixed) as det, det.streams([str(video)], infer=3) as stream:
        results = list(stream)
        stats = stream.close()["0"]
    assert [r.index for r in results] == list(range(SCENES[0].num_frames))
    assert [r.index for r in results if r.inferred] == list(range(0, SCENES[0].num_frames, 3))
    for before, skipped in zip(results[::3], results[1::3]):
        assert not skipped.inferred and skipped.reason is None and skipped.detections is before.detections
    assert stats["inferred"] == 30 and stats["frames"] == 90 and stats["infer_reasons"] is None
    parts = ("processed", "dropped", "skipped", "decode_errors", "errors")
    assert stats["read"] == sum(stats[k] for k in parts)


def _analyse(det, scene, folder, infer) -> tuple[dict, dict, dict]:
    fractions = {
        k: ";".join(f"{x / scene.width},{y / scene.height}" for x, y in pts)
        for k, pts in (("line", scene.line), ("zone", scene.zone))
    }
    config = AnalyticsConfig(
        lines=[("line", fractions["line"])], zones=[("zone", fractions["zone"])], fps=scene.fps, infer=infer
    )
    analytics = SourceAnalytics("s", config)
    with det.streams([str(folder / "video.avi")], infer=config.infer) as stream:
        for r in stream:
            tracked, _ = analytics.update(r.frame.shape, r.detections, r.index, r.timestamp_s, inferred=r.inferred)
            assert tracked.tracker_ids is None or (tracked.tracker_ids >= 0).all()  # never an unconfirmed id
        stats = stream.close()["0"]
    return analytics.lines[0].counts, analytics.zones[0].counts, stats


@pytest.mark.parametrize("scene", QUIET_SCENES + SCENES, ids=[s.name for s in QUIET_SCENES + SCENES])
def test_adaptive_counts_are_exact(demo_fixed, tmp_path, scene):
    """Adaptive inference keeps the line and zone counts of every scripted scene exact (where
    every frame's are: all of them, docs/analytics.md), and on the quiet scenes whose script moves
    on at most 20% of the frames the model runs on at most 30% of them."""
    from retina_trt import Detector
    from retina_trt.bench.schedule import motion_share

    folder = write_scene(scene, tmp_path)
    with Detector(demo_fixed) as det:
        line, zone, stats = _analyse(det, scene, folder, "adaptive")
    assert line == {k: scene.expected_line.get(k, {}) for k in ("in", "out")}
    assert zone == {k: scene.expected_zone.get(k, {}) for k in ("enter", "leave")}
    assert sum(stats["infer_reasons"].values()) == stats["inferred"] <= stats["frames"] == scene.num_frames
    if motion_share(scene) <= 0.2:
        assert stats["inferred"] <= 0.3 * scene.num_frames, stats


def test_unconfirmed_tracks_never_reach_a_counter():
    """OC-SORT's first sight of an object is unconfirmed: no id, so nothing to count."""
    tracker = make_tracker("ocsort", fps=15)
    first = tracker.update(Detections(np.array([[10, 10, 50, 50]]), np.array([0.9]), np.array([0]), ("a",)))
    assert len(first) == 0 or (first.tracker_ids >= 0).all()


def test_analyze_reports_what_the_schedule_did(demo_fixed, tmp_path):
    """retina-trt analyze --infer adaptive on a quiet scene: the summary says frames, inferred and
    why; a skipped frame's message is marked inferred false and holds boxes; bad values exit 2."""
    scene = QUIET_SCENES[3]  # bursts
    video = write_scene(scene, tmp_path) / "video.avi"
    events = tmp_path / "events.jsonl"
    line = f"door={192 / 384},0;{192 / 384},1"
    args = ["analyze", str(demo_fixed), str(video), "--events", str(events), "--line", line]
    assert main([*args, "--infer", "adaptive", "--frame-messages"]) == 0
    records = [json.loads(x) for x in events.read_text().splitlines()]
    final = [r for r in records if r["type"] == "summary"][-1]["sources"]["0"]
    assert final["frames"] == scene.num_frames and 0 < final["inferred"] <= 0.3 * scene.num_frames
    assert set(final["infer_reasons"]) == {"motion", "tracks", "refresh", "gap"}
    assert final["lines"]["door"] == {"in": {"cross": 1}, "out": {"ring": 1, "triangle": 1}}
    frames = [r for r in records if r["type"] == "frame"]
    held = [f for f in frames if f.get("inferred") is False]
    assert len(frames) == scene.num_frames and len(held) == scene.num_frames - final["inferred"]
    for bad in ("0", "-1", "1.5", "foo"):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--infer", bad])
        assert exit_info.value.code == 2


def test_detect_runs_a_schedule_and_says_so(demo_fixed, tmp_path, capsys):
    """retina-trt detect --infer 3 on a video: every frame's JSON line, skipped ones marked and
    holding the last detections; the report says how often the model ran; bad values exit 2."""
    video = write_scene(SCENES[1], tmp_path) / "video.avi"
    out = tmp_path / "out"
    assert main(["detect", str(demo_fixed), str(video), "--output", str(out), "--no-draw", "--infer", "3"]) == 0
    lines = [json.loads(x) for x in (out / "video.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(SCENES[1].num_frames))
    assert [r["frame"] for r in lines if "inferred" not in r] == list(range(0, SCENES[1].num_frames, 3))
    assert all(
        r["inferred"] is False and r["boxes_xyxy"] == lines[r["frame"] - r["frame"] % 3]["boxes_xyxy"]
        for r in lines[1::3]
    )
    assert "the model ran on 30" in capsys.readouterr().out
    for bad in ("0", "-1", "1.5", "foo"):
        with pytest.raises(SystemExit) as exit_info:
            main(["detect", str(demo_fixed), str(video), "--output", str(out), "--infer", bad])
        assert exit_info.value.code == 2


def test_the_live_view_status_says_how_often_the_model_ran(demo_fixed, tmp_path):
    """analyze's live view (a real server socket): each source's status carries inferred and why."""
    import urllib.request

    from retina_trt import Detector
    from retina_trt.analytics.app import run_analyze
    from retina_trt.analytics.sinks import open_sink
    from retina_trt.analytics.view import LiveView

    scene = QUIET_SCENES[0]
    video = write_scene(scene, tmp_path) / "video.avi"
    view = LiveView(0)
    try:
        with Detector(demo_fixed) as det:
            config = AnalyticsConfig(lines=(("l", "0.5,0;0.5,1"),), infer="adaptive")
            run_analyze(det, {"cam": str(video)}, config, [open_sink(str(tmp_path / "e.jsonl"))], view=view)
        status = json.loads(urllib.request.urlopen(f"{view.url.rstrip('/')}/status.json", timeout=10).read())
    finally:
        view.close()
    cam = status["sources"]["cam"]
    assert cam["frames"] == scene.num_frames and 0 < cam["inferred"] < scene.num_frames
    assert set(cam["infer_reasons"]) == {"motion", "tracks", "refresh", "gap"}
