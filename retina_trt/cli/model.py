"""Commands on model files: ``export`` (checkpoint to ONNX) and ``info`` (what a file says about itself)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from retina_trt.argtypes import parse_batch, parse_size
from retina_trt.contract import CPU_PRECISIONS, NMS_CHOICES
from retina_trt.contract.engine_file import read_engine_header
from retina_trt.contract.onnx_metadata import read_metadata
from retina_trt.utils import printable


def register(sub) -> None:
    """Add this group's subcommands to the ``retina-trt`` parser."""
    p = sub.add_parser("export", help="export a checkpoint to ONNX (output contract, metadata)")
    p.add_argument("--weights", required=True, help="checkpoint: retina_trt .pt or torchvision state dict")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument(
        "--nms",
        choices=NMS_CHOICES,
        default="onnx",
        help="NMS in the graph (onnx: ONNX Runtime, TensorRT 10/11), exact NMS from plain operators "
        "(graph: every TensorRT, TensorRT-RTX included), on the host (none), the retina_trt NMS plugin "
        "(plugin) or TensorRT's EfficientNMS_TRT (efficient)",
    )
    p.add_argument("--batch", type=parse_batch, default=(1, 1, 8), help="MIN:OPT:MAX batch (default 1:1:8)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--input-size", type=parse_size, help="fixed HEIGHTxWIDTH, e.g. 800x1344")
    shape.add_argument("--dynamic-shapes", action="store_true", help="dynamic height and width")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("info", help="print what a model file says about itself")
    p.add_argument("model", help=".pt, .onnx or .engine model")
    p.add_argument(
        "--cpu-precision",
        default="auto",
        choices=CPU_PRECISIONS,
        help=".onnx: compile it with OpenVINO in this precision and report what each layer ran in",
    )
    p.add_argument("--json", action="store_true", help="the whole record (spec, export, precision, build) as JSON")
    p.set_defaults(run=_cmd_info)


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


def _openvino_line(path: Path, precision: str) -> str:
    """What each layer runs in under OpenVINO on this CPU (compiled here, from the cache if warm)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return 'not installed (pip install "retina-trt[openvino]") for the CPU per-layer report'
    from retina_trt.runtime.cpu import cpu_isa
    from retina_trt.runtime.openvino_backend import OpenVinoBackend, format_layer_precisions

    backend = OpenVinoBackend(path, precision=precision)
    try:
        report = format_layer_precisions(backend.layer_precisions())
        return f"on this CPU ({' '.join(cpu_isa()) or 'ISA unknown'}), precision {backend.precision}: {report}"
    finally:
        backend.close()


def _class_summary(names: tuple[str, ...], shown: int = 6) -> str:
    if all(n == f"class_{i}" for i, n in enumerate(names)):
        return f"{len(names)} classes (names not recorded: class_0..class_{len(names) - 1})"
    listed = ", ".join(printable(n) for n in names[:shown])
    return f"{len(names)} classes: {listed}" + (f", ... (+{len(names) - shown} more)" if len(names) > shown else "")


def _spec_rows(spec) -> list[tuple[str, str]]:
    return [
        (
            "model",
            f"{spec.backbone}-FPN{spec.fpn_channels}, {spec.num_head_convs} head convs"
            + (f", {spec.head_norm}" if spec.head_norm else ""),
        ),
        ("classes", _class_summary(spec.class_names)),
        ("resize", f"shorter side {spec.min_size}, longer at most {spec.max_size}, padded to {spec.size_divisible}"),
        (
            "postprocess",
            f"score > {spec.score_thresh:g}, top {spec.topk_candidates} per level, NMS IoU {spec.nms_thresh:g}, "
            f"{spec.detections_per_img} per image",
        ),
    ]


def _export_rows(info) -> list[tuple[str, str]]:
    size = "dynamic HxW" if info.input_size is None else f"{info.input_size[0]}x{info.input_size[1]}"
    rows = [("nms", info.nms), ("input", f"{size}, {info.input_format}")]
    if info.batch is not None:
        rows.append(("batch", f"{info.batch[0]}..{info.batch[2]} (opt {info.batch[1]})"))
    return rows


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    print(title)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


# long function: one printed row per property of the model file
def _cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.model)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        meta = read_metadata(path)
        if args.json:
            print(
                json.dumps(
                    {"spec": meta.spec.to_dict(), "export": meta.export, "precision": meta.precision_info},
                    indent=1,
                    sort_keys=True,
                )
            )
            return 0
        rows = [("precision", meta.precision), *_export_rows(meta.info), *_spec_rows(meta.spec)]
        if meta.precision != "fp32":
            info = meta.precision_info
            rows.append(
                (
                    "prepared",
                    ", ".join(f"{k} {info[k]}" for k in ("method", "percentile") if info.get(k))
                    + f" (calibration: {info.get('calibration', {}).get('source', 'none')})",
                )
            )
        rows.append(("OpenVINO", _openvino_line(path, args.cpu_precision)))
        _print_rows(f"{path}: retina_trt ONNX model", rows)
    elif suffix == ".engine":
        from retina_trt.trt.build_report import format_summary
        from retina_trt.trt.compat import FLAVOUR_NAMES

        header = read_engine_header(path)
        if args.json:
            print(
                json.dumps(
                    {
                        "spec": header.spec.to_dict(),
                        "export": header.export,
                        "build": header.build,
                        "precision": header.precision,
                        "onnx_sha256": header.onnx_sha256,
                    },
                    indent=1,
                    sort_keys=True,
                    default=str,
                )
            )
            return 0
        targets = ", ".join(f"{a}.{b}" for a, b in header.targets)
        where = f"on {printable(header.device_name)}" if header.device_name else "without a GPU"
        summary = header.layer_precisions
        build = header.build or {}
        rows = [
            ("precision", f"{header.precision}, nms={header.nms}, {header.plan_size / 1e6:.1f} MB plan"),
            ("built with", f"{FLAVOUR_NAMES[header.tensorrt_flavour]} {header.tensorrt_version} {where}"),
            ("runs on", f"compute capability {targets}"),
            ("layers", format_summary(summary) if summary else "precisions not recorded by this TensorRT"),
            (
                "build",
                ", ".join(f"{k} {printable(str(v))}" for k, v in sorted(build.items()) if v not in (None, "", [], {}))[
                    :300
                ],
            ),
            ("onnx sha256", str(header.onnx_sha256)),
            *_spec_rows(header.spec),
        ]
        _print_rows(f"{path}: retina_trt TensorRT engine", rows)
    else:
        from retina_trt.model.checkpoint import load_checkpoint

        model = load_checkpoint(path)
        if args.json:
            print(json.dumps({"spec": model.spec.to_dict()}, indent=1, sort_keys=True))
            return 0
        rows = [("parameters", f"{sum(p.numel() for p in model.parameters()):,}"), *_spec_rows(model.spec)]
        _print_rows(f"{path}: RetinaNet checkpoint", rows)
    return 0
