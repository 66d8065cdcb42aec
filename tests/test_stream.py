"""Detector.stream: real videos, a real HTTP stream that breaks and comes back, a corrupt frame,
image folders, frame dropping, and an interrupted `retina-trt detect` whose video stays playable."""

from __future__ import annotations

import functools
import http.server
import json
import os
import queue
import signal
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from retina_trt import Detector
from retina_trt.data.synthetic import write_video
from retina_trt.errors import VideoError
from retina_trt.runtime.stream import DetectionStream, StreamStats


@pytest.fixture(scope="module")
def det(onnx_models):
    with Detector(onnx_models[("onnx", False)]) as detector:
        yield detector


def _jpeg_starts(data: bytes) -> list[int]:
    return [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]


def test_stream_over_a_file_equals_per_frame_detection(det, video_file):
    with det.stream(video_file) as frames:
        results = list(frames)
    assert [r.index for r in results] == list(range(12))
    assert all(b.timestamp_s > a.timestamp_s for a, b in zip(results, results[1:]))
    capture = cv2.VideoCapture(str(video_file))
    for result in results:
        ok, frame = capture.read()
        assert ok
        np.testing.assert_array_equal(result.frame, frame)
        want = det(frame)
        np.testing.assert_allclose(result.detections.scores, want.scores, atol=1e-6)
    stats = frames.stats.to_dict()
    assert stats["frames_read"] == 12 and stats["frames_processed"] == 12 and stats["frames_dropped"] == 0


def test_every_max_frames_and_batching(det, video_file):
    with det.stream(video_file, every=3, max_frames=3) as frames:
        assert [r.index for r in frames] == [0, 3, 6]
    single = [r.detections.scores for r in det.stream(video_file)]
    batched = [r.detections.scores for r in det.stream(video_file, batch_size=4)]
    assert len(batched) == 12
    for a, b in zip(single, batched):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_corrupt_frame_is_counted_and_skipped(det, video_file, tmp_path):
    data = bytearray(video_file.read_bytes())
    start = _jpeg_starts(bytes(data))[5]
    data[start + 200 : start + 1200] = bytes(1000)  # damage frame 5's entropy-coded data
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    with det.stream(bad) as frames:
        indices = [r.index for r in frames]
    assert frames.stats.decode_errors == 1
    assert 5 not in indices and indices[-1] == 11 and len(indices) == 11


def test_image_folder_with_a_broken_file(det, image_dir, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, src in enumerate(sorted(image_dir.glob("*.jpg"))):
        (folder / f"{i:03d}.jpg").write_bytes(src.read_bytes())
    (folder / "001b.jpg").write_bytes(b"broken")
    with det.stream(folder) as frames:
        got = list(frames)
    assert len(got) == 3 and frames.stats.decode_errors == 1
    with pytest.raises(VideoError, match="has no images"):
        det.stream(tmp_path / "frames" / "..")  # tmp_path holds no images directly


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _OneShotHandler(_QuietHandler):
    """Serves the first GET of its server, answers 404 to every later one (a source that is gone)."""

    def do_GET(self):
        if self.server.served:
            self.send_error(404)
            return
        self.server.served = True
        super().do_GET()


def _serve(folder: Path, port: int = 0, *, one_shot: bool = False) -> socketserver.TCPServer:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    handler = _OneShotHandler if one_shot else _QuietHandler
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), functools.partial(handler, directory=str(folder)))
    server.served = False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_http_stream_that_breaks_and_comes_back(det, video_file):
    server = _serve(video_file.parent)
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}/{video_file.name}"

    def outage():
        # The stream "breaks" when the server goes away; it comes back on the same port.
        time.sleep(0.2)
        server.shutdown()
        server.server_close()
        time.sleep(1.0)
        revived.append(_serve(video_file.parent, port))

    revived: list = []
    threading.Thread(target=outage, daemon=True).start()
    with det.stream(url, max_reconnects=2, backoff_s=(0.3, 1.0), drop_stale=False) as frames:
        indices = [r.index for r in frames]
    for s in revived:
        s.shutdown()
        s.server_close()
    assert frames.live
    assert frames.stats.reconnects >= 1
    assert len(indices) > 12  # frames from before and after the outage
    assert indices == sorted(indices)


