"""The ``retina-trt`` command.

User errors (bad paths, bad options, unreadable inputs) print one line and exit with code 2;
``-v`` adds the traceback. Heavy modules are imported inside the subcommands, so
``retina-trt --help`` loads neither torch nor any GPU library.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from retina_trt._version import __version__
from retina_trt.contract import DEFAULT_NMS_BY_FLAVOUR, NMS_CHOICES
from retina_trt.errors import RetinaTrtError

logger = logging.getLogger("retina_trt.cli")

EXIT_USAGE = 2


def _parse_batch(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected MIN:OPT:MAX or N, got {text!r}") from err
    if len(values) == 1:
        values = [1, values[0], values[0]]
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected MIN:OPT:MAX or N, got {text!r}")
    return values[0], values[1], values[2]


def _parse_size(text: str) -> tuple[int, int]:
    from retina_trt.spec import MAX_IMAGE_SIDE

    parts = text.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 800x1344, got {text!r}") from err
    if not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE):
        raise argparse.ArgumentTypeError(f"each side must be in 1..{MAX_IMAGE_SIDE}, got {text!r}")
    return height, width


def _parse_ccs(text: str) -> tuple[tuple[int, int], ...]:
    """``8.6,8.9`` -> ((8, 6), (8, 9))."""
    try:
        ccs = tuple((int(a), int(b)) for a, b in (part.strip().split(".") for part in text.split(",")))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected compute capabilities such as 8.6,8.9, got {text!r}") from err
    return ccs


def _positive(kind: type, what: str):
    """An argparse type: ``kind(text)`` that must be > 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}") from err
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}")
        return value

    return parse


_positive_int = _positive(int, "integer")
_positive_float = _positive(float, "number")


