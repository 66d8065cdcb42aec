"""The Triton client backend: ``Detector("grpc://host:port/model")`` / ``http://``.

The first tests run everywhere (URLs, an unreachable server: one clear error, fast). The rest
(marked ``serve``: `make test-serve`) run against a real Triton Inference Server (`make
serve-env`): the same detections as a local Detector over gRPC and HTTP, the spec read from the
server, a multi-source stream on the remote model, and a server restart survived by the same
Detector (errors counted and named, no hang), also in the middle of a running stream of live
cameras.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import wait_until

from retina_trt import Detector, export_onnx
from retina_trt.data.camera import Camera
from retina_trt.errors import BackendError, BackendUnavailableError
from retina_trt.runtime.triton_backend import parse_url

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "models" / "shapes_r18.pt"


def test_model_urls_are_parsed_or_refused():
    assert parse_url("grpc://10.0.0.2/retina") == ("grpc", "10.0.0.2:8001", "retina", "")
    assert parse_url("http://h:9000/retina/2") == ("http", "h:9000", "retina", "2")
    for bad in ("grpc://host", "grpc:///m", "http://h:99999/m", "grpc://h/a/b/c"):
        with pytest.raises(ValueError, match="grpc://HOST|bad port"):
            parse_url(bad)


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_an_unreachable_server_is_one_clear_error_fast(scheme):
    from retina_trt.serving.server import free_ports

    (port,) = free_ports(1)
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=f"Triton server at 127.0.0.1:{port} .{scheme}.*is the server up"):
        Detector(f"{scheme}://127.0.0.1:{port}/retina", timeout_s=2)
    assert time.monotonic() - start < 10


class TricklingServer:
    """An HTTP server that answers the model's config (from ``model``'s metadata) at once, if
    asked to, and everything else one byte every 0.25 s, without end (issue #38)."""

    def __init__(self, model: Path | None) -> None:
        import http.server
        import json

        from retina_trt.contract.onnx_metadata import read_metadata

        meta = read_metadata(model) if model else None
        config = meta and {
            "max_batch_size": 1,
            "parameters": {
                "retina_trt.spec": {"string_value": meta.spec.to_json()},
                "retina_trt.export": {"string_value": json.dumps(meta.info.record)},
            },
        }

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if config and self.path.endswith("/config"):
                    body = json.dumps(config).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.trickle()

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.trickle()

            def trickle(self):
                try:
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.25)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_server_answering_one_byte_at_a_time_meets_the_deadline(demo_onnx, image_dir):
    """Issue #38: the HTTP client's time-out is per socket read, so a reply trickled one byte at
    a time never tripped it and ``detect`` ran forever. Every call now has an overall deadline:
    reading the config, and each request (one clear error naming the reason, counted)."""
    import cv2

    slow = TricklingServer(None)
    try:
        start = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="no complete answer within 2 s"):
            Detector(f"http://127.0.0.1:{slow.port}/retina", timeout_s=2)
        assert time.monotonic() - start < 6
    finally:
        slow.close()
    config_only = TricklingServer(demo_onnx)
    try:
        with Detector(f"http://127.0.0.1:{config_only.port}/retina", timeout_s=2) as det:
            image = cv2.imread(str(sorted(Path(image_dir).glob("*.jpg"))[0]))
            start = time.monotonic()
            with pytest.raises(BackendError, match="no complete answer within 2 s"):
                det(image)
            assert time.monotonic() - start < 6
            assert sum(det._backend.errors.values()) == 1
    finally:
        config_only.close()


# -- against a real server (make serve-env) ------------------------------------------------------
serve = pytest.mark.serve


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from retina_trt.serving.server import free_ports, serve_env, serve_model

    try:
        serve_env()
    except BackendUnavailableError as err:
        pytest.skip(str(err))
    onnx = export_onnx(DEMO, tmp_path_factory.mktemp("triton") / "demo.onnx", batch=(1, 4, 8))
    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3)))

    def start():
        return serve_model(onnx, name="retina", max_batch=8, queue_delay_us=2000, timeout_s=120, **ports)

    state = {"onnx": onnx, "ports": ports, "start": start, "server": start()}
    yield state
    state["server"].stop()


