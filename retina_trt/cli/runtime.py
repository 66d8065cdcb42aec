"""``detect``: the runtime on images, folders, globs, videos, streams and cameras (runtime/cli_detect.py)."""

from __future__ import annotations

import argparse

from retina_trt.cli.args import positive_float, positive_int, score
from retina_trt.contract import BACKENDS, CPU_PRECISIONS


def register(sub) -> None:
    """Add this group's subcommands to the ``retina-trt`` parser."""
    p = sub.add_parser("detect", help="detect objects in images, folders, globs, videos, streams and cameras")
    p.add_argument("model", help=".engine, .onnx or .pt model, or grpc://HOST:PORT/NAME / http://... (a Triton server)")
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="image files, folders, globs, video files, stream URLs (rtsp://, http://) or camera indices",
    )
    p.add_argument("--output", required=True, help="folder for annotated outputs and JSON")
    p.add_argument("--min-score", type=score, default=0.3, help="drop detections below (default 0.3)")
    p.add_argument("--json", action="store_true", help="one JSON file per image (default: one detections.jsonl)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="auto: .onnx on OpenVINO where installed (else ONNX Runtime), .engine on TensorRT, .pt on torch",
    )
    p.add_argument(
        "--cpu-precision",
        default="auto",
        choices=CPU_PRECISIONS,
        help="OpenVINO: precision of the layers the graph does not quantize (auto: BF16 with AMX, else FP32)",
    )
    p.add_argument("--no-draw", action="store_true", help="write JSON only, no annotated images/videos")
    p.add_argument(
        "--max-frames", type=positive_int, default=None, help="stop each video/stream after N processed frames"
    )
    p.add_argument("--every", type=positive_int, default=1, help="process every Nth frame of videos/streams")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="frames per inference batch of one video/stream (default 1; two or more videos/streams are "
        "batched across sources, one frame of each per model call, unless this is given)",
    )
    p.add_argument(
        "--max-reconnect-attempts",
        type=positive_int,
        default=10,
        help="live streams: give up after N failed reconnect attempts in a row (default 10)",
    )
    p.add_argument(
        "--max-outage",
        type=positive_float,
        default=120.0,
        help="live streams: give up after this many seconds without the source (default 120)",
    )
    p.set_defaults(run=_cmd_detect)


def _cmd_detect(args: argparse.Namespace) -> int:
    from retina_trt.runtime.cli_detect import run_detect
    from retina_trt.streams.detect import detect_sources

    return run_detect(args, detect_sources)
