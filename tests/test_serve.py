"""A real Triton Inference Server (tritonserver 2.51 from the nvidia-pytriton wheel, `make
serve-env`), on 127.0.0.1 only, bounded waits, killed by its process group. Marked ``serve``:
`make test-serve` (and `make test-all`) run these; `make test` does not need the environment.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from retina_trt import export_onnx
from retina_trt.errors import BackendUnavailableError
from retina_trt.image import preprocess_batch, read_image
from retina_trt.runtime.onnxruntime_backend import OnnxRuntimeBackend
from retina_trt.serving.server import ServerError, free_ports, serve_env, serve_model, start_server
from retina_trt.serving.triton import export_triton

pytestmark = pytest.mark.serve
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "models" / "shapes_r18.pt"
OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


@pytest.fixture(scope="module")
def env():
    try:
        return serve_env()
    except BackendUnavailableError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    return export_onnx(DEMO, tmp_path_factory.mktemp("serve") / "demo.onnx", batch=(1, 4, 8))


@pytest.fixture(scope="module")
def server(env, demo_onnx):
    http, grpc, metrics = free_ports(3)
    with serve_model(
        demo_onnx,
        name="retina",
        max_batch=8,
        queue_delay_us=2000,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        timeout_s=120,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def batch(image_dir, demo_onnx):
    backend = OnnxRuntimeBackend(demo_onnx)
    spec = backend.spec
    images = [read_image(p) for p in sorted(image_dir.glob("*.jpg"))]
    return preprocess_batch(
        images,
        min_size=spec.min_size,
        max_size=spec.max_size,
        size_divisible=spec.size_divisible,
        input_size=backend.input_size,
    )


def _infer(module, url, pixels, sizes):
    client = module.InferenceServerClient(url)
    inputs = [
        module.InferInput("images", list(pixels.shape), "UINT8"),
        module.InferInput("image_sizes", list(sizes.shape), "INT32"),
    ]
    inputs[0].set_data_from_numpy(pixels)
    inputs[1].set_data_from_numpy(sizes)
    result = client.infer("retina", inputs, outputs=[module.InferRequestedOutput(n) for n in OUTPUTS])
    return [result.as_numpy(n) for n in OUTPUTS]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_outputs_equal_onnxruntime(server, batch, demo_onnx, protocol):
    import tritonclient.grpc as grpc_client
    import tritonclient.http as http_client

    module, url = (http_client, server.http_url) if protocol == "http" else (grpc_client, server.grpc_url)
    got = _infer(module, url, batch.pixels, batch.image_sizes.astype(np.int32))
    want = OnnxRuntimeBackend(demo_onnx).session.run(
        list(OUTPUTS), {"images": batch.pixels, "image_sizes": batch.image_sizes.astype(np.int32)}
    )
    assert int(got[0].sum()) > 0
    for g, w, name in zip(got, want, OUTPUTS):
        assert g.dtype == w.dtype and np.array_equal(g, w), name


def test_dynamic_batching_forms_batches_and_every_answer_is_right(server, batch, demo_onnx):
    import tritonclient.http as http_client

    one = (batch.pixels[:1], batch.image_sizes[:1].astype(np.int32))
    want = _infer(http_client, server.http_url, *one)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: _infer(http_client, server.http_url, *one), range(32)))
    for got in results:
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
    stats = http_client.InferenceServerClient(server.http_url).get_inference_statistics("retina")
    sizes = {int(b["batch_size"]) for b in stats["model_stats"][0]["batch_stats"]}
    assert max(sizes) > 1, sizes  # the server merged concurrent requests


def test_malformed_requests_get_errors_and_the_server_keeps_serving(server, batch):
    import tritonclient.http as http_client
    from tritonclient.utils import InferenceServerException

    client = http_client.InferenceServerClient(server.http_url)
    pixels, sizes = batch.pixels[:1], batch.image_sizes[:1].astype(np.int32)

    def request(images, image_sizes=None, dtype="UINT8"):
        inputs = [http_client.InferInput("images", list(images.shape), dtype)]
        inputs[0].set_data_from_numpy(images)
        if image_sizes is not None:
            inputs.append(http_client.InferInput("image_sizes", list(image_sizes.shape), "INT32"))
            inputs[1].set_data_from_numpy(image_sizes)
        return client.infer("retina", inputs)

    bad = [
        lambda: request(pixels.astype(np.float32), sizes, dtype="FP32"),  # wrong dtype
        lambda: request(pixels[0], sizes),  # wrong rank
        lambda: request(pixels),  # missing input
        lambda: request(np.repeat(pixels, 9, axis=0), np.repeat(sizes, 9, axis=0)),  # beyond max_batch_size 8
    ]
    for call in bad:
        with pytest.raises(InferenceServerException):
            call()
        assert int(request(pixels, sizes).as_numpy("num_detections")[0, 0]) >= 0  # still serving


def test_triton_client_sample_against_the_server(server, image_dir, tmp_path):
    image = next(image_dir.glob("*.jpg"))
    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        out = tmp_path / protocol
        run = subprocess.run(
            [
                sys.executable,
                str(ROOT / "samples" / "triton_client.py"),
                str(image),
                "--model",
                "retina",
                "--url",
                url,
                "--protocol",
                protocol,
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert any(out.iterdir())


@pytest.mark.parametrize(
    "kind", ["cpu", "gpu"], ids=["KIND_CPU", "KIND_GPU"]
)  # (an id "gpu" would read as the gpu marker)
def test_export_triton_configs_pass_the_real_servers_validation(env, demo_onnx, tmp_path, kind):
    """The onnxruntime_onnx entry is accepted up to its backend (absent from this server): the
    failure is the missing backend library, never an earlier config error."""
    repo = tmp_path / "repo"
    export_triton(demo_onnx, repo, name="retina", kind=kind)
    http, grpc, metrics = free_ports(3)
    with pytest.raises(ServerError) as info:
        start_server(repo, env=env, http_port=http, grpc_port=grpc, metrics_port=metrics, timeout_s=60)
    assert "unable to find backend library for backend 'onnxruntime'" in str(info.value), str(info.value)[-2000:]


def test_a_broken_config_is_caught_before_the_backend(env, demo_onnx, tmp_path):
    repo = tmp_path / "repo"
    entry = export_triton(demo_onnx, repo, name="retina", kind="cpu")
    config = entry / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size:", "max_batch_sizes:"))
    http, grpc, metrics = free_ports(3)
    with pytest.raises(ServerError) as info:
        start_server(repo, env=env, http_port=http, grpc_port=grpc, metrics_port=metrics, timeout_s=60)
    message = str(info.value)
    assert "failed to read text proto" in message and "unable to find backend library" not in message, message[-2000:]


def test_serve_command_prints_the_urls_and_stops_cleanly_on_sigint(env, demo_onnx, tmp_path):
    http, grpc, metrics = free_ports(3)
    before = {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("retina_trt_*")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retina_trt.cli",
            "serve",
            str(demo_onnx),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert f"HTTP 127.0.0.1:{http}" in line and f"gRPC 127.0.0.1:{grpc}" in line, (
            line,
            process.stderr.read()[-2000:],
        )
        import tritonclient.http as http_client

        assert http_client.InferenceServerClient(f"127.0.0.1:{http}").is_model_ready("retina")
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 130
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(0.5)
    after = {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("retina_trt_*")}
    assert after <= before, after - before  # the temporary repository and backend folder are gone
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", http), timeout=1).close()


def test_no_serving_environment_is_one_clear_line(tmp_path, capsys, monkeypatch, demo_onnx):
    from retina_trt.cli import main

    monkeypatch.setenv("RETINA_TRT_SERVE_ENV", str(tmp_path / "nowhere"))
    assert main(["serve", str(demo_onnx)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make serve-env" in err[0]


def test_served_config_is_the_engine_contract(server):
    import tritonclient.http as http_client

    config = http_client.InferenceServerClient(server.http_url).get_model_config("retina")
    assert [i["name"] for i in config["input"]] == ["images", "image_sizes"]
    assert [o["name"] for o in config["output"]] == list(OUTPUTS)
    assert config["backend"] == "python" and config["max_batch_size"] == 8
    assert json.loads(config["parameters"]["retina_trt.spec"]["string_value"])["num_classes"] > 0


def test_load_test_runs_with_zero_errors_and_accounts_for_every_request(env, demo_onnx):
    from retina_trt.bench.serve import run

    report = run(demo_onnx, clients=[1, 4], requests=8, instances=1, queue_delay_us=2000)
    local, *served = report["rows"]
    assert local["clients"] == "in-process" and local["throughput_per_s"] > 0
    for row in served:
        assert row["errors"] == 0 and row["throughput_per_s"] > 0
        assert sum(size * count for size, count in row["batches"].items()) == row["requests"]  # every image in a batch


def test_tensorrt_plan_config_passes_the_real_servers_validation(env, demo_onnx, tmp_path):
    """An engine's tensorrt_plan entry is accepted up to the TensorRT backend this server lacks."""
    from test_trt_routes import engine_file

    engine = engine_file(demo_onnx, tmp_path / "demo.engine", flavour="tensorrt", version="10.13.3.9")
    repo = tmp_path / "repo"
    export_triton(engine, repo, name="retina", kind="cpu")
    http, grpc, metrics = free_ports(3)
    with pytest.raises(ServerError) as info:
        start_server(repo, env=env, http_port=http, grpc_port=grpc, metrics_port=metrics, timeout_s=60)
    assert "unable to find backend library for backend 'tensorrt'" in str(info.value), str(info.value)[-2000:]