@serve
@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_remote_detections_equal_the_local_ones(served, image_dir, scheme):
    onnx, ports = served["onnx"], served["ports"]
    port = ports["grpc_port" if scheme == "grpc" else "http_port"]
    images = sorted(image_dir.glob("*.jpg"))
    with Detector(f"{scheme}://127.0.0.1:{port}/retina") as remote, Detector(onnx, backend="onnxruntime") as local:
        assert remote.backend == "triton" and remote.spec == local.spec and remote.max_batch == 8
        for got, want in zip(remote.predict_batch(images), local.predict_batch(images)):
            assert len(got) == len(want) > 0
            np.testing.assert_allclose(got.boxes_xyxy, want.boxes_xyxy, atol=1e-3)
            np.testing.assert_array_equal(got.class_ids, want.class_ids)


@serve
def test_a_multi_source_stream_runs_on_the_remote_model(served, video_file):
    ports = served["ports"]
    with Detector(f"grpc://127.0.0.1:{ports['grpc_port']}/retina") as remote:
        with remote.streams({"a": video_file, "b": video_file}) as stream:
            counts = {}
            for result in stream:
                counts[result.source_id] = counts.get(result.source_id, 0) + 1
    assert counts == {"a": 12, "b": 12} and max(stream.batch_sizes) > 1


@serve
@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_a_server_restart_is_survived_errors_counted_and_named(served, image_dir, scheme):
    ports, start = served["ports"], served["start"]
    port = ports["grpc_port" if scheme == "grpc" else "http_port"]
    image = sorted(image_dir.glob("*.jpg"))[0]
    with Detector(f"{scheme}://127.0.0.1:{port}/retina", timeout_s=3) as remote:
        before = remote(image)
        served["server"].stop()
        started = time.monotonic()
        for _ in range(2):
            with pytest.raises(BackendError, match=f"Triton server 127.0.0.1:{port} .retina.:"):
                remote(image)
        assert time.monotonic() - started < 20  # never hangs: each request has its deadline
        assert sum(remote._backend.errors.values()) == 2 and all(remote._backend.errors)
        served["server"] = start()  # back on the same ports
        after = remote(image)  # the same Detector, reconnected
    np.testing.assert_allclose(after.boxes_xyxy, before.boxes_xyxy, atol=1e-4)


@serve
def test_a_server_restart_mid_stream_is_survived_and_counted(served):
    """Two live cameras stream through the remote model; the server is killed and started again
    on the same ports while the stream runs: the failing batches are counted as errors, named,
    and skipped, the stream never stops, frames are processed again once the server is back, and
    every frame read is accounted for."""
    ports, start = served["ports"], served["start"]
    cameras = {name: Camera(fps=10, size=(96, 128)) for name in ("a", "b")}
    received: dict[str, int] = {"a": 0, "b": 0}
    try:
        with Detector(f"grpc://127.0.0.1:{ports['grpc_port']}/retina", timeout_s=2) as remote:
            stream = remote.streams({name: cam.url for name, cam in cameras.items()})

            def consume() -> None:
                for result in stream:
                    received[result.source_id] += 1

            consumer = threading.Thread(target=consume, daemon=True)
            consumer.start()
            assert wait_until(lambda: min(received.values()) >= 10, 60), received
            served["server"].stop()
            assert wait_until(lambda: sum(s["errors"] for s in stream.stats().values()) >= 2, 60), stream.stats()
            before = dict(received)
            served["server"] = start()  # back on the same ports
            assert wait_until(lambda: all(received[k] >= before[k] + 10 for k in received), 90), (before, received)
            stats = stream.stats()
            stream.close()
            consumer.join(timeout=30)
    finally:
        for cam in cameras.values():
            cam.stop()
    assert not consumer.is_alive()
    for name, st in stats.items():
        assert st["errors"] >= 1 and "Triton server 127.0.0.1" in (st["last_error"] or ""), (name, st)
        assert st["state"] == "running", (name, st)  # the cameras never failed: only the server did
    final = stream.stats()
    for name, st in final.items():
        assert st["read"] == st["processed"] + st["dropped"] + st["skipped"] + st["decode_errors"] + st["errors"], (
            name,
            st,
        )
