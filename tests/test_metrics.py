"""Prometheus metrics of ``retina-trt analyze``: the registry from Python against the run's own
summary, ``promtool check metrics`` on the exposition, and a real Prometheus (Debian's package,
installed by .ci/system-deps) scraping a running ``analyze`` and answering a query."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
from brokers import free_port, need, wait_port
from helpers import wait_until

from retina_trt import Detector
from retina_trt.analytics.app import RunOptions, run_analyze
from retina_trt.analytics.metrics import AnalyticsMetrics
from retina_trt.analytics.sinks import open_sink
from retina_trt.analytics.source import AnalyticsConfig
from retina_trt.data.camera import Camera
from retina_trt.data.scenes import SCENES, write_scene

prometheus_client = pytest.importorskip("prometheus_client", reason="prometheus-client is in the analytics extra")


@pytest.fixture(scope="module")
def crossing(tmp_path_factory):
    return SCENES[0], write_scene(SCENES[0], tmp_path_factory.mktemp("scene")) / "video.avi"


def _fractions(scene, points) -> str:
    return ";".join(f"{x / scene.width:.6f},{y / scene.height:.6f}" for x, y in points)


def _samples(registry) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, parsed back from the exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    text = prometheus_client.generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture(scope="module")
def finished_run(demo_onnx, crossing, tmp_path_factory):
    """The crossing scene analysed twice (two sources) with a line and a zone, metrics attached."""
    scene, video = crossing
    config = AnalyticsConfig(
        lines=(("mid", _fractions(scene, scene.line)),), zones=(("right", _fractions(scene, scene.zone)),)
    )
    sink = open_sink(str(tmp_path_factory.mktemp("events") / "events.jsonl"))
    metrics = AnalyticsMetrics(model="shapes_r18.onnx")
    with Detector(demo_onnx) as det:
        final = run_analyze(det, {"a": video, "b": video}, config, [sink], metrics=metrics, options=RunOptions())
    return final, metrics


def test_registry_reads_the_run_as_its_summary_does(finished_run):
    final, metrics = finished_run
    samples = _samples(metrics.registry)
    for source_id, summary in final["sources"].items():
        src = (("source", source_id),)
        assert samples[("retina_trt_source_frames_processed_total", src)] == summary["frames"] > 0
        assert samples[("retina_trt_source_frames_inferred_total", src)] == summary["inferred"]
        assert samples[("retina_trt_source_frames_read_total", src)] == summary["read"]
        assert samples[("retina_trt_source_state", (("source", source_id), ("state", "ended")))] == 1
        assert samples[("retina_trt_source_state", (("source", source_id), ("state", "running")))] == 0
        assert samples[("retina_trt_source_latency_seconds_count", src)] == summary["frames"]
        assert samples[("retina_trt_source_unhealthy", (("reason", "frozen"), ("source", source_id)))] == 0
        crossings = summary["lines"]["mid"]
        assert sum(crossings["in"].values()) + sum(crossings["out"].values()) > 0
        for direction, per_class in crossings.items():
            for class_name, n in per_class.items():
                labels = (("class", class_name), ("direction", direction), ("line", "mid"), ("source", source_id))
                assert samples[("retina_trt_line_crossings_total", labels)] == n
        for event in ("enter", "leave"):
            for class_name, n in summary["zones"]["right"][event].items():
                labels = (("class", class_name), ("event", event), ("source", source_id), ("zone", "right"))
                assert samples[("retina_trt_zone_events_total", labels)] == n
    model = (("model", "shapes_r18.onnx"),)
    inferred = sum(s["inferred"] for s in final["sources"].values())
    assert samples[("retina_trt_model_batch_size_sum", model)] == inferred  # every inferred frame, once
    assert (
        samples[("retina_trt_model_inference_seconds_count", model)]
        == samples[("retina_trt_model_batch_size_count", model)]
        > 0
    )
    assert samples[("retina_trt_model_queue_depth", model)] == 0  # the run is over
    sink = final["sinks"][0]
    assert samples[("retina_trt_sink_events_delivered_total", (("sink", sink["sink"]),))] == sink["delivered"] > 0


def test_promtool_accepts_the_exposition(finished_run):
    promtool = need("promtool")
    text = prometheus_client.generate_latest(finished_run[1].registry)
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    bad = subprocess.run([promtool, "check", "metrics"], input=b"frames 1\nframes 2\n", capture_output=True)
    assert bad.returncode != 0  # the check can fail


def test_sink_urls_in_metrics_hide_passwords():
    from retina_trt.analytics.metrics import _sink_families

    class Sink:
        def stats(self):
            return {"sink": "redis://:s3cret@127.0.0.1:1/events", "delivered": 3, "dropped": 0, "buffered": 0}

    families = list(_sink_families([Sink()]))
    labels = {s.labels["sink"] for family in families for s in family.samples}
    assert labels == {"redis://:***@127.0.0.1:1/events"}


def _prometheus(tmp_path, target_port: int):
    binary = need("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: retina_trt\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
    )
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    log = open(tmp_path / "prometheus.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port, timeout_s=30)
    return process, port


def _query(port: int, query: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)["data"]["result"]


def test_real_prometheus_scrapes_a_running_analyze(demo_onnx, tmp_path):
    camera = Camera(fps=15, size=(240, 320))
    metrics_port = free_port()
    command = [sys.executable, "-m", "retina_trt.cli", "analyze", str(demo_onnx), camera.url]
    command += ["--metrics", str(metrics_port), "--events", str(tmp_path / "events.jsonl")]
    analyze = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    prometheus = None
    try:
        wait_port(metrics_port, timeout_s=120)
        prometheus, port = _prometheus(tmp_path, metrics_port)
        query = 'retina_trt_source_frames_processed_total{source="0"}'

        def scraped() -> bool:
            try:
                result = _query(port, query)
            except OSError:
                return False
            return bool(result) and float(result[0]["value"][1]) > 0

        assert wait_until(scraped, timeout_s=60, poll_s=0.5), (tmp_path / "prometheus.log").read_text()[-2000:]
        assert _query(port, 'retina_trt_source_state{source="0",state="running"}')[0]["value"][1] == "1"
        assert _query(port, 'up{job="retina_trt"}')[0]["value"][1] == "1"
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        analyze.send_signal(signal.SIGINT)
        output, _ = analyze.communicate(timeout=60)
        camera.stop()
    assert f"metrics: http://127.0.0.1:{metrics_port}/metrics" in output


def test_metrics_host_and_port_are_checked(demo_onnx, tmp_path):
    video = tmp_path / "none.avi"
    for args, words in ((["--metrics", "70000"], "0..65535"), (["--metrics", "0", "--metrics-host", ""], "empty")):
        run = subprocess.run(
            [sys.executable, "-m", "retina_trt.cli", "analyze", str(demo_onnx), str(video), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 2 and words in run.stderr, run.stderr
    import socket

    with socket.socket() as taken:  # a port in use: one line naming the flag, before any work
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        run = subprocess.run(
            [sys.executable, "-m", "retina_trt.cli", "analyze", str(demo_onnx), str(video), "--metrics", port],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,  # where the default events file would go
        )
    assert run.returncode == 2 and "pick another port with --metrics" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "analytics-output").exists()


def test_sample_scrape_config_and_alert_rules(finished_run):
    """samples/prometheus: the config and rules pass promtool, the rules' own unit tests pass, and
    every metric they name is one the run exposes."""
    import re
    from pathlib import Path

    promtool = need("promtool")
    folder = Path(__file__).resolve().parent.parent / "samples" / "prometheus"
    for args in (["check", "config", "prometheus.yml"], ["test", "rules", "alerts_test.yml"]):
        run = subprocess.run([promtool, *args], cwd=folder, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
    exposed = {name for name, _ in _samples(finished_run[1].registry)}
    named = set(re.findall(r"retina_trt_[a-z_]+", (folder / "alerts.yml").read_text())) - {"retina_trt"}
    assert named and named <= exposed, named - exposed
