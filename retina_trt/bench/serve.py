"""Load test of ``retina-trt serve`` (``make serve-bench``): a real Triton server on 127.0.0.1,
N concurrent clients (1, 4, 16) each sending a fixed number of requests, zero errors required;
throughput, p50/p90/p99 latency, the batch sizes the server formed (its statistics endpoint),
and the same requests through one in-process ONNX Runtime session in the same run.

  python -m retina_trt.bench.serve --model demo.onnx --out bench-output/serve [--requests 64]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.errors import RetinaTrtError
from retina_trt.utils import atomic_path

OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _request(pixels: np.ndarray, sizes: np.ndarray, url: str, local: threading.local) -> float:
    import tritonclient.http as http_client

    if not hasattr(local, "client"):  # one connection per client thread
        local.client = http_client.InferenceServerClient(url)
    inputs = [
        http_client.InferInput("images", list(pixels.shape), "UINT8"),
        http_client.InferInput("image_sizes", list(sizes.shape), "INT32"),
    ]
    inputs[0].set_data_from_numpy(pixels)
    inputs[1].set_data_from_numpy(sizes)
    start = time.perf_counter()
    local.client.infer("retina", inputs)
    return (time.perf_counter() - start) * 1e3


def _batch_counts(url: str) -> dict[int, int]:
    import tritonclient.http as http_client

    stats = http_client.InferenceServerClient(url).get_inference_statistics("retina")
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["model_stats"][0]["batch_stats"]}


# long function: one load test per client count against one server, side by side
def run(model: Path, *, clients: list[int], requests: int, instances: int, queue_delay_us: int) -> dict[str, Any]:
    from retina_trt.runtime.onnxruntime_backend import OnnxRuntimeBackend
    from retina_trt.serving.server import free_ports, serve_model

    backend = OnnxRuntimeBackend(model)
    height, width = backend.input_size or (512, 512)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (1, height, width, 3), dtype=np.uint8)
    sizes = np.array([[height, width]], np.int32)
    feeds = {"images": pixels, "image_sizes": sizes}
    for _ in range(3):
        backend.session.run(list(OUTPUTS), feeds)
    local_ms = []
    for _ in range(requests):
        start = time.perf_counter()
        backend.session.run(list(OUTPUTS), feeds)
        local_ms.append((time.perf_counter() - start) * 1e3)
    rows = [
        {
            "clients": "in-process",
            "requests": requests,
            "errors": 0,
            "throughput_per_s": round(1e3 / statistics.mean(local_ms), 2),
            "p50_ms": round(_percentile(local_ms, 50), 1),
            "p90_ms": round(_percentile(local_ms, 90), 1),
            "p99_ms": round(_percentile(local_ms, 99), 1),
            "batches": {},
        }
    ]
    http, grpc, metrics = free_ports(3)
    with serve_model(
        model, instances=instances, queue_delay_us=queue_delay_us, http_port=http, grpc_port=grpc, metrics_port=metrics
    ) as server:
        for n in clients:
            before = _batch_counts(server.http_url)
            local = threading.local()
            errors = 0
            latencies: list[float] = []
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                futures = [pool.submit(_request, pixels, sizes, server.http_url, local) for _ in range(requests)]
                for future in futures:
                    try:
                        latencies.append(future.result())
                    except Exception:
                        errors += 1
            elapsed = time.perf_counter() - start
            after = _batch_counts(server.http_url)
            formed = {b: c - before.get(b, 0) for b, c in sorted(after.items()) if c - before.get(b, 0)}
            rows.append(
                {
                    "clients": n,
                    "requests": requests,
                    "errors": errors,
                    "throughput_per_s": round(len(latencies) / elapsed, 2),
                    "p50_ms": round(_percentile(latencies, 50), 1),
                    "p90_ms": round(_percentile(latencies, 90), 1),
                    "p99_ms": round(_percentile(latencies, 99), 1),
                    "batches": formed,
                }
            )
            print(
                f"{n:>3} clients: {rows[-1]['throughput_per_s']} req/s, p50 {rows[-1]['p50_ms']} ms, "
                f"p99 {rows[-1]['p99_ms']} ms, batches {formed}, errors {errors}",
                flush=True,
            )
    return {
        "model": str(model),
        "input": [height, width],
        "instances": instances,
        "queue_delay_us": queue_delay_us,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--model", required=True, help="an exported .onnx")
    cli.add_argument("--out", required=True, help="folder for serve.json and serve.md")
    cli.add_argument("--clients", default="1,4,16", help="concurrent clients per run (default 1,4,16)")
    cli.add_argument("--requests", type=int, default=64, help="requests per run (default 64)")
    cli.add_argument("--instances", type=int, default=1)
    cli.add_argument("--queue-delay-us", type=int, default=2000)
    args = cli.parse_args(argv)
    try:
        clients = [int(c) for c in args.clients.split(",")]
        if args.requests < 1 or any(c < 1 for c in clients):
            raise ValueError("--clients and --requests must be positive")
        report = run(
            Path(args.model),
            clients=clients,
            requests=args.requests,
            instances=args.instances,
            queue_delay_us=args.queue_delay_us,
        )
    except (RetinaTrtError, ValueError, OSError) as err:
        print(f"retina_trt.bench.serve: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "| clients | requests | errors | throughput (req/s) | p50 ms | p90 ms | p99 ms | batches formed (size: "
        "count) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['clients']} | {row['requests']} | {row['errors']} | {row['throughput_per_s']} | {row['p50_ms']} | "
            f"{row['p90_ms']} | {row['p99_ms']} | {row['batches'] or '-'} |"
        )
    with atomic_path(out / "serve.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    with atomic_path(out / "serve.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    failed = sum(row["errors"] for row in report["rows"])
    if failed:
        print(f"{failed} requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
