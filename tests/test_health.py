"""Camera health: scripted videos of a frozen, a black, a blank and a moved camera raise
``source_unhealthy`` with the reason and ``source_healthy`` when the picture is back, through
``run_analyze`` under both the adaptive schedule (the motion gate's numbers reused) and every
frame (health's own gate); a healthy scene raises nothing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import scene
from helpers import ListSink

from retina_trt import Detector
from retina_trt.analytics.app import RunOptions, run_analyze
from retina_trt.analytics.health import HealthOptions, SourceHealth
from retina_trt.analytics.source import AnalyticsConfig

FPS = 10
SIZE = (240, 320)
FAST = HealthOptions(frozen_s=2.0, blank_s=1.0, moved_s=0.5, recover_s=1.0)


def _moving(background: np.ndarray, n: int, start: int = 0) -> list[np.ndarray]:
    """``n`` frames of a disc crossing ``background`` (with a little sensor noise, as a camera)."""
    rng = np.random.default_rng(start)
    frames = []
    for i in range(start, start + n):
        frame = background.copy()
        cv2.circle(frame, (20 + (7 * i) % 280, 120), 18, (40, 200, 240), -1)
        noise = rng.integers(-3, 4, frame.shape, dtype=np.int16)
        frames.append(np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return frames


def _script(case: str) -> list[np.ndarray]:
    """3 s of a healthy picture, 4 s of the case, 4 s healthy again (10 fps)."""
    home = scene(*SIZE, 1)
    before = _moving(home, 3 * FPS)
    if case == "frozen":
        bad = [before[-1]] * (4 * FPS)
    elif case == "black":
        bad = [np.full((*SIZE, 3), 3, np.uint8)] * (4 * FPS)
    elif case == "blank":
        bad = [np.full((*SIZE, 3), 170, np.uint8)] * (4 * FPS)
    elif case == "moved":  # another view from then on: the camera was turned
        return before + _moving(scene(*SIZE, 7), 8 * FPS, 3 * FPS)
    else:
        bad = _moving(home, 4 * FPS, 3 * FPS)
    return before + bad + _moving(home, 4 * FPS, 7 * FPS)


def _write(frames: list[np.ndarray], path) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (SIZE[1], SIZE[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("health")
    return {
        case: _write(_script(case), folder / f"{case}.avi") for case in ("frozen", "black", "blank", "moved", "fine")
    }


@pytest.mark.parametrize("infer", ["adaptive", "every"])
def test_scripted_cameras_raise_and_clear_health_events(demo_onnx, videos, infer):
    config = AnalyticsConfig(infer=infer, health=FAST, fps=FPS)
    sink = ListSink()
    with Detector(demo_onnx) as det:
        run_analyze(det, videos, config, [sink], options=RunOptions(summary_every_s=1e9))
    by_source = {case: [] for case in videos}
    for event in sink.events:
        if event["type"] in ("source_unhealthy", "source_healthy"):
            by_source[event["source"]].append((event["type"], event["reason"], event["t"]))
    assert by_source["fine"] == []
    for case in ("frozen", "black", "blank", "moved"):
        events = by_source[case]
        assert [(kind, reason) for kind, reason, _ in events] == [
            ("source_unhealthy", case),
            ("source_healthy", case),
        ], (case, events)
        raised, cleared = events[0][2], events[1][2]
        assert 3.0 <= raised <= 3.0 + FAST.hold_s(case) + 1.0, (case, events)  # soon after it began
        if case != "moved":
            assert 7.0 + FAST.recover_s <= cleared <= 7.0 + FAST.recover_s + 1.0, (case, events)
        else:
            assert raised < cleared <= 11.0, (case, events)  # once the background learnt the new view


def test_a_still_but_live_picture_is_not_frozen():
    """A static scene with sensor noise changes a little every frame: not frozen."""
    health = SourceHealth(HealthOptions(frozen_s=1.0), fps=FPS)
    home = scene(*SIZE, 3)
    rng = np.random.default_rng(0)
    events = []
    for i in range(5 * FPS):
        noisy = np.clip(home.astype(np.int16) + rng.integers(-4, 5, home.shape), 0, 255).astype(np.uint8)
        events += health.update(noisy, i / FPS)
    assert events == []


def test_health_options_are_checked():
    with pytest.raises(ValueError, match="frozen_s"):
        HealthOptions(frozen_s=-1)
    with pytest.raises(ValueError, match="moved_area"):
        HealthOptions(moved_area=0)
    assert AnalyticsConfig(health=None).health is None