def _parse_range(text: str) -> tuple[int, int]:
    try:
        values = [int(v) for v in text.split(":")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX or N, got {text!r}") from err
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX or N, got {text!r}")
    return values[0], values[1]


def _parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def _parse_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 400,600,800, got {text!r}") from err
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from err
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retina-trt",
        description="Deploy RetinaNet detectors: ONNX export, detection, TensorRT engines.",
    )
    parser.add_argument("--version", action="version", version=f"retina-trt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("export", help="export a checkpoint to ONNX (output contract, metadata)")
    p.add_argument("--weights", required=True, help="checkpoint: retina_trt .pt or torchvision state dict")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--nms", choices=NMS_CHOICES, default="onnx",
                   help="NMS in the graph (onnx: ONNX Runtime, TensorRT 10/11), exact NMS from plain operators "
                   "(graph: every TensorRT, TensorRT-RTX included), on the host (none), the retina_trt NMS plugin "
                   "(plugin) or TensorRT's EfficientNMS_TRT (efficient)")
    p.add_argument("--batch", type=_parse_batch, default=(1, 1, 8), help="MIN:OPT:MAX batch (default 1:1:8)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--input-size", type=_parse_size, help="fixed HEIGHTxWIDTH, e.g. 800x1344")
    shape.add_argument("--dynamic-shapes", action="store_true", help="dynamic height and width")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")

    p = sub.add_parser("detect", help="detect objects in images, folders, globs, videos, streams and cameras")
    p.add_argument("model", help=".engine, .onnx or .pt model")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="image files, folders, globs, video files, stream URLs (rtsp://, http://) or camera indices")
    p.add_argument("--output", required=True, help="folder for annotated outputs and JSON")
    p.add_argument("--min-score", type=_score, default=0.3, help="drop detections below (default 0.3)")
    p.add_argument("--json", action="store_true", help="one JSON file per image (default: one detections.jsonl)")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch", "tensorrt"])
    p.add_argument("--no-draw", action="store_true", help="write JSON only, no annotated images/videos")
    p.add_argument("--max-frames", type=_positive_int, default=None, help="stop each video/stream after N processed frames")
    p.add_argument("--every", type=_positive_int, default=1, help="process every Nth frame of videos/streams")
    p.add_argument("--batch-size", type=_positive_int, default=1, help="frames per inference batch for videos/streams")
    p.add_argument("--max-reconnect-attempts", type=_positive_int, default=10,
                   help="live streams: give up after N failed reconnect attempts in a row (default 10)")
    p.add_argument("--max-outage", type=_positive_float, default=120.0,
                   help="live streams: give up after this many seconds without the source (default 120)")

    p = sub.add_parser("data", help="datasets")
    data_sub = p.add_subparsers(dest="data_command", metavar="KIND", required=True)
    q = data_sub.add_parser("synthetic", help="generate the synthetic shapes dataset (COCO format)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--images", type=_positive_int, required=True, help="number of images")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--split", default="train", help="split name: <out>/<split>/ and instances_<split>.json")
    q.add_argument("--height", type=_parse_range, default=(256, 320), help="image height MIN:MAX (default 256:320)")
    q.add_argument("--width", type=_parse_range, default=(256, 384), help="image width MIN:MAX (default 256:384)")

    p = sub.add_parser("train", help="train a RetinaNet on a COCO-format dataset (paper recipe, CPU-sized)")
    p.add_argument("--annotations", required=True, help="instances_*.json")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--output", required=True, help="checkpoint to write (and resume from with --resume)")
    p.add_argument("--resume", action="store_true", help="continue from --output's training state")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint's weights (same model options) with a fresh optimizer and "
                        "schedule: a second training stage or fine-tuning")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--fpn-channels", type=int, default=256)
    p.add_argument("--head-norm", choices=["none", "group_norm"], default="none", help="subnet normalization (v2: group_norm)")
    p.add_argument("--anchor-sizes", type=_parse_floats, default=(32.0, 64.0, 128.0, 256.0, 512.0), help="P3..P7, e.g. 16,32,64,128,256")
    p.add_argument("--min-size", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup-iters", type=int, default=200)
    p.add_argument("--loss", choices=["focal", "ce"], default="focal", help="focal (gamma, alpha) or alpha-balanced CE")
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--gamma", type=float, default=2.0)
    p.add_argument("--no-prior-init", action="store_true", help="class bias 0 instead of -log((1-pi)/pi)")
    p.add_argument("--low-quality-matches", action="store_true", help="torchvision's low-quality anchor matches")
    p.add_argument("--backbone-bn", choices=["frozen", "train"], default="frozen",
                   help="frozen BatchNorm (paper, for pretrained backbones) or trained (from scratch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--deploy", default=None, help="also write a deployable copy here: no training state, FP16 weights")

    p = sub.add_parser("eval", help="COCO AP of a model on a COCO-format dataset")
    p.add_argument("model", help=".onnx or .pt model")
    p.add_argument("--annotations", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--json", dest="json_path", default=None, help="write the metrics as one JSON object")
    p.add_argument("--max-images", type=_positive_int, default=None)
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch"])

    p = sub.add_parser("info", help="print what a model file says about itself")
    p.add_argument("model", help=".pt, .onnx or .engine model")

    p = sub.add_parser("export-triton", help="write a Triton Inference Server model repository entry")
    p.add_argument("model", help="retina_trt .engine (TensorRT backend) or .onnx (ONNX Runtime backend)")
    p.add_argument("--repo", required=True, help="model repository folder")
    p.add_argument("--name", default=None, help="model name (default: the file's stem)")
    p.add_argument("--version", type=_positive_int, default=1)
    p.add_argument("--instances", type=_positive_int, default=1, help="instances per device")
    p.add_argument("--kind", choices=["auto", "gpu", "cpu"], default="auto", help="auto: gpu for engines, cpu for ONNX")
    p.add_argument("--max-queue-delay-us", type=int, default=100, help="dynamic batching queue delay")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")

    p = sub.add_parser("export-deepstream", help="write a DeepStream nvinfer configuration (+ its ONNX)")
    p.add_argument("model", help="checkpoint (.pt), or an ONNX exported for DeepStream")
    p.add_argument("--out", required=True, help="folder for the config, labels.txt and model.onnx")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16",
                   help="precision prepared into model.onnx (FP32 postprocess); the config uses network-mode=0")
    p.add_argument("--calib-data", default=None, help="INT8 calibration images: folder, COCO .json or 'synthetic'")
    p.add_argument("--calib-images", type=_positive_int, default=512, help="INT8 calibration images (default 512)")
    p.add_argument("--cache-dir", default=None, help="precision cache (default $RETINA_TRT_CACHE or ~/.cache/retina_trt)")
    p.add_argument("--batch", type=_positive_int, default=1, help="nvinfer batch-size")
    p.add_argument("--input-size", type=_parse_size, default=None, help="fixed HEIGHTxWIDTH of the export")
    p.add_argument("--engine", default=None, help="a retina_trt engine built from the DeepStream ONNX (model.plan)")

    p = sub.add_parser(
        "bench",
        help="latency benchmark (trtexec-style statistics, per-stage times, paper and torchvision comparisons)",
    )
    p.add_argument("model", help=".pt/.pth checkpoint (exported per scale), .onnx or .engine")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch", "tensorrt"],
                   help="for a checkpoint: onnxruntime (default, exported per scale) or torch")
    p.add_argument("--scale", type=_parse_ints, default=None, help="shorter side(s), e.g. 400,600,800 (checkpoints)")
    p.add_argument("--batch", type=_parse_ints, default=(1,), help="batch size(s), e.g. 1,4 (default 1)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (default 2)")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--iterations", type=_positive_int, default=None, help="timed iterations (default 20)")
    timing.add_argument("--duration", type=float, default=None, help="timed seconds instead of iterations")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (ONNX Runtime / torch)")
    p.add_argument("--compare-paper", action="store_true", help="show the paper's Table 1e figure beside ours")
    p.add_argument("--compare", choices=["torchvision"], default=None, help="time torchvision's eager model too")
    p.add_argument("--cuda-graph", action="store_true", help="TensorRT: replay CUDA graphs")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16",
                   help="--backend tensorrt on a checkpoint: the engine precision per scale (default fp16)")
    p.add_argument("--out", default="bench-output/bench", help="report folder (bench.json, bench.md, bench.png)")
    p.add_argument("--json", dest="json_path", default=None, help="also write the JSON report here")

    p = sub.add_parser(
        "build-engine",
        help="prepare FP16/INT8 precision (calibration) and build a TensorRT engine",
        description="Export (--weights) or take an ONNX (--onnx), prepare its precision in the graph "
        "(FP16 tensors or INT8 Q/DQ, calibrated on the CPU with ONNX Runtime), then build a strongly "
        "typed TensorRT engine. --dry-run stops after the prepared ONNX and needs no TensorRT.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="checkpoint (.pt) to export first")
    src.add_argument("--onnx", help="an FP32 retina_trt ONNX, or an already prepared one")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                   help="default: fp16, or the precision of an already prepared --onnx")
    p.add_argument("--calib-data", default=None, help="image folder, COCO .json, or 'synthetic' (needed for int8)")
    p.add_argument("--calib-images", type=_positive_int, default=512, help="calibration images (default 512)")
    p.add_argument("--calib-method", choices=["entropy", "max", "percentile"], default="entropy")
    p.add_argument("--calib-percentile", type=float, default=99.999, help="for --calib-method percentile")
    p.add_argument("--calib-batch", type=_positive_int, default=8, help="images per calibration batch")
    p.add_argument("--calib-seed", type=int, default=0, help="calibration shuffling seed")
    p.add_argument("--cache-dir", default=None, help="precision cache (default $RETINA_TRT_CACHE or ~/.cache/retina_trt)")
    p.add_argument("--no-cache", action="store_true", help="recalibrate even if a cached model matches")
    p.add_argument("--batch", type=_parse_batch, default=None, help="MIN:OPT:MAX batch of the profile (default: the export's, 1:1:8)")
    p.add_argument("--input-size", type=_parse_size, default=None,
                   help="HEIGHTxWIDTH: the fixed input of the export (--weights), or the profile's opt size (dynamic --onnx)")
    p.add_argument("--dynamic-shapes", action="store_true", help="export with dynamic height and width (--weights)")
    p.add_argument("--min-input-size", type=_parse_size, default=None,
                   help="HEIGHTxWIDTH: smallest input of a dynamic-shape profile (default one size_divisible square)")
    p.add_argument("--max-input-size", type=_parse_size, default=None,
                   help="HEIGHTxWIDTH: largest input of a dynamic-shape profile (default max_size x max_size)")
    p.add_argument("--workspace", type=_positive_int, default=4096, help="builder workspace in MiB (default 4096)")
    p.add_argument("--opt-level", type=int, choices=range(6), default=3, help="builder optimization level (default 3)")
    p.add_argument("--timing-cache", default=None, help="timing cache file, loaded if present and saved")
    p.add_argument("--nms", choices=NMS_CHOICES, default=None,
                   help="NMS of the export (--weights); default: what the TensorRT used can build "
                   "(graph for TensorRT-RTX, onnx for TensorRT 10/11)")
    p.add_argument("--tensorrt", choices=["auto", "tensorrt", "tensorrt_rtx"], default=None,
                   help="which TensorRT builds: tensorrt (10/11, needs the GPU it builds for), tensorrt_rtx "
                   "(TensorRT for RTX, builds without a GPU), auto (default: $RETINA_TRT_TENSORRT, else "
                   "whichever is installed, tensorrt first)")
    p.add_argument("--compute-capability", type=_parse_ccs, default=(),
                   help="TensorRT-RTX targets, e.g. 8.6,8.9 (default 8.0,8.6,8.9,12.0,12.1; 7.5 on request)")
    p.add_argument("--hardware-compat", choices=["none", "ampere_plus", "same_cc"], default="none")
    p.add_argument("--version-compat", action="store_true", help="runnable by later TensorRT versions of the same major")
    p.add_argument("--output", required=True, help="the .engine file to write")
    p.add_argument("--save-onnx", default=None, help="where the prepared ONNX goes (default <output stem>.<precision>.onnx)")
    p.add_argument("--dry-run", action="store_true", help="stop after the prepared ONNX; print the build plan (no TensorRT needed)")
    return parser