def test_a_stream_that_never_comes_back_ends_with_bounded_attempts(det, video_file, onnx_models, tmp_path, capsys):
    """The server goes away for good: the stream ends after max_reconnect_attempts failed
    attempts (failures count, not only successes), says why, and keeps what it processed."""
    from retina_trt.cli import main

    server = _serve(video_file.parent)
    url = f"http://127.0.0.1:{server.server_address[1]}/{video_file.name}"
    with det.stream(url, max_reconnect_attempts=3, backoff_s=(0.05, 0.1), drop_stale=False) as frames:
        server.shutdown()  # after the stream opened: it reads what it has, then loses the source
        server.server_close()
        indices = [r.index for r in frames]
    assert frames.stats.reconnects == 0 and frames.stats.reconnect_attempts == 3
    assert frames.stats.gave_up == "3 reconnect attempts failed in a row"
    assert indices == sorted(indices)
    # the outage-time bound, and the CLI: exit 2 with the reason, outputs kept
    server = _serve(video_file.parent)
    url = f"http://127.0.0.1:{server.server_address[1]}/{video_file.name}"
    with det.stream(
        url, max_reconnect_attempts=100, max_outage_s=0.3, backoff_s=(0.1, 0.1), drop_stale=False
    ) as frames:
        server.shutdown()
        server.server_close()
        list(frames)
    assert frames.stats.gave_up.startswith("the source stayed away") and frames.stats.reconnect_attempts <= 3
    server = _serve(video_file.parent, one_shot=True)  # serves the first request, 404 after that
    url = f"http://127.0.0.1:{server.server_address[1]}/{video_file.name}"
    code = main(
        [
            "detect",
            str(onnx_models[("onnx", False)]),
            url,
            "--output",
            str(tmp_path / "out"),
            "--max-reconnect-attempts",
            "2",
        ]
    )
    server.shutdown()
    server.server_close()
    err = capsys.readouterr().err
    assert code == 2 and "gave up reconnecting: 2 reconnect attempts failed in a row" in err, err
    (jsonl,) = (tmp_path / "out").glob("*.jsonl")
    assert 1 <= len(jsonl.read_text().splitlines()) <= 12  # what it processed is kept (a live source may drop)


def test_unreachable_stream_is_a_clear_error(det):
    with pytest.raises(VideoError, match="cannot open"):
        det.stream("http://127.0.0.1:9/nothing.avi")


class _GatedDetector:
    """Wraps a Detector; ``predict_batch`` waits until ``release`` is set (a backend that blocks
    on purpose, so the test does not depend on how fast this machine infers)."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []

    def predict_batch(self, frames):
        self.entered.set()
        assert self.release.wait(120), "the test never released inference"
        self.batches.append(len(frames))
        return self.detector.predict_batch(frames)


def _wait_for(condition, what: str, limit_s: float = 120.0) -> None:
    """Wait (without a verdict on speed) until ``condition()``; fail only after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {limit_s} s"
        time.sleep(0.01)


def test_live_sources_drop_stale_frames_files_never_do(det, tmp_path):
    long_video = write_video(tmp_path / "long.avi", num_frames=60, seed=3, frame_size=(256, 256))
    gate = _GatedDetector(det)
    # Inference is held on frame 0 while the reader decodes everything: a stale-dropping source
    # keeps only the newest frame in its queue of one, whatever the speed of the machine.
    frames = DetectionStream(gate, long_video, drop_stale=True, queue_size=1)
    with frames:
        assert gate.entered.wait(120)
        _wait_for(lambda: frames.stats.frames_read == 60, "decoding all 60 frames while inference is blocked")
        gate.release.set()
        results = list(frames)
    stats = frames.stats
    # the frame in flight (the first the inference thread took: 0 unless the reader had already
    # replaced it on a loaded machine), then the newest one
    assert len(results) == 2 and results[1].index == 59 and results[0].index < 59
    assert stats.frames_dropped == 58
    assert len(results) + stats.frames_dropped == stats.frames_read
    # A file without drop_stale: the reader waits for inference, never drops.
    gate = _GatedDetector(det)
    frames = DetectionStream(gate, long_video, queue_size=1)
    with frames:
        assert gate.entered.wait(120)
        gate.release.set()
        assert [r.index for r in frames] == list(range(60))
    assert frames.stats.frames_dropped == 0


class _NoWaitQueue(queue.Queue):
    def put(self, item, block=True, timeout=None):
        assert not block, "a live source's reader waited on a full queue"
        super().put(item, block=False)


def test_dropping_put_never_waits_for_room():
    """A live source's reader must not wait on a full queue even briefly (frames would pile up in
    the capture buffer): the oldest queued frame is dropped at once."""
    q = _NoWaitQueue(maxsize=2)
    owner = SimpleNamespace(_stop=threading.Event(), stats=StreamStats())
    drop = DetectionStream._dropped.__get__(owner)
    for item in range(5):
        assert DetectionStream._put(owner, q, item, drop_oldest=True, on_drop=drop)
    assert list(q.queue) == [3, 4] and owner.stats.frames_dropped == 3
    owner._stop.set()
    assert not DetectionStream._put(owner, q, 5, drop_oldest=True, on_drop=drop)  # a stopped stream puts nothing


