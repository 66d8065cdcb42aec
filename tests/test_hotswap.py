"""Model hot-swap while two sources run: ``streams.swap`` (Python), a changed model file and
SIGHUP (``retina-trt analyze``). No frame is lost, the counts are those of a run without a swap
(the trackers kept their ids), a model with other classes is refused and the old one keeps
running, and each swap is an event and a metric."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import wait_until

from retina_trt import Detector
from retina_trt.analytics.app import RunOptions, run_analyze
from retina_trt.analytics.source import AnalyticsConfig
from retina_trt.data.camera import Camera
from retina_trt.data.scenes import SCENES, write_scene
from retina_trt.streams import MultiStream


class Counting:
    """A detector that counts the frames it ran on (the stream's view of a model)."""

    def __init__(self, detector) -> None:
        self.detector, self.frames = detector, 0

    def __getattr__(self, name):
        return getattr(self.detector, name)

    def predict_batch(self, frames):
        self.frames += len(frames)
        return self.detector.predict_batch(frames)

    def submit(self, frames):
        self.frames += len(frames)
        return self.detector.submit(frames)

    def close(self) -> None:
        self.detector.close()


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("swap")
    return {name: str(write_scene(s, folder / name) / "video.avi") for name, s in (("a", SCENES[0]), ("b", SCENES[1]))}


def _frame_counts(videos) -> dict[str, int]:
    import cv2

    return {k: int(cv2.VideoCapture(v).get(cv2.CAP_PROP_FRAME_COUNT)) for k, v in videos.items()}


def test_swap_in_python_loses_no_frame(demo_onnx, two_videos):
    old, new = Counting(Detector(demo_onnx)), Counting(Detector(demo_onnx))
    seen: dict[str, list[int]] = {"a": [], "b": []}
    swapped_at = None
    with MultiStream(old, two_videos, infer="every") as streams:
        for result in streams:
            seen[result.source_id].append(result.index)
            if swapped_at is None and len(seen["a"]) == 10:
                swapped_at = sum(map(len, seen.values()))
                assert streams.swap(new) is old
        stats = streams.close()
    for source_id, total in _frame_counts(two_videos).items():
        assert seen[source_id] == list(range(total)), "every frame, in order, once"
        assert stats[source_id]["dropped"] == 0
    assert old.frames >= swapped_at and new.frames > 0
    assert old.frames + new.frames == sum(map(len, seen.values())) + 1  # + the new model's warm-up frame
    assert streams.swaps == 1
    old.close(), new.close()


def test_model_with_other_classes_is_refused_and_the_old_one_runs_on(demo_onnx, onnx_models, two_videos):
    other = Detector(onnx_models[("onnx", False)])  # the tiny model: other classes
    with Detector(demo_onnx) as det, det.streams(two_videos, infer="every") as streams:
        frames = 0
        for _ in streams:
            frames += 1
            if frames == 5:
                with pytest.raises(ValueError, match="classes .* differ .* the running model stays"):
                    streams.swap(other)
        assert streams.detector is det and streams.swaps == 0
    assert frames == sum(_frame_counts(two_videos).values())
    other.close()


def _analyze(det, videos, config, hold_at_frame: int | None = None, **options):
    """``run_analyze`` into a list; with ``hold_at_frame`` (frame messages on), the consumer waits
    at that frame message until a swap happened, so that a fast machine cannot finish the videos
    first (file sources wait for room: nothing is lost)."""
    events = []
    lock = threading.Lock()
    swapped = threading.Event()

    class Sink:
        def emit(self, event):
            with lock:
                events.append(event)
                frames = sum(e["type"] == "frame" for e in events)
            if event["type"] == "model_swapped":
                swapped.set()
            if event["type"] == "frame" and frames == hold_at_frame:
                swapped.wait(60)

        def stats(self):
            return {"sink": "list", "delivered": len(events), "dropped": 0, "buffered": 0}

        def close(self, timeout_s=0.0):
            return self.stats()

    final = run_analyze(det, videos, config, [Sink()], options=RunOptions(**options))
    return final, events


def test_changed_model_file_is_swapped_in_and_counts_stay_exact(demo_onnx, two_videos, tmp_path):
    scene = SCENES[0]
    line = ";".join(f"{x / scene.width:.6f},{y / scene.height:.6f}" for x, y in scene.line)
    config = AnalyticsConfig(lines=(("mid", line),), infer="every", frame_messages=True)
    model = tmp_path / "model.onnx"
    shutil.copyfile(demo_onnx, model)
    with Detector(model) as det:
        plain, _ = _analyze(det, two_videos, config)
    toucher = threading.Timer(1.0, lambda: os.utime(model, (time.time() + 5, time.time() + 5)))
    with Detector(model) as det:
        toucher.start()
        options = {"reload": lambda: Detector(model), "watch": model}
        swapped, events = _analyze(det, two_videos, config, hold_at_frame=10, **options)
    kinds = [e["type"] for e in events]
    assert kinds.count("model_swapped") == 1, kinds
    for source_id, total in _frame_counts(two_videos).items():
        assert swapped["sources"][source_id]["frames"] == total
        assert swapped["sources"][source_id]["lines"] == plain["sources"][source_id]["lines"]
    assert sum(sum(c.values()) for s in swapped["sources"].values() for c in s["lines"]["mid"].values()) > 0


def test_sighup_swaps_the_model_of_a_running_analyze(demo_onnx, tmp_path):
    from brokers import free_port, wait_port

    camera = Camera(fps=15, size=(240, 320))
    events, port = tmp_path / "events.jsonl", free_port()
    command = [sys.executable, "-m", "retina_trt.cli", "analyze", str(demo_onnx), camera.url]
    command += ["--events", str(events), "--metrics", str(port)]
    analyze = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_port(port, timeout_s=120)
        assert wait_until(lambda: _metric(port, "retina_trt_source_frames_processed_total") > 0, 120, 0.2)
        analyze.send_signal(signal.SIGHUP)
        assert wait_until(lambda: _metric(port, "retina_trt_model_swaps_total") == 1, 120, 0.2)
        frames = _metric(port, "retina_trt_source_frames_processed_total")
        assert wait_until(lambda: _metric(port, "retina_trt_source_frames_processed_total") > frames + 15, 60, 0.2)
        assert analyze.poll() is None, "it kept running"
    finally:
        analyze.send_signal(signal.SIGINT)
        output, _ = analyze.communicate(timeout=60)
        camera.stop()
    swapped = [json.loads(line) for line in events.read_text().splitlines() if "model_swapped" in line]
    assert len(swapped) == 1 and swapped[0]["source"] == "model", output


def _metric(port: int, name: str) -> float:
    """The first sample of ``name`` from the running analyze's /metrics (0 when absent)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_swap_with_two_live_cameras_loses_no_frame_and_keeps_track_ids(demo_onnx, tmp_path):
    """Two MJPEG cameras on localhost; the model file changes mid-run: every frame of both is
    analysed (contiguous frame numbers, nothing dropped) and no track gets a new id."""
    model = tmp_path / "model.onnx"
    shutil.copyfile(demo_onnx, model)
    cameras = {name: Camera(fps=15, size=(240, 320)) for name in ("left", "right")}
    frames: dict[str, list[dict]] = {name: [] for name in cameras}
    events, stop, lock = [], threading.Event(), threading.Lock()

    class Sink:
        def emit(self, event):
            with lock:
                (frames[event["sensorId"]] if event["type"] == "frame" else events).append(event)
            if event["type"] == "model_swapped":
                threading.Timer(2.0, stop.set).start()

        def stats(self):
            return {"sink": "list", "delivered": 0, "dropped": 0, "buffered": 0}

        def close(self, timeout_s=0.0):
            return self.stats()

    config = AnalyticsConfig(frame_messages=True, infer="every", fps=15)
    toucher = threading.Timer(2.0, lambda: os.utime(model, (time.time() + 5, time.time() + 5)))
    try:
        with Detector(model) as det:
            toucher.start()
            options = RunOptions(stop=stop, reload=lambda: Detector(model), watch=model, summary_every_s=1e9)
            final = run_analyze(det, {k: c.url for k, c in cameras.items()}, config, [Sink()], options=options)
    finally:
        for camera in cameras.values():
            camera.stop()
    swapped = [e for e in events if e["type"] == "model_swapped"]
    assert len(swapped) == 1, [e["type"] for e in events]
    swap_time = swapped[0]["time"]
    for name, messages in frames.items():
        stamp_of = [_seconds(m["@timestamp"]) for m in messages]
        # from 3 s before the swap (the load and warm-up began after the file changed, within
        # that) to the end: every frame, none lost; the first frames may drop while the first
        # inference warms up, and those still buffered when the run stops count as dropped then
        numbers = [m["id"] for m, t in zip(messages, stamp_of) if t >= swap_time - 3.0]
        assert len(numbers) > 45 and numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
        assert final["sources"][name]["frames"] == messages[-1]["id"] + 1
        ids = [{o.split("|")[0] for o in m["objects"]} for m in messages]
        before = set().union(*(i for i, t in zip(ids, stamp_of) if t < swap_time))
        after = set().union(*(i for i, t in zip(ids, stamp_of) if t > swap_time + 0.5))
        assert after and after <= before, (name, before, after)  # the same tracks, no new ids


def _seconds(iso: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_swap_while_the_stream_waits_for_frames_never_uses_the_closed_model(demo_onnx):
    """The infer thread read the model before waiting for the next frames of a live source;
    a swap in that wait returned the old model at once, the caller closed it, and the batch then
    ran on the closed model (with asynchronous requests, fatal to the stream: SIGHUP ended
    ``analyze`` with "is closed" on an AMX machine). The model is now read, and marked in use,
    under the lock ``swap`` takes. Five swaps, each old model closed at once."""
    camera = Camera(fps=15, size=(240, 320))
    try:
        with MultiStream(Detector(demo_onnx), {"cam": camera.url}) as streams:
            results = iter(streams)
            for _ in range(5):
                next(results)
            for _ in range(5):
                streams.swap(Detector(demo_onnx)).close()
                for _ in range(3):
                    next(results)
            stats = streams.close()
            streams.detector.close()
    finally:
        camera.stop()
    assert stats["cam"]["errors"] == 0 and streams.swaps == 5, stats
