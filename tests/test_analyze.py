"""``retina-trt analyze`` end to end on the scripted scene videos, its bad input, and the live
view in a real browser (headless Chromium from Debian's packages, driven by Selenium)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import ListSink, wait_until

from retina_trt import Detector
from retina_trt.analytics.app import RunOptions, run_analyze
from retina_trt.analytics.overlay import LINE_COLOUR
from retina_trt.analytics.sinks import open_sink
from retina_trt.analytics.source import AnalyticsConfig
from retina_trt.analytics.view import LiveView
from retina_trt.data.camera import Camera
from retina_trt.data.scenes import SCENES, write_scene


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "retina_trt.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def scene_videos(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    return {s.name: write_scene(s, out) for s in SCENES}


def _fractions(scene, points):
    return ";".join(f"{x / scene.width:.6f},{y / scene.height:.6f}" for x, y in points)


def test_analyze_counts_two_sources_in_one_batched_stream(demo_onnx, scene_videos, tmp_path):
    scene = SCENES[0]  # both sources use the crossing scene's line and zone
    events = tmp_path / "events.jsonl"
    run = _cli(
        "analyze",
        str(demo_onnx),
        str(scene_videos["crossing"] / "video.avi"),
        str(scene_videos["edge"] / "video.avi"),
        "--line",
        f"mid={_fractions(scene, scene.line)}",
        "--zone",
        f"right={_fractions(scene, scene.zone)}",
        "--events",
        str(events),
        "--frame-messages",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "tracker: ocsort" in run.stdout
    records = [json.loads(line) for line in events.read_text().splitlines()]
    final = records[-1]
    assert final["type"] == "summary"
    assert final["sources"]["0"]["lines"]["mid"] == {"in": {"square": 1, "star": 1}, "out": {"circle": 1, "cross": 1}}
    assert final["sources"]["0"]["frames"] == 90 and final["sources"]["1"]["frames"] == 90
    frames = [r for r in records if r["type"] == "frame"]
    assert len(frames) == 180 and {f["sensorId"] for f in frames} == {"0", "1"}
    sample = next(f for f in frames if f["objects"])
    assert sample["version"] == "4.0" and len(sample["objects"][0].split("|")) == 6
    for source in ("0", "1"):  # per source, frame messages come in order
        ids = [f["id"] for f in frames if f["sensorId"] == source]
        assert ids == sorted(ids)


@pytest.mark.parametrize(
    "args, match",
    [
        (["--zone", "0.1,0.1;0.5,0.5"], "at least 3 points"),
        (["--zone", "0.1,0.1;1.4,0.5;0.2,0.9"], "inside it"),
        (["--line", "0.5,0"], "two points"),
        (["--events", "kafka://h:1/t"], "unknown URL scheme"),
        (["--events", "mqtt://:1883/t"], "needs a host"),
        (["--tracker", "deepsort"], "bytetrack"),
        # issue #38: options that used to run silently or print a traceback
        (["--tracker", ""], "--tracker is empty"),
        (["--line", "=0.5,0;0.5,1"], "the name before '=' is empty"),
        (["--zone", "0.1,0.1;0.9,0.9;0.9,0.1;0.1,0.9"], "must not cross itself"),
        (["--events", "mqtt://localhost:1883/a/#"], "wildcard"),
        (["--events", "kafka://user:s3cret@h:1/t"], "user:***@h"),
        (["--view", "0", "--view-host", ""], "--view-host is empty"),
    ],
)
def test_bad_analytics_input_is_one_line_and_exit_2(demo_onnx, scene_videos, args, match):
    run = _cli("analyze", str(demo_onnx), str(scene_videos["edge"] / "video.avi"), *args)
    assert run.returncode == 2, run.stderr
    assert match in run.stderr and "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_absurd_fps_is_a_usage_error_not_a_traceback(demo_onnx, scene_videos):
    run = _cli("analyze", str(demo_onnx), str(scene_videos["edge"] / "video.avi"), "--fps", "1e308", "--tracker", "iou")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "frame rate of at most 1000" in run.stderr.strip().splitlines()[-1]
    with pytest.raises(ValueError, match="fps must be in"):
        AnalyticsConfig(fps=float("inf"))
    with pytest.raises(ValueError, match="needs a name"):
        AnalyticsConfig(lines=(("", "0.5,0;0.5,1"),))


def test_bad_confirm_frames_is_a_usage_error_with_exit_2(demo_onnx, scene_videos):
    """Like every bad number on the command line, argparse's usage and one error line."""
    run = _cli("analyze", str(demo_onnx), str(scene_videos["edge"] / "video.avi"), "--confirm-frames", "0")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "argument --confirm-frames: expected a positive integer, got '0'" in run.stderr.strip().splitlines()[-1]


