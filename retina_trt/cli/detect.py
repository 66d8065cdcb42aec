"""``detect``: the runtime on images, folders, globs, videos, streams and cameras
(``streams/detect.py``, :func:`~retina_trt.streams.detect.detect_files`, does the work; this module
parses and prints)."""

from __future__ import annotations

import argparse
import os
import sys

from retina_trt.argtypes import infer_schedule, positive_float, positive_int, score
from retina_trt.cli.flags import cli_message, detector_options
from retina_trt.contract import BACKENDS, CPU_PRECISIONS
from retina_trt.utils import check_output_folder


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
        "--infer",
        type=infer_schedule,
        default="every",
        metavar="every|N|adaptive",
        help="when the model runs on a frame: every frame (default), every N-th, or adaptive (motion, "
        "moving objects, a refresh every 2 s); docs/analytics.md#adaptive-inference",
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
    from retina_trt.runtime.detector import Detector
    from retina_trt.streams.detect import Inputs, detect_files

    inputs = Inputs.expand(args.sources)  # a bad SOURCE: one line, before the model loads
    out_dir = check_output_folder(args.output, "--output")
    options = _options(args)  # a bad combination (--infer with --batch-size): one line, before the model loads
    det = Detector(args.model, min_score=args.min_score, **detector_options(args))
    print(f"backend: {det.backend} ({det.precision})")
    try:
        report = detect_files(det, inputs, out_dir, options=options)
    finally:
        det.close()
    return _print_report(report, len(inputs.images) + len(inputs.videos))


def _options(args: argparse.Namespace):
    from retina_trt.streams.detect import DetectOptions

    return DetectOptions(
        json_per_image=args.json,
        draw=not args.no_draw,
        max_frames=args.max_frames,
        every=args.every,
        batch_size=args.batch_size,
        max_reconnect_attempts=args.max_reconnect_attempts,
        max_outage_s=args.max_outage,
        progress=True,
        infer=args.infer,
    )


def _schedule_note(result) -> str:
    if not result.batched:
        return ""
    if result.inferred is None or result.inferred >= result.frames:
        return " (batched with the other sources)"
    why = ", ".join(f"{k} {v}" for k, v in (result.infer_reasons or {}).items() if v)
    return f" (batched with the other sources; the model ran on {result.inferred}" + (f": {why})" if why else ")")


def _print_report(report, total: int) -> int:
    """The run's lines on stdout, failures on stderr; exit code 2 when any input failed."""
    for name in report.bad_names:
        print(f"skipped {os.fsencode(name)!r}: its file name is not valid UTF-8; rename it", file=sys.stderr)
    for result in report.results:
        if result.error is not None:
            print(f"skipped {result.source}: {cli_message(result.error)}", file=sys.stderr)
        elif result.kind == "video":
            print(
                f"{result.source}: {result.frames} frames at {result.fps:.1f} FPS, {result.detections} detections, "
                f"{result.bad_frames} unreadable frames skipped, {result.dropped} dropped, "
                f"{result.reconnects} reconnects" + _schedule_note(result)
            )
    failures = len(report.failures)
    print(f"{total - failures} of {total} inputs processed; outputs in {report.out_dir}")
    timings = ", ".join(f"{k} {v:.1f} ms" for k, v in report.timings_ms.items())
    if timings:
        print(f"mean per call: {timings}")
    if failures:
        print(f"retina-trt detect: error: {failures} input(s) failed (see above)", file=sys.stderr)
    if report.bad_names:
        print(
            f"retina-trt detect: error: {len(report.bad_names)} input(s) with a non-UTF-8 name skipped",
            file=sys.stderr,
        )
    return 2 if failures or report.bad_names else 0
