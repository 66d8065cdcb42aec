"""``bench``: latency (trtexec-style statistics, per-stage times, paper and torchvision comparisons)."""

from __future__ import annotations

import argparse
from pathlib import Path

from retina_trt.argtypes import (
    non_negative_seconds,
    parse_ints,
    positive_int,
    seconds,
    thread_count,
)
from retina_trt.contract import BACKENDS, PRECISIONS


def register(sub) -> None:
    """Add this group's subcommands to the ``retina-trt`` parser."""
    p = sub.add_parser(
        "bench",
        help="latency benchmark (trtexec-style statistics, per-stage times, paper and torchvision comparisons)",
    )
    p.add_argument("model", help=".pt/.pth checkpoint (exported per scale), .onnx or .engine")
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="for a checkpoint: onnxruntime (default, exported per scale) or torch",
    )
    p.add_argument("--scale", type=parse_ints, default=None, help="shorter side(s), e.g. 400,600,800 (checkpoints)")
    p.add_argument("--batch", type=parse_ints, default=(1,), help="batch size(s), e.g. 1,4 (default 1)")
    p.add_argument("--warmup", type=non_negative_seconds, default=2.0, help="warm-up seconds (default 2)")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--iterations", type=positive_int, default=None, help="timed iterations (default 20)")
    timing.add_argument("--duration", type=seconds, default=None, help="timed seconds instead of iterations")
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads (ONNX Runtime, OpenVINO, torch)")
    p.add_argument("--compare-paper", action="store_true", help="show the paper's Table 1e figure beside ours")
    p.add_argument("--compare", choices=["torchvision"], default=None, help="time torchvision's eager model too")
    p.add_argument(
        "--routes",
        type=_routes,
        default=None,
        help="CPU routes timed side by side at batch 1, comma-separated: onnxruntime, openvino:f32, "
        "openvino:bf16, openvino:auto, openvino:int8 (INT8 Q/DQ graph, synthetic calibration); "
        "'cpu' = onnxruntime,openvino:f32,openvino:bf16,openvino:int8",
    )
    p.add_argument("--cuda-graph", action="store_true", help="TensorRT: replay CUDA graphs")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp16",
        help="--backend tensorrt on a checkpoint: the engine precision per scale (default fp16)",
    )
    p.add_argument("--out", default="bench-output/bench", help="report folder (bench.json, bench.md, bench.png)")
    p.add_argument("--json", dest="json_path", default=None, help="also write the JSON report here")
    p.set_defaults(run=_cmd_bench)


def _routes(text: str) -> tuple[str, ...]:
    from retina_trt.bench.routes import DEFAULT_ROUTES, parse_route

    routes = DEFAULT_ROUTES if text.strip() == "cpu" else tuple(r for r in text.split(",") if r.strip())
    try:
        for route in routes:
            parse_route(route)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return routes


def _cmd_bench(args: argparse.Namespace) -> int:
    from retina_trt.bench.latency import benchmark
    from retina_trt.bench.report import write_report
    from retina_trt.utils import check_output_file, check_output_folder, refuse_overlap

    check_output_folder(args.out, "--out")  # before the benchmark, not after it
    if args.json_path:
        check_output_file(args.json_path, "--json")
    written = [("--out", Path(args.out) / name) for name in ("bench.json", "bench.md", "bench.png")]
    refuse_overlap([*written, ("--json", args.json_path)], [args.model])
    iterations = args.iterations if args.iterations or args.duration else 20
    report = benchmark(
        args.model,
        backend=args.backend,
        scales=args.scale,
        batch_sizes=args.batch,
        warmup_s=args.warmup,
        iterations=iterations,
        duration_s=args.duration,
        compare_paper=args.compare_paper,
        compare_torchvision=args.compare == "torchvision",
        num_threads=args.threads,
        cuda_graph=args.cuda_graph,
        precision=args.precision,
        routes=args.routes,
    )
    written = write_report(report, args.out, args.json_path)
    print(written["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0