def test_view_port_in_use_is_one_line(demo_onnx, scene_videos):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = _cli("analyze", str(demo_onnx), str(scene_videos["edge"] / "video.avi"), "--view", str(port))
    assert run.returncode == 2 and "cannot listen" in run.stderr and "--view PORT" in run.stderr, run.stderr
    with pytest.raises(ValueError, match="port"):
        LiveView(port=-1)


def test_unreachable_broker_at_start_does_not_stop_the_analytics(demo_onnx, scene_videos, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = _cli(
        "analyze",
        str(demo_onnx),
        str(scene_videos["edge"] / "video.avi"),
        "--events",
        f"redis://127.0.0.1:{port}/ev",
        "--events",
        str(tmp_path / "ev.jsonl"),
        "--max-frames",
        "30",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "cannot connect" in run.stderr and "retrying" in run.stderr
    assert "0 delivered" in run.stdout and f"redis://127.0.0.1:{port}/ev" in run.stdout
    assert json.loads((tmp_path / "ev.jsonl").read_text().splitlines()[-1])["sources"]["0"]["frames"] == 30


def _chromium(width: int = 1200, height: int = 900):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are not installed; .ci/run installs them")
        pytest.skip("needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def test_live_view_in_a_real_browser(demo_onnx, tmp_path):
    """A live camera through the analytics with the view on: the page shows a frame (the image
    has decoded pixels) and its frame count and counts update."""
    browser = _chromium()  # first: a skip must not leave the analytics running
    camera = Camera(fps=15, size=(240, 320))
    view = LiveView(0)
    config = AnalyticsConfig(zones=(("z", "0.1,0.1;0.9,0.1;0.9,0.9;0.1,0.9"),), lines=(("l", "0.5,0;0.5,1"),))
    sink = open_sink(str(tmp_path / "events.jsonl"))
    with Detector(demo_onnx) as det:
        stop = threading.Event()
        runner = threading.Thread(
            target=run_analyze,
            args=(det, {"cam": camera.url}, config, [sink]),
            kwargs={"view": view, "options": RunOptions(stop=stop)},
            daemon=True,
        )
        runner.start()
        try:
            browser.get(view.url)
            deadline = time.monotonic() + 60
            frames = []
            read = "const c = document.querySelector('.source[data-id=\"cam\"] .frames'); return c ? c.textContent : ''"
            while time.monotonic() < deadline and len(set(frames)) < 3:
                text = browser.execute_script(read)
                if text.isdigit():
                    frames.append(int(text))
                time.sleep(0.5)
            assert len(set(frames)) >= 3 and frames == sorted(frames), frames  # the count updates
            width = browser.execute_script(
                "const i = document.querySelector('.source img'); return i ? i.naturalWidth : 0"
            )
            assert width == 320  # a decoded frame of the camera's size
            captions = browser.execute_script(
                "return [...document.querySelectorAll('.source .counts caption')].map(c => c.textContent)"
            )
            assert captions == ["line l", "zone z"]
            shot = tmp_path / "view.png"
            browser.save_screenshot(str(shot))
            import cv2

            image = cv2.imread(str(shot))
            assert image is not None and float(np.std(image)) > 10  # not a blank page
            frame = _one_streamed_frame(view.url + "stream/cam.mjpg")

            def amber_rows(columns: slice) -> float:  # LINE_COLOUR through JPEG: strong red and green, little blue
                b, g, r = (frame[:, columns, i].astype(int) for i in range(3))
                return float(((b < 130) & (g > 150) & (r > 180)).any(axis=1).mean())

            assert LINE_COLOUR[0] < 130 < 150 < LINE_COLOUR[1] and LINE_COLOUR[2] > 180
            assert amber_rows(slice(157, 164)) > 0.8, "the line x = 0.5 is drawn over the frame"
            assert amber_rows(slice(60, 67)) < 0.3, "and not everywhere"
        finally:
            browser.quit()
            stop.set()
            runner.join(timeout=30)
            camera.stop()
            view.close()
    assert not runner.is_alive(), "run_analyze stops when asked"


DOCS_SHOT = os.environ.get("RETINA_TRT_DOCS_SHOT")  # a path: the test also saves its screenshot there


def test_live_view_reads_like_a_dashboard(demo_onnx, scene_videos, tmp_path):
    """Two sources of the crossing scene with a line, a zone and snapshots, seen at 1280 px: cards
    in id order with their names, state, frames against inferences and health; a table per line
    and zone whose numbers are the run's counts; events as rows with snapshot thumbnails that load;
    nothing wider than the window."""
    from retina_trt.analytics.snapshots import Snapshots

    browser = _chromium(1280, 1000)
    scene = SCENES[0]
    video = str(scene_videos["crossing"] / "video.avi")
    snaps = tmp_path / "snaps"
    view = LiveView(0, snapshots=snaps)
    config = AnalyticsConfig(
        lines=(("mid", _fractions(scene, scene.line)),), zones=(("right", _fractions(scene, scene.zone)),)
    )
    try:
        with Detector(demo_onnx) as det:
            final = run_analyze(
                det, {"10": video, "2": video}, config, [ListSink()], view=view, snapshots=Snapshots(snaps)
            )
        browser.get(view.url)
        assert wait_until(
            lambda: browser.execute_script("return document.querySelectorAll('#events img.thumb').length") > 0, 20
        )
        ids = browser.execute_script("return [...document.querySelectorAll('.source')].map(s => s.dataset.id)")
        assert ids == ["2", "10"]  # ordered by id, numbers as numbers
        card = "document.querySelector('.source[data-id=\"2\"]')"
        assert browser.execute_script(f"return {card}.querySelector('.name').textContent") == video
        assert browser.execute_script(f"return {card}.querySelector('.frames').textContent") == str(
            final["sources"]["2"]["frames"]
        )
        assert browser.execute_script(f"return {card}.querySelector('.inferred').textContent") == str(
            final["sources"]["2"]["inferred"]
        )
        assert browser.execute_script(f"return {card}.querySelector('.health').textContent") == "picture ok"
        table = browser.execute_script(
            f"return [...{card}.querySelectorAll('table.count')[0].querySelectorAll('tbody tr')]"
            ".map(r => [...r.cells].map(c => c.textContent))"
        )
        counted = final["sources"]["2"]["lines"]["mid"]
        want = [
            [c, str(counted["in"].get(c, 0)), str(counted["out"].get(c, 0))]
            for c in sorted({*counted["in"], *counted["out"]})
        ]
        assert table == want and want
        rows = browser.execute_script(
            "return [...document.querySelectorAll('#events tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
        )
        assert any(r[2].startswith("crossed mid") and r[3] and r[4].isdigit() for r in rows), rows
        loaded = browser.execute_script(
            "return [...document.querySelectorAll('#events img.thumb')].every(i => i.naturalWidth > 0)"
        )
        assert loaded, "the thumbnails load from the view"
        shown = "return [...document.querySelectorAll('.source img')].every(i => i.naturalWidth > 0)"
        assert wait_until(lambda: browser.execute_script(shown), 20), "an ended source shows its last frame"
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        if DOCS_SHOT:
            shutil.copyfile(shot, DOCS_SHOT)
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError):  # nothing outside the snapshot folder
            urllib.request.urlopen(view.url + "snapshots/..%2F..%2Fetc%2Fpasswd", timeout=5)
    finally:
        browser.quit()
        view.close()


def _one_streamed_frame(url: str) -> np.ndarray:
    """The first JPEG of an MJPEG stream, decoded."""
    import urllib.request

    import cv2

    data, start, end = b"", -1, -1
    with urllib.request.urlopen(url, timeout=30) as response:
        while end < 0:
            chunk = response.read(4096)
            assert chunk, "the stream ended before a whole frame"
            data += chunk
            start = data.find(b"\xff\xd8")
            end = data.find(b"\xff\xd9", start + 2) if start >= 0 else -1
    end += 2
    return cv2.imdecode(np.frombuffer(data[start:end], np.uint8), cv2.IMREAD_COLOR)


def test_source_lost_and_recovered_are_events_and_the_other_source_goes_on(demo_onnx, scene_videos):
    camera = Camera(fps=15, size=(120, 160))
    sink, stop = ListSink(), threading.Event()
    sources = {"cam": camera.url, "file": str(scene_videos["crossing"] / "video.avi")}
    options = RunOptions(
        stop=stop, summary_every_s=0.5, stream_options={"backoff_s": (0.1, 0.3), "timeout_s": 1.0, "max_outage_s": 30}
    )
    with Detector(demo_onnx) as det:
        runner = threading.Thread(
            target=lambda: sink.events.append(run_analyze(det, sources, AnalyticsConfig(), [sink], options=options)),
            daemon=True,
        )
        runner.start()
        try:
            assert wait_until(lambda: _frames(sink, "cam") > 5, 60)
            camera.stop()
            assert wait_until(lambda: any(e["type"] == "source_lost" and e["source"] == "cam" for e in sink.events), 30)
            camera.start()
            assert wait_until(
                lambda: any(e["type"] == "source_recovered" and e["source"] == "cam" for e in sink.events), 30
            )
            assert wait_until(lambda: _frames(sink, "file") == 90, 60)
        finally:
            stop.set()
            runner.join(timeout=30)
            camera.stop()
    final = sink.events[-1]
    assert final["type"] == "summary" and final["sources"]["file"]["frames"] == 90  # the file lost nothing
    assert final["sources"]["cam"]["reconnects"] >= 1


def _frames(sink: ListSink, source: str) -> int:
    return max([e["sources"][source]["frames"] for e in sink.events if e["type"] == "summary"] or [0])


def test_events_file_never_writes_over_an_input_or_into_a_file(demo_onnx, scene_videos, tmp_path):
    video = scene_videos["edge"] / "video.avi"
    before = video.read_bytes()
    run = _cli("analyze", str(demo_onnx), str(video), "--events", str(video))
    assert run.returncode == 2 and "also an input" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert video.read_bytes() == before
    model = tmp_path / "model.onnx"  # issue #38: the model, and files inside a folder source, are inputs too
    model.write_bytes(demo_onnx.read_bytes())
    run = _cli("analyze", str(model), str(video), "--events", str(model))
    assert run.returncode == 2 and "also an input" in run.stderr, run.stderr
    assert model.read_bytes() == demo_onnx.read_bytes()
    folder = tmp_path / "images"
    folder.mkdir()
    image = folder / "a.jpg"
    import cv2

    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    before_image = image.read_bytes()
    run = _cli("analyze", str(model), str(folder), "--events", str(image))
    assert run.returncode == 2 and "also an input" in run.stderr, run.stderr
    assert image.read_bytes() == before_image
    twice = tmp_path / "twice.jsonl"
    run = _cli(
        "analyze", str(model), str(video), "--events", str(twice), "--events", str(tmp_path / "." / "twice.jsonl")
    )
    assert run.returncode == 2 and "names the same place" in run.stderr and not twice.exists(), run.stderr
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    run = _cli("analyze", str(demo_onnx), str(video), "--events", str(blocker / "events.jsonl"))
    assert run.returncode == 2 and "is a file, not a folder" in run.stderr, run.stderr


def test_missing_source_is_one_line_and_leaves_no_events_file(demo_onnx, tmp_path):
    events = tmp_path / "events.jsonl"
    run = _cli("analyze", str(demo_onnx), str(tmp_path / "nope.mp4"), "--events", str(events))
    assert run.returncode == 2 and "not found" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert not events.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)])
