"""Commands on model files: ``export`` (checkpoint to ONNX) and ``info`` (what a file says about itself)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from retina_trt.cli.args import parse_batch, parse_size
from retina_trt.contract import CPU_PRECISIONS, NMS_CHOICES
from retina_trt.contract.engine_file import read_engine_header
from retina_trt.contract.onnx_metadata import read_metadata


def register(sub) -> None:
    """Add this group's subcommands to the ``retina-trt`` parser."""
    p = sub.add_parser("export", help="export a checkpoint to ONNX (output contract, metadata)")
    p.add_argument("--weights", required=True, help="checkpoint: retina_trt .pt or torchvision state dict")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--nms", choices=NMS_CHOICES, default="onnx",
                   help="NMS in the graph (onnx: ONNX Runtime, TensorRT 10/11), exact NMS from plain operators "
                   "(graph: every TensorRT, TensorRT-RTX included), on the host (none), the retina_trt NMS plugin "
                   "(plugin) or TensorRT's EfficientNMS_TRT (efficient)")
    p.add_argument("--batch", type=parse_batch, default=(1, 1, 8), help="MIN:OPT:MAX batch (default 1:1:8)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--input-size", type=parse_size, help="fixed HEIGHTxWIDTH, e.g. 800x1344")
    shape.add_argument("--dynamic-shapes", action="store_true", help="dynamic height and width")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("info", help="print what a model file says about itself")
    p.add_argument("model", help=".pt, .onnx or .engine model")
    p.add_argument("--cpu-precision", default="auto", choices=CPU_PRECISIONS,
                   help=".onnx: compile it with OpenVINO in this precision and report what each layer ran in")
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
        return 'OpenVINO: not installed (pip install "retina-trt[openvino]") for the CPU per-layer report'
    from retina_trt.runtime.cpu import cpu_isa
    from retina_trt.runtime.openvino_backend import OpenVinoBackend, format_layer_precisions

    backend = OpenVinoBackend(path, precision=precision)
    try:
        report = format_layer_precisions(backend.layer_precisions())
        return f"OpenVINO on this CPU ({' '.join(cpu_isa()) or 'ISA unknown'}), precision {backend.precision}: {report}"
    finally:
        backend.close()


def _cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if path.suffix.lower() == ".onnx":
        meta = read_metadata(path)
        print(f"{path}: retina_trt ONNX model ({meta.precision})")
        print(f"  export: {meta.export}")
        if meta.precision != "fp32":
            print(f"  precision: {json.dumps(meta.precision_info, sort_keys=True)}")
        print(f"  spec: {meta.spec.to_json(indent=2)}")
        print(f"  {_openvino_line(path, args.cpu_precision)}")
    elif path.suffix.lower() == ".engine":
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
