"""Scale-out: ``export-triton``, ``export-deepstream`` (configurations) and ``serve`` (a real Triton
Inference Server; retina_trt/serving/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from retina_trt.argtypes import parse_size, positive_int
from retina_trt.contract import PRECISIONS
from retina_trt.serving.triton import BACKENDS, KINDS


def register(sub) -> None:
    """Add this group's subcommands to the ``retina-trt`` parser."""
    p = sub.add_parser("export-triton", help="write a Triton Inference Server model repository entry")
    p.add_argument("model", help="retina_trt .engine (TensorRT backend) or .onnx (ONNX Runtime backend)")
    p.add_argument("--repo", required=True, help="model repository folder")
    p.add_argument("--name", default=None, help="model name (default: the file's stem)")
    p.add_argument("--version", type=positive_int, default=1)
    p.add_argument("--instances", type=positive_int, default=1, help="instances per device")
    p.add_argument("--kind", choices=KINDS, default="auto", help="auto: gpu for engines, cpu for ONNX")
    p.add_argument("--max-queue-delay-us", type=int, default=100, help="dynamic batching queue delay")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="native",
        help="native: tensorrt_plan / onnxruntime_onnx; python: an .onnx served by Triton's Python backend "
        "through retina_trt (what `retina-trt serve` runs; needs retina_trt in the server's Python)",
    )
    p.add_argument("--max-batch", type=positive_int, default=None, help="max_batch_size (default: the model's)")
    p.set_defaults(run=_cmd_export_triton)

    p = sub.add_parser("export-deepstream", help="write a DeepStream nvinfer configuration (+ its ONNX)")
    p.add_argument("model", help="checkpoint (.pt), or an ONNX exported for DeepStream")
    p.add_argument("--out", required=True, help="folder for the config, labels.txt and model.onnx")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp16",
        help="precision prepared into model.onnx (FP32 postprocess); the config uses network-mode=0",
    )
    p.add_argument("--calib-data", default=None, help="INT8 calibration images: folder, COCO .json or 'synthetic'")
    p.add_argument("--calib-images", type=positive_int, default=512, help="INT8 calibration images (default 512)")
    p.add_argument(
        "--cache-dir", default=None, help="precision cache (default $RETINA_TRT_CACHE or ~/.cache/retina_trt)"
    )
    p.add_argument("--batch", type=positive_int, default=1, help="nvinfer batch-size")
    p.add_argument("--input-size", type=parse_size, default=None, help="fixed HEIGHTxWIDTH of the export")
    p.add_argument("--engine", default=None, help="a retina_trt engine built from the DeepStream ONNX (model.plan)")
    p.set_defaults(run=_cmd_export_deepstream)

    p = sub.add_parser("serve", help="serve a model with a real Triton Inference Server (needs `make serve-env`)")
    p.add_argument(
        "model", help=".onnx (served by Triton's Python backend through ONNX Runtime) or a repository folder"
    )
    p.add_argument("--name", default="retina", help="model name (default retina)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--http-port", type=positive_int, default=8000)
    p.add_argument("--grpc-port", type=positive_int, default=8001)
    p.add_argument("--metrics-port", type=positive_int, default=8002)
    p.add_argument("--instances", type=positive_int, default=1, help="model instances (default 1)")
    p.add_argument("--max-batch", type=positive_int, default=None, help="max_batch_size (default: the model's)")
    p.add_argument("--queue-delay-us", type=int, default=100, help="dynamic batching queue delay (default 100)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness (default 120)")
    p.set_defaults(run=_cmd_serve)


def _cmd_export_triton(args: argparse.Namespace) -> int:
    from retina_trt.serving.triton import export_triton

    path = export_triton(
        args.model,
        args.repo,
        name=args.name,
        version=args.version,
        instances=args.instances,
        kind=args.kind,
        max_queue_delay_us=args.max_queue_delay_us,
        overwrite=args.overwrite,
        backend=args.backend,
        max_batch=args.max_batch,
    )
    print(f"wrote {path} (config.pbtxt, {args.version}/, labels.txt)")
    return 0


def _cmd_export_deepstream(args: argparse.Namespace) -> int:
    from retina_trt.calibration import CalibrationConfig
    from retina_trt.pipeline import deepstream_onnx
    from retina_trt.serving.deepstream import PARSER_FUNCTION, check_outputs, export_deepstream

    out = Path(args.out)
    calib = None if args.calib_data in (None, "synthetic") else args.calib_data
    check_outputs(out, args.model, args.engine, calib)  # before the export and the precision step
    calibration = CalibrationConfig(source=args.calib_data, num_images=args.calib_images)
    onnx = deepstream_onnx(
        args.model,
        out / "model.onnx",
        precision=args.precision,
        batch=args.batch,
        input_size=args.input_size,
        calibration=calibration,
        cache_dir=args.cache_dir,
        prepare=args.engine is None,
    )
    path = export_deepstream(onnx, out, batch=args.batch, engine=args.engine)
    print(f"wrote {path} (+ labels.txt, model.onnx); bbox parser: DeepStream's own {PARSER_FUNCTION}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import time

    from retina_trt.serving.server import ServerError, serve_model

    server = serve_model(
        args.model,
        name=args.name,
        instances=args.instances,
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        timeout_s=args.timeout,
    )
    try:
        print(
            f"serving {args.name}: HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.metrics_url} "
            "(Ctrl-C stops)",
            flush=True,
        )
        while server.process.poll() is None:
            time.sleep(0.5)
        raise ServerError(f"tritonserver stopped (exit code {server.process.returncode}): {server.log_summary()}")
    finally:
        server.stop()