def test_closing_early_stops_threads_and_finalizes_output(det, video_file, tmp_path):
    output = tmp_path / "out.mp4"
    stream = det.stream(video_file, output=output)
    for _ in range(4):
        next(stream)
    written = stream.close()
    assert all(not t.is_alive() for t in stream._threads)
    assert written == output
    capture = cv2.VideoCapture(str(output))
    count = 0
    while capture.read()[0]:
        count += 1
    assert 4 <= count <= 12
    assert not list(tmp_path.glob(".*tmp*"))


def test_interrupted_detect_leaves_a_playable_video(onnx_models, tmp_path):
    video = write_video(tmp_path / "long.avi", num_frames=400, seed=4, frame_size=(256, 256))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retina_trt.cli",
            "detect",
            str(onnx_models[("onnx", False)]),
            str(video),
            "--output",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    # Interrupt once some frames are encoded: a condition on progress, not a sleep, so the test
    # does not depend on the machine's speed (400 frames take tens of seconds on any CPU).
    _wait_for(
        lambda: any(p.stat().st_size > 20000 for p in out.glob(".long.tmp-*.mp4")) or proc.poll() is not None,
        "the first encoded frames",
    )
    assert proc.poll() is None, "detect finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    capture = cv2.VideoCapture(str(out / "long.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    lines = (out / "long.jsonl").read_text().splitlines()
    assert 0 < frames < 400
    assert abs(len(lines) - frames) <= 8  # frames in flight when interrupted
    assert not list(out.glob(".*tmp*"))


def _detect_process(model, source, out) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "retina_trt.cli", "detect", str(model), str(source), "--output", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_sigterm_on_an_image_folder_keeps_every_finished_result(onnx_models, image_dir, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    source = sorted(image_dir.glob("*.jpg"))[0].read_bytes()
    for i in range(200):
        (folder / f"{i:03d}.jpg").write_bytes(source)
    out = tmp_path / "out"
    proc = _detect_process(onnx_models[("onnx", False)], folder, out)
    _wait_for(lambda: len(list(out.glob("[0-9]*.jpg"))) >= 3 or proc.poll() is not None, "the first annotated images")
    assert proc.poll() is None, "detect finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM and "interrupted (SIGTERM)" in err, err[-2000:]
    annotated = len(list(out.glob("[0-9]*.jpg")))
    records = (out / "detections.jsonl").read_text().splitlines()
    assert 3 <= annotated < 200 and len(records) in (annotated, annotated + 1)  # the last one may lack its image
    assert all(json.loads(line)["source"].endswith(".jpg") for line in records)
    assert not list(out.glob(".*tmp*"))


def test_two_quick_ctrl_c_still_leave_finished_files(onnx_models, tmp_path):
    """The second signal, 20 ms after the first, arrives while the outputs are being finalized:
    it is ignored, and the video and its JSONL are complete."""
    video = write_video(tmp_path / "long.avi", num_frames=400, seed=5, frame_size=(256, 256))
    out = tmp_path / "out"
    proc = _detect_process(onnx_models[("onnx", False)], video, out)
    _wait_for(
        lambda: any(p.stat().st_size > 20000 for p in out.glob(".long.tmp-*.mp4")) or proc.poll() is not None,
        "the first encoded frames",
    )
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    capture = cv2.VideoCapture(str(out / "long.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames > 0 and (out / "long.jsonl").read_text().count("\n") > 0
    assert not list(out.glob(".*tmp*"))


class _FlappingHandler(_QuietHandler):
    """The first GET gets the whole video; every later one gets only the container's header, then
    the connection stalls and closes: the source reconnects but never sends a frame again."""

    def do_GET(self):
        data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        again = self.server.served
        if again:
            movi = data.find(b"movi")  # the first frame starts after the AVI 'movi' list header
            data = data[: movi + 4] if movi > 0 else data[:512]
        self.server.served = True
        self.send_response(200)
        self.send_header("Content-Type", "video/x-msvideo")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        if again:
            time.sleep(0.5)  # the stall after each reconnect


def test_a_flapping_source_uses_up_one_outage_budget(det, video_file):
    """Reconnects that succeed but bring no frame do not reset the outage clock: with a 1.5 s
    budget the stream gives up, where it used to reconnect for ever."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(
        ("127.0.0.1", 0), functools.partial(_FlappingHandler, directory=str(video_file.parent))
    )
    server.served = False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{video_file.name}"
    start = time.monotonic()
    try:
        with det.stream(
            url,
            max_reconnect_attempts=1000,
            max_outage_s=1.5,
            max_reconnects=20,
            backoff_s=(0.05, 0.1),
            drop_stale=False,
        ) as frames:
            list(frames)
    finally:
        server.shutdown()
        server.server_close()
    # the outage budget ends it, not the cap of 20 reconnects (which ended it before the fix)
    assert (frames.stats.gave_up or "").startswith("the source stayed away"), frames.stats.to_dict()
    assert time.monotonic() - start < 60