def test_interrupted_analyze_exits_128_plus_signal_with_whole_events(demo_onnx, tmp_path, signum, code):
    """Issue #38: SIGINT and SIGTERM are not a success (130, 143); the events file is still whole."""
    import signal as signals

    camera = Camera(fps=15, size=(120, 160))
    events = tmp_path / "events.jsonl"
    command = [sys.executable, "-m", "retina_trt.cli", "analyze", str(demo_onnx), camera.url]
    command += ["--events", str(events), "--frame-messages"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: any(tmp_path.glob("*events*")), 120, 0.2)
        time.sleep(2.0)
        run.send_signal(signals.Signals(signum))
        _, err = run.communicate(timeout=60)
    finally:
        camera.stop()
    assert run.returncode == code, err
    assert f"interrupted ({signals.Signals(signum).name})" in err
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert records and records[-1]["type"] == "summary"


def test_a_second_run_into_the_same_events_file_is_refused(demo_onnx, tmp_path):
    """Issue #38: two runs with one --events file used to replace each other's events."""
    from retina_trt.errors import RetinaTrtError

    events = tmp_path / "events.jsonl"
    first = open_sink(str(events))
    with pytest.raises(RetinaTrtError, match="another run is writing events"):
        open_sink(str(events))
    camera = Camera(fps=15, size=(120, 160))
    try:
        run = _cli("analyze", str(demo_onnx), camera.url, "--events", str(events), timeout=120)
    finally:
        camera.stop()
    assert run.returncode == 2 and "another run is writing events" in run.stderr, run.stderr
    first.emit({"type": "x"})
    first.close()
    second = open_sink(str(events))  # free again once the first closed
    second.close()
    assert events.read_text().count("\n") == 1  # the first run's event, untouched