def _cmd_export(args: argparse.Namespace) -> int:
    from retina_trt.export.onnx_export import export_onnx

    path = export_onnx(
        args.weights,
        args.output,
        nms=args.nms,
        batch=args.batch,
        input_size=args.input_size,
        dynamic_shapes=args.dynamic_shapes,
        opset=args.opset,
        simplify=not args.no_simplify,
    )
    print(f"wrote {path}")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from retina_trt.runtime.cli_detect import run_detect

    return run_detect(args)


def _cmd_info(args: argparse.Namespace) -> int:
    from pathlib import Path

    path = Path(args.model)
    if path.suffix.lower() == ".onnx":
        from retina_trt.contract.onnx_metadata import read_metadata

        meta = read_metadata(path)
        print(f"{path}: retina_trt ONNX model ({meta.precision})")
        print(f"  export: {meta.export}")
        if meta.precision != "fp32":
            print(f"  precision: {json.dumps(meta.precision_info, sort_keys=True)}")
        print(f"  spec: {meta.spec.to_json(indent=2)}")
    elif path.suffix.lower() == ".engine":
        from retina_trt.contract.engine_file import read_engine_header
        from retina_trt.trt.build_report import format_summary
        from retina_trt.trt.compat import FLAVOUR_NAMES

        header = read_engine_header(path)
        targets = ", ".join(f"{a}.{b}" for a, b in header.targets)
        where = f"on {header.device_name}" if header.device_name else "without a GPU"
        print(f"{path}: retina_trt TensorRT engine ({header.precision}, nms={header.nms}, {header.plan_size / 1e6:.1f} MB plan)")
        print(f"  built with {FLAVOUR_NAMES[header.tensorrt_flavour]} {header.tensorrt_version} {where}; "
              f"runs on compute capability {targets}")  # fmt: skip
        summary = header.layer_precisions
        print(f"  layer precisions: {format_summary(summary) if summary else 'not recorded by this TensorRT'}")
        print(f"  onnx sha256: {header.onnx_sha256}")
        print(f"  build: {json.dumps(header.build, sort_keys=True)}")
        print(f"  export: {json.dumps(header.export, sort_keys=True)}")
        print(f"  spec: {header.spec.to_json(indent=2)}")
    else:
        from retina_trt.model.checkpoint import load_checkpoint

        model = load_checkpoint(path)
        print(f"{path}: RetinaNet checkpoint, {sum(p.numel() for p in model.parameters()):,} parameters")
        print(f"  spec: {model.spec.to_json(indent=2)}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from retina_trt.data.synthetic import SyntheticConfig, generate_dataset

    config = SyntheticConfig(
        min_height=args.height[0], max_height=args.height[1], min_width=args.width[0], max_width=args.width[1]
    )
    path = generate_dataset(args.out, num_images=args.images, seed=args.seed, split=args.split, config=config)
    print(f"wrote {args.images} images to {path.parent / args.split} and annotations to {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from retina_trt.data.coco import CocoDataset
    from retina_trt.spec import ModelSpec
    from retina_trt.train import TrainConfig, train
    from retina_trt.utils import check_output_file

    check_output_file(args.output, "--output")  # before loading data and training
    if args.deploy:
        check_output_file(args.deploy, "--deploy")
    dataset = CocoDataset.load(args.annotations, args.images)
    spec = ModelSpec(
        backbone=args.backbone,
        num_classes=len(dataset.class_names),
        class_names=dataset.class_names,
        fpn_channels=args.fpn_channels,
        head_norm=None if args.head_norm == "none" else args.head_norm,
        anchor_sizes=args.anchor_sizes,
        min_size=args.min_size,
        max_size=args.max_size,
    )
    config = TrainConfig(
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_iters=args.warmup_iters,
        loss=args.loss,
        alpha=args.alpha,
        gamma=args.gamma,
        prior_init=not args.no_prior_init,
        allow_low_quality_matches=args.low_quality_matches,
        backbone_bn=args.backbone_bn,
        seed=args.seed,
        save_every=args.save_every,
    )
    path = train(spec, dataset, args.output, config, resume=args.resume, init_from=args.init_from, num_threads=args.threads)
    print(f"wrote {path}")
    if args.deploy:
        from retina_trt.train import export_weights

        print(f"wrote {export_weights(path, args.deploy, fp16=True)} (FP16 weights, no training state)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from retina_trt.evaluate import evaluate, format_table, write_json

    metrics = evaluate(args.model, args.annotations, args.images, max_images=args.max_images, backend=args.backend)
    print(format_table(metrics))
    print(f"{metrics['images']} images, {metrics['detections']} detections, {metrics['failed_images']} unreadable")
    if args.json_path:
        write_json(metrics, args.json_path)
    return 0


def _cmd_export_triton(args: argparse.Namespace) -> int:
    from retina_trt.export.triton import export_triton

    path = export_triton(args.model, args.repo, name=args.name, version=args.version, instances=args.instances,
                         kind=args.kind, max_queue_delay_us=args.max_queue_delay_us, overwrite=args.overwrite)  # fmt: skip
    print(f"wrote {path} (config.pbtxt, {args.version}/, labels.txt)")
    return 0


def _cmd_export_deepstream(args: argparse.Namespace) -> int:
    from retina_trt.export.deepstream import export_deepstream

    path = export_deepstream(args.model, args.out, precision=args.precision, batch=args.batch,
                             input_size=args.input_size, engine=args.engine, calib_data=args.calib_data,
                             calib_images=args.calib_images, cache_dir=args.cache_dir)  # fmt: skip
    print(f"wrote {path} (+ labels.txt, model.onnx); see its header about the bbox parser")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from retina_trt.bench.latency import benchmark
    from retina_trt.bench.report import write_report

    iterations = args.iterations if args.iterations or args.duration else 20
    report = benchmark(
        args.model, backend=args.backend, scales=args.scale, batch_sizes=args.batch, warmup_s=args.warmup,
        iterations=iterations, duration_s=args.duration, compare_paper=args.compare_paper,
        compare_torchvision=args.compare == "torchvision", num_threads=args.threads, cuda_graph=args.cuda_graph,
        precision=args.precision,
    )  # fmt: skip
    written = write_report(report, args.out, args.json_path)
    print(written["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def _cmd_build_engine(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from retina_trt.calibration import CalibrationConfig, prepare_precision
    from retina_trt.contract.onnx_metadata import read_metadata
    from retina_trt.trt import BuildOptions, build_engine, build_plan
    from retina_trt.trt.builder import check_nms_buildable, profile_shapes

    output = Path(args.output)
    if output.suffix.lower() != ".engine":
        raise ValueError(f"--output must end in .engine, got {output}")
    from retina_trt.utils import check_output_file

    check_output_file(output, "--output")  # before the export, calibration and build
    flavour = None if args.tensorrt in (None, "auto") else args.tensorrt
    options = BuildOptions(
        batch=args.batch,
        opt_hw=args.input_size if args.onnx else None,
        min_hw=args.min_input_size,
        max_hw=args.max_input_size,
        workspace_mib=args.workspace,
        optimization_level=args.opt_level,
        timing_cache=args.timing_cache,
        hardware_compat=args.hardware_compat,
        version_compatible=args.version_compat,
        verbose=args.verbose,
        flavour=flavour,
        compute_capabilities=tuple(args.compute_capability),
    )
    builder_flavour = flavour
    if not args.dry_run:
        # Fail before the slow steps when the build cannot happen here.
        from retina_trt.trt.compat import cuda_device, flavour_of, import_tensorrt

        builder_flavour = flavour_of(import_tensorrt(flavour))
        if builder_flavour == "tensorrt":
            cuda_device()
    nms = args.nms or DEFAULT_NMS_BY_FLAVOUR[builder_flavour or _installed_flavour()]
    if builder_flavour is not None:
        check_nms_buildable(nms, builder_flavour, f"--nms {nms}")
    if args.onnx and args.nms is not None:
        raise ValueError("--nms applies to --weights (the export); an ONNX keeps its own NMS")
    with tempfile.TemporaryDirectory(prefix="retina_trt_build_") as tmp:
        if args.weights:
            from retina_trt.export.onnx_export import export_onnx

            if args.dynamic_shapes and args.input_size:
                raise ValueError("give either --input-size or --dynamic-shapes, not both")
            source = export_onnx(
                args.weights, Path(tmp) / "model.onnx", nms=nms, batch=args.batch or (1, 1, 8),
                input_size=args.input_size, dynamic_shapes=args.dynamic_shapes,
            )  # fmt: skip
        else:
            source = Path(args.onnx)
            if args.dynamic_shapes:
                raise ValueError("--dynamic-shapes applies to --weights (the export); an ONNX keeps its own shapes")
        meta = read_metadata(source)
        if builder_flavour is not None:
            check_nms_buildable(meta.nms, builder_flavour, source)  # before the slow precision step
        if meta.input_size is not None and (args.min_input_size or args.max_input_size):
            raise ValueError(
                f"{source} has a fixed {meta.input_size[0]}x{meta.input_size[1]} input; --min-input-size and "
                "--max-input-size set the profile of dynamic-shape models (--dynamic-shapes, or a dynamic --onnx)"
            )
        if args.onnx and args.input_size and meta.input_size is not None:
            raise ValueError(
                f"{source} has a fixed {meta.input_size[0]}x{meta.input_size[1]} input; --input-size sets the "
                "profile of dynamic-shape exports only (re-export with --weights ... --input-size to change it)"
            )
        profile_shapes(meta, options)  # a bad profile fails here, before the slow precision step
        precision = args.precision or (meta.precision if meta.precision != "fp32" else "fp16")
        if meta.precision != "fp32":
            if precision != meta.precision:
                raise ValueError(
                    f"{source} is already prepared as {meta.precision}; build it with --precision "
                    f"{meta.precision}, or start from the FP32 export for {precision}"
                )
            prepared = source
            print(f"using the prepared {precision} ONNX {source}")
        else:
            save_onnx = Path(args.save_onnx) if args.save_onnx else output.with_name(f"{output.stem}.{precision}.onnx")
            calibration = CalibrationConfig(
                source=args.calib_data, num_images=args.calib_images, method=args.calib_method,
                percentile=args.calib_percentile, batch_size=args.calib_batch, seed=args.calib_seed,
            )  # fmt: skip
            result = prepare_precision(
                source, precision, save_onnx, calibration=calibration,
                cache_dir=args.cache_dir, use_cache=not args.no_cache,
            )  # fmt: skip
            prepared = result.path
            how = "reused from the precision cache" if result.reused else "prepared"
            print(f"{precision} ONNX {how}: {prepared}")
        plan = build_plan(prepared, options)
        print("build plan:")
        for key, value in plan.items():
            if isinstance(value, dict):
                print(f"  {key}:")
                for name, text in value.items():
                    print(f"    {name}: {text}")
            else:
                print(f"  {key}: {value}")
        if args.dry_run:
            print(f"dry run: no engine built; build it with: retina-trt build-engine --onnx {prepared} --output {output}")
            return 0
        path = build_engine(prepared, output, options)
    _describe_engine(path)
    return 0


def _installed_flavour() -> str:
    """The TensorRT flavour a build would use, without importing it (for --dry-run defaults)."""
    import importlib.util
    import os

    wanted = os.environ.get("RETINA_TRT_TENSORRT", "auto")
    if wanted in ("tensorrt", "tensorrt_rtx"):
        return wanted
    if importlib.util.find_spec("tensorrt") is None and importlib.util.find_spec("tensorrt_rtx") is not None:
        return "tensorrt_rtx"
    return "tensorrt"


def _describe_engine(path) -> None:
    """What was built: size, build time, targets, layer precisions, and whether it runs here."""
    from retina_trt.contract.engine_file import read_engine_header
    from retina_trt.trt.build_report import format_summary
    from retina_trt.trt.compat import FLAVOUR_NAMES

    header = read_engine_header(path)
    summary = header.layer_precisions
    targets = ", ".join(f"{a}.{b}" for a, b in header.targets)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, built in {header.build.get('build_seconds', 0):.1f} s by "
          f"{FLAVOUR_NAMES[header.tensorrt_flavour]} {header.tensorrt_version} for compute capability {targets})")  # fmt: skip
    print(f"  layer precisions: {format_summary(summary) if summary else 'not recorded by this TensorRT'}")
    for problem in header.build.get("precision_problems") or []:
        print(f"  precision warning: {problem}")
    if header.device_name is None:
        print("  no GPU here: this machine built the engine but cannot run it (TensorRT needs a GPU to "
              "deserialize and run engines); copy it to a machine with one of the target GPUs")  # fmt: skip


COMMANDS = {
    "export-triton": _cmd_export_triton,
    "export-deepstream": _cmd_export_deepstream,
    "bench": _cmd_bench,
    "build-engine": _cmd_build_engine,
    "export": _cmd_export,
    "detect": _cmd_detect,
    "data": _cmd_data,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "info": _cmd_info,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("onnxslim", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    previous = _stop_on_signals()
    try:
        return COMMANDS[args.command](args)
    except (RetinaTrtError, ValueError, OSError) as err:  # user errors; a TypeError is a bug: traceback
        if args.verbose:
            logger.exception("failed")
        print(f"retina-trt {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        print(f"retina-trt {args.command}: interrupted ({signal.Signals(signum).name}); finished outputs are kept",
              file=sys.stderr)  # fmt: skip
        return 128 + int(signum)
    finally:
        _restore_signals(previous)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: unwinds like Ctrl-C, so every output is finalized on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> dict | None:
    """SIGINT and SIGTERM raise :class:`Interrupted` once; later ones are ignored, so a second
    Ctrl-C during finalization cannot leave a half-written file. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    return previous


def _restore_signals(previous: dict | None) -> None:
    for sig, old in (previous or {}).items():
        signal.signal(sig, old)


if __name__ == "__main__":
    sys.exit(main())
