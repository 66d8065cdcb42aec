"""``build-engine``: weights or ONNX -> prepared precision -> TensorRT engine (or the dry-run
plan), through the one build pipeline (retina_trt/pipeline.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from retina_trt.argtypes import parse_batch, parse_ccs, parse_size, positive_int
from retina_trt.contract import CALIB_METHODS, NMS_CHOICES, PRECISIONS
from retina_trt.contract.engine_file import read_engine_header
from retina_trt.trt.compat import FLAVOURS, HARDWARE_COMPAT


# long function: argparse declarations of build-engine, one statement per flag
def register(sub) -> None:
    """Add this group's subcommands to the ``retina-trt`` parser."""
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
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="default: fp16, or the precision of an already prepared --onnx",
    )
    p.add_argument("--calib-data", default=None, help="image folder, COCO .json, or 'synthetic' (needed for int8)")
    p.add_argument("--calib-images", type=positive_int, default=512, help="calibration images (default 512)")
    p.add_argument("--calib-method", choices=CALIB_METHODS, default="entropy")
    p.add_argument("--calib-percentile", type=float, default=99.999, help="for --calib-method percentile")
    p.add_argument(
        "--calib-batch",
        type=positive_int,
        default=None,
        help="images per calibration batch (default: the largest up to 8 that fits in memory here)",
    )
    p.add_argument("--calib-seed", type=int, default=0, help="calibration shuffling seed")
    p.add_argument(
        "--cache-dir", default=None, help="precision cache (default $RETINA_TRT_CACHE or ~/.cache/retina_trt)"
    )
    p.add_argument("--no-cache", action="store_true", help="recalibrate even if a cached model matches")
    p.add_argument(
        "--batch",
        type=parse_batch,
        default=None,
        help="MIN:OPT:MAX batch of the profile (default: the export's, 1:1:8)",
    )
    p.add_argument(
        "--input-size",
        type=parse_size,
        default=None,
        help="HEIGHTxWIDTH: the fixed input of the export (--weights), or the profile's opt size (dynamic --onnx)",
    )
    p.add_argument("--dynamic-shapes", action="store_true", help="export with dynamic height and width (--weights)")
    p.add_argument(
        "--min-input-size",
        type=parse_size,
        default=None,
        help="HEIGHTxWIDTH: smallest input of a dynamic-shape profile (default one size_divisible square)",
    )
    p.add_argument(
        "--max-input-size",
        type=parse_size,
        default=None,
        help="HEIGHTxWIDTH: largest input of a dynamic-shape profile (default max_size x max_size)",
    )
    p.add_argument("--workspace", type=positive_int, default=4096, help="builder workspace in MiB (default 4096)")
    p.add_argument("--opt-level", type=int, choices=range(6), default=3, help="builder optimization level (default 3)")
    p.add_argument("--timing-cache", default=None, help="timing cache file, loaded if present and saved")
    p.add_argument(
        "--nms",
        choices=NMS_CHOICES,
        default=None,
        help="NMS of the export (--weights); default: what the TensorRT used can build "
        "(graph for TensorRT-RTX, onnx for TensorRT 10/11)",
    )
    p.add_argument(
        "--tensorrt",
        choices=("auto", *FLAVOURS),
        default=None,
        help="which TensorRT builds: tensorrt (10/11, needs the GPU it builds for), tensorrt_rtx "
        "(TensorRT for RTX, builds without a GPU), auto (default: $RETINA_TRT_TENSORRT, else "
        "whichever is installed, tensorrt first)",
    )
    p.add_argument(
        "--compute-capability",
        type=parse_ccs,
        default=(),
        help="TensorRT-RTX targets, e.g. 8.6,8.9 (default 8.0,8.6,8.9,12.0,12.1; 7.5 on request, "
        "for --nms none: graph NMS does not build there)",
    )
    p.add_argument("--hardware-compat", choices=tuple(HARDWARE_COMPAT), default="none")
    p.add_argument(
        "--version-compat", action="store_true", help="runnable by later TensorRT versions of the same major"
    )
    p.add_argument("--output", required=True, help="the .engine file to write")
    p.add_argument(
        "--save-onnx", default=None, help="where the prepared ONNX goes (default <output stem>.<precision>.onnx)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="stop after the prepared ONNX; print the build plan (no TensorRT needed)"
    )
    p.set_defaults(run=_cmd_build_engine)


def _cmd_build_engine(args: argparse.Namespace) -> int:
    from retina_trt.calibration import CalibrationConfig
    from retina_trt.pipeline import BuildRequest, run_build
    from retina_trt.trt import BuildOptions

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
        flavour=None if args.tensorrt in (None, "auto") else args.tensorrt,
        compute_capabilities=tuple(args.compute_capability),
    )
    calibration = CalibrationConfig(
        source=args.calib_data,
        num_images=args.calib_images,
        method=args.calib_method,
        percentile=args.calib_percentile,
        batch_size=args.calib_batch,
        seed=args.calib_seed,
    )
    request = BuildRequest(
        output=Path(args.output),
        weights=args.weights,
        onnx=args.onnx,
        precision=args.precision,
        nms=args.nms,
        export_batch=args.batch or (1, 1, 8),
        input_size=args.input_size,
        dynamic_shapes=args.dynamic_shapes,
        options=options,
        calibration=calibration,
        save_onnx=args.save_onnx,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        dry_run=args.dry_run,
    )
    result = run_build(request, say=print)
    print("build plan:")
    for key, value in result.plan.items():
        if isinstance(value, dict):
            print(f"  {key}:")
            for name, text in value.items():
                print(f"    {name}: {text}")
        else:
            print(f"  {key}: {value}")
    if result.engine is None:
        print(
            f"dry run: no engine built; build it with: retina-trt build-engine --onnx {result.prepared} --output "
            f"{args.output}"
        )
        return 0
    _describe_engine(result.engine)
    return 0


def _describe_engine(path) -> None:
    """What was built: size, build time, targets, layer precisions, and whether it runs here."""
    from retina_trt.trt.build_report import format_summary
    from retina_trt.trt.compat import FLAVOUR_NAMES

    header = read_engine_header(path)
    summary = header.layer_precisions
    targets = ", ".join(f"{a}.{b}" for a, b in header.targets)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, built in {header.build.get('build_seconds', 0):.1f} s by "
        f"{FLAVOUR_NAMES[header.tensorrt_flavour]} {header.tensorrt_version} for compute capability {targets})"
    )
    print(f"  layer precisions: {format_summary(summary) if summary else 'not recorded by this TensorRT'}")
    for problem in header.build.get("precision_problems") or []:
        print(f"  precision warning: {problem}")
    if header.device_name is None:
        print(
            "  no GPU here: this machine built the engine but cannot run it (TensorRT needs a GPU to "
            "deserialize and run engines); copy it to a machine with one of the target GPUs"
        )
