"""Many sources, one model (retina_trt/streams): frames batched across sources with a push
timeout, per-source order and counts, faults from real sources (video files and the tests' own
MJPEG cameras on localhost: never connects, stalls, dies and comes back, garbage, frame size
change, add/remove while running), closing, and a short bounded-under-load run (the 10-minute
soak is ``make soak``: retina_trt/bench/soak.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from retina_trt import Detector
from retina_trt.data.camera import Camera
from retina_trt.data.synthetic import write_video
from retina_trt.errors import VideoError
from retina_trt.streams import MultiStream

FAST_GIVE_UP = {"max_outage_s": 2.0, "backoff_s": (0.1, 0.3), "timeout_s": 1.0}


@pytest.fixture(scope="module")
def camera_sized_onnx(tiny_model, tmp_path_factory):
    """The tiny model exported at 128x128, the size of the test cameras' frames (96x128, 120x160
    letterboxed): at 256x384 it took 236-370 ms a frame on a 2-core AVX2 EPYC, slower than the
    cameras these timing tests need it to keep up with."""
    from retina_trt import export_onnx

    return export_onnx(tiny_model, tmp_path_factory.mktemp("ms") / "tiny_128.onnx", nms="onnx", input_size=(128, 128))


@pytest.fixture(scope="module", params=["openvino", "onnxruntime"])
def det(request, camera_sized_onnx):
    if request.param == "openvino":
        pytest.importorskip("openvino")
    with Detector(camera_sized_onnx, backend=request.param) as detector:
        yield detector


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return [
        write_video(folder / f"v{i}.avi", num_frames=n, seed=i, frame_size=(120, 160))
        for i, n in enumerate((30, 21, 12))
    ]


def _adds_up(stats: dict) -> None:
    for source_id, s in stats.items():
        assert s["read"] == s["processed"] + s["dropped"] + s["skipped"] + s["decode_errors"] + s["errors"], (
            source_id,
            s,
        )


def _run(stream: MultiStream) -> dict[str, list]:
    got: dict[str, list] = {}
    with stream:
        for result in stream:
            got.setdefault(result.source_id, []).append(result)
    return got


def test_files_are_batched_across_sources_in_order_and_never_drop(det, videos):
    stream = det.streams({"a": videos[0], "b": videos[1], "c": videos[2]}, push_timeout_ms=200)
    got = _run(stream)
    assert {k: len(v) for k, v in got.items()} == {"a": 30, "b": 21, "c": 12}
    for results in got.values():
        assert [r.index for r in results] == list(range(len(results)))  # one source: in order
        assert [r.timestamp_s for r in results] == sorted(r.timestamp_s for r in results)
    stats = stream.stats()
    assert all(s["dropped"] == 0 and s["state"] == "ended" for s in stats.values())
    _adds_up(stats)
    assert max(stream.batch_sizes) > 1 and stream.batches < 63  # frames of several sources per call
    assert max(stream.batch_sizes) <= det.max_batch


def test_a_batch_goes_when_full_or_at_the_push_timeout(det):
    """One camera at 10 fps (slower than the model): a 600 ms timeout fills batches of 4, a 10 ms
    one sends each frame alone, soon after it was decoded."""
    camera = Camera(fps=10, frames=40)
    try:
        with det.streams([camera.url], push_timeout_ms=600, batch_size=4, **FAST_GIVE_UP) as full:
            results = list(full)
        assert len(results) >= 35 and sum(full.batch_sizes) / len(full.batch_sizes) > 3.0
    finally:
        camera.stop()
    camera = Camera(fps=10, frames=40)
    try:
        with det.streams([camera.url], push_timeout_ms=10, batch_size=4, **FAST_GIVE_UP) as eager:
            results = list(eager)
        assert len(results) >= 35 and sum(eager.batch_sizes) / len(eager.batch_sizes) < 1.5
        latencies = sorted(r.latency_s for r in results[5:])  # (the first wait for the model's warm-up)
        assert latencies[len(latencies) // 2] < 0.2
    finally:
        camera.stop()


def _healthy_rate(stream: MultiStream, healthy: str, seconds: float) -> float:
    """Frames of ``healthy`` per second over ``seconds`` of the run."""
    count, start = 0, time.monotonic()
    for result in stream:
        if result.source_id == healthy:
            count += 1
        if time.monotonic() - start > seconds:
            break
    return count / (time.monotonic() - start)


@pytest.mark.parametrize("fault", ["never connects", "stalls", "garbage", "size changes", "dies and comes back"])
def test_a_faulty_source_never_slows_the_others(det, videos, fault):
    healthy = Camera(fps=15)
    faulty = None
    if fault == "never connects":
        url = "http://127.0.0.1:9/none.mjpg"
    else:
        faulty = Camera(
            fps=15,
            stall_after=10 if fault == "stalls" else None,
            garbage=fault == "garbage",
            resize_after=10 if fault == "size changes" else None,
        )
        url = faulty.url
    if fault == "dies and comes back":

        def outage():
            time.sleep(1.0)
            faulty.stop()
            time.sleep(1.0)
            faulty.start()

        threading.Thread(target=outage, daemon=True).start()
    try:
        with det.streams(
            {"ok": healthy.url, "bad": url, "file": videos[1]}, push_timeout_ms=30, **FAST_GIVE_UP
        ) as stream:
            rate = _healthy_rate(stream, "ok", 5.0)
            stats = stream.close()
    finally:
        healthy.stop()
        if faulty is not None:
            faulty.stop()
    assert rate > 0.7 * 15, (fault, rate, stats)  # the healthy camera kept its frame rate
    assert stats["file"]["processed"] == 21 and stats["file"]["dropped"] == 0  # nothing lost from a file
    _adds_up(stats)
    bad = stats["bad"]
    if fault in ("never connects", "garbage"):
        assert bad["state"] == "gave up" and bad["processed"] == 0 and "stayed away" in bad["gave_up"]
    if fault == "stalls":
        assert bad["processed"] >= 5 and bad["state"] in ("gave up", "reconnecting") and bad["reconnect_attempts"] >= 1
    if fault == "size changes":
        assert bad["processed"] > 20 and bad["errors"] == 0
    if fault == "dies and comes back":
        assert bad["reconnects"] >= 1 and bad["gave_up"] is None and bad["processed"] > 20


def test_sources_are_added_and_removed_while_running(det, videos):
    camera = Camera(fps=15)
    try:
        with det.streams({"cam": camera.url}, until_closed=True, **FAST_GIVE_UP) as stream:
            seen: dict[str, int] = {}
            start = time.monotonic()
            added = removed = False
            for result in stream:
                seen[result.source_id] = seen.get(result.source_id, 0) + 1
                if not added and time.monotonic() - start > 0.5:
                    assert stream.add(videos[2], "late") == "late"
                    added = True
                if added and not removed and seen.get("late", 0) >= 12:
                    removed_stats = stream.remove("cam")
                    removed = True
                    stream.add(videos[1])  # an id is given: "0"
                if seen.get("0", 0) >= 21:
                    break
            stats = stream.close()
    finally:
        camera.stop()
    assert removed_stats["state"] == "removed" and stats["cam"]["state"] == "removed"
    assert seen["late"] == 12 and seen["0"] == 21 and stats["late"]["dropped"] == 0
    assert stream.source_ids == ["late", "0"]
    _adds_up(stats)
    with pytest.raises(KeyError, match="no source 'nope'"):
        stream.remove("nope")


def test_bad_arguments_and_sources_are_refused_at_the_door(det, tmp_path, videos):
    with pytest.raises(VideoError, match="video not found"):
        det.streams([tmp_path / "missing.mp4"])
    with pytest.raises(ValueError, match="batch_size must be in"):
        det.streams([videos[0]], batch_size=det.max_batch + 1)
    with pytest.raises(ValueError, match="push_timeout_ms"):
        det.streams([videos[0]], push_timeout_ms=float("nan"))
    with det.streams({"x": videos[2]}) as stream, pytest.raises(ValueError, match="in use"):
        stream.add(videos[1], "x")


def test_close_and_ctrl_c_stop_every_thread(det, videos):
    camera = Camera(fps=30)
    try:
        with pytest.raises(KeyboardInterrupt):
            with det.streams([camera.url, videos[0]], **FAST_GIVE_UP) as stream:
                for i, _ in enumerate(stream):
                    if i == 5:
                        raise KeyboardInterrupt
    finally:
        camera.stop()
    time.sleep(0.2)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("retina_trt-") and t.is_alive()]
    _adds_up(stream.stats())


def test_sources_faster_than_the_model_stay_bounded(det):
    """4 cameras at 30 fps: latency stays bounded (live sources drop the stale frames, counted)."""
    cameras = [Camera(fps=30, size=(240, 320)) for _ in range(4)]
    latencies = []
    try:
        with det.streams([c.url for c in cameras], push_timeout_ms=20, **FAST_GIVE_UP) as stream:
            start = time.monotonic()
            for result in stream:
                latencies.append(result.latency_s)
                if time.monotonic() - start > 6:
                    break
            stats = stream.close()
    finally:
        for camera in cameras:
            camera.stop()
    latencies.sort()
    assert latencies[int(0.99 * (len(latencies) - 1))] < 1.0
    assert all(s["processed"] > 10 for s in stats.values())
    _adds_up(stats)


def test_detect_runs_several_videos_through_one_batched_stream(camera_sized_onnx, videos, tmp_path):
    """`retina-trt detect` with several videos batches them across sources (issue #26, point 5):
    every frame of every file, one JSON line per frame, a playable annotated video per source."""
    import json
    import subprocess
    import sys

    import cv2

    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "retina_trt.cli",
            "detect",
            str(camera_sized_onnx),
            *map(str, videos),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("batched with the other sources") == 3 and "3 of 3 inputs processed" in run.stdout
    for video, frames in zip(videos, (30, 21, 12)):
        records = [json.loads(line) for line in (out / f"{video.stem}.jsonl").read_text().splitlines()]
        assert [r["frame"] for r in records] == list(range(frames))
        capture = cv2.VideoCapture(str(out / f"{video.stem}.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
        capture.release()


def test_detect_with_an_explicit_batch_size_runs_one_source_at_a_time(camera_sized_onnx, videos, tmp_path, capsys):
    """`--batch-size N`, 1 included, keeps the one-source-at-a-time route (each video its own
    stream); without it several videos are batched across sources (the test above)."""
    from retina_trt.cli import main

    out = tmp_path / "out"
    assert (
        main(["detect", str(camera_sized_onnx), *map(str, videos[1:]), "--output", str(out), "--batch-size", "1"]) == 0
    )
    printed = capsys.readouterr().out
    assert "batched with the other sources" not in printed
    assert f"{videos[1]}: 21 frames at" in printed and f"{videos[2]}: 12 frames at" in printed
    assert len((out / f"{videos[1].stem}.jsonl").read_text().splitlines()) == 21


def test_each_source_is_finished_when_it_ends_beside_a_stalled_camera(demo_onnx, tmp_path):
    """Issue #38: a file's .jsonl and .mp4 are renamed, whole, when the file ends, while a
    stalled live camera keeps `retina-trt detect` running; and MultiStream says so (SourceEnd)."""
    import signal
    import subprocess
    import sys

    import cv2
    from helpers import wait_until

    from retina_trt.streams import SourceEnd

    video = write_video(tmp_path / "clip.avi", num_frames=20, frame_size=(96, 128))
    camera = Camera(fps=15, size=(96, 128), stall_after=5)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "retina_trt.cli", "detect", str(demo_onnx), str(video), camera.url]
    command += ["--output", str(out)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        finished = lambda: (out / "clip.jsonl").exists() and (out / "clip.mp4").exists()  # noqa: E731
        assert wait_until(finished, 120, 0.2), "the file's outputs are final while the camera stalls"
        assert run.poll() is None, "detect is still waiting for the camera"
        assert len((out / "clip.jsonl").read_text().splitlines()) == 20
        capture = cv2.VideoCapture(str(out / "clip.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=60)
        camera.stop()
    with Detector(demo_onnx) as det, MultiStream(det, {"f": str(video)}, end_markers=True) as stream:
        items = list(stream)
    assert isinstance(items[-1], SourceEnd) and items[-1].source_id == "f"
    assert [i for i in items if isinstance(i, SourceEnd)] == [SourceEnd("f")] and len(items) == 21


class _Hanging:
    """A 'camera' that accepts TCP connections and never answers."""

    def __init__(self) -> None:
        import socket

        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.held: list = []
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/video.mjpg"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.server.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


def test_cameras_that_hang_on_open_do_not_hold_up_a_file(demo_onnx, tmp_path):
    """Issue #38: OpenCV opens one capture at a time; three cameras that accept and never answer
    used to hold a file's first result back by their time-outs, one after another, and
    ``close()`` for as long. The probe finds them in their own threads, in parallel, and
    ``close()`` ends its wait at once."""
    video = write_video(tmp_path / "clip.avi", num_frames=10, frame_size=(96, 128))
    hanging = [_Hanging() for _ in range(3)]
    sources = {"file": str(video), **{f"cam{i}": h.url for i, h in enumerate(hanging)}}
    try:
        with Detector(demo_onnx) as det:
            start = time.perf_counter()
            stream = MultiStream(det, sources, timeout_s=3.0, max_reconnect_attempts=1)
            first = next(r for r in stream if r.source_id == "file")
            waited = time.perf_counter() - start
            closing = time.perf_counter()
            stats = stream.close()
            closed = time.perf_counter() - closing
    finally:
        for h in hanging:
            h.close()
    assert first.index == 0
    assert waited < 3.0 + 2.0, f"the file's first result took {waited:.1f} s"  # one time-out at most, not three
    assert closed < 2.0, f"close() took {closed:.1f} s"  # not the 3 s time-out
    assert all("did not answer" in (stats[f"cam{i}"]["last_error"] or "") for i in range(3)), stats


def test_the_probe_works_past_descriptor_1023():
    """A process with many cameras and viewers holds more than 1024 descriptors; select() cannot
    wait on those, and the probe said 'cannot be reached' for a camera that merely did not answer."""
    import resource

    from retina_trt.errors import VideoError
    from retina_trt.io.sources import probe_stream

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    camera = _Hanging()
    try:
        with pytest.raises(VideoError, match="did not answer within 0.3 s"):
            probe_stream(camera.url, 0.3)
    finally:
        camera.close()
        for fd in spare:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