def test_clients_that_disconnect_mid_request_do_not_hurt_the_server(server, batch):
    """A client that sends half a request body and hangs up, and one that hangs up before the
    answer: the server keeps serving."""
    import tritonclient.http as http_client

    pixels, sizes = batch.pixels[:1], batch.image_sizes[:1].astype(np.int32)
    host, port = server.http_url.split(":")
    body = json.dumps(
        {
            "inputs": [
                {"name": "images", "shape": list(pixels.shape), "datatype": "UINT8", "data": pixels.ravel().tolist()},
                {
                    "name": "image_sizes",
                    "shape": list(sizes.shape),
                    "datatype": "INT32",
                    "data": sizes.ravel().tolist(),
                },
            ]
        }
    ).encode()
    head = (
        f"POST /v2/models/retina/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=5) as half:
        half.sendall(head + body[: len(body) // 2])  # and goes away
    with socket.create_connection((host, int(port)), timeout=5) as impatient:
        impatient.sendall(head + body)  # and goes away before the answer
    time.sleep(1.0)
    for _ in range(3):
        assert int(_infer(http_client, server.http_url, pixels, sizes)[0][0, 0]) >= 0
    assert http_client.InferenceServerClient(server.http_url).is_server_live()


def test_a_model_instance_that_raises_answers_with_an_error_and_keeps_serving(env, tmp_path, batch):
    """A dynamic-shape model given a 0x0 image: ONNX Runtime raises inside the model instance; that
    request gets the error, the next one its detections."""
    import tritonclient.http as http_client
    from tritonclient.utils import InferenceServerException

    dynamic = export_onnx(DEMO, tmp_path / "dynamic.onnx", dynamic_shapes=True, batch=(1, 1, 4))
    http, grpc, metrics = free_ports(3)
    with serve_model(dynamic, http_port=http, grpc_port=grpc, metrics_port=metrics, timeout_s=120) as running:
        with pytest.raises(InferenceServerException, match="Invalid input shape"):
            _infer(http_client, running.http_url, np.zeros((1, 0, 0, 3), np.uint8), np.zeros((1, 2), np.int32))
        got = _infer(http_client, running.http_url, batch.pixels[:1], batch.image_sizes[:1].astype(np.int32))
        assert int(got[0][0, 0]) > 0
