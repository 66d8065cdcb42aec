"""The ``retina-trt`` command.

User errors (bad paths, bad options, unreadable inputs) print one line and exit with code 2;
``-v`` adds the traceback. Heavy modules are imported inside the subcommands, so
``retina-trt --help`` loads neither torch nor any GPU library.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from retina_trt._version import __version__
from retina_trt.errors import RetinaTrtError

logger = logging.getLogger("retina_trt.cli")

EXIT_USAGE = 2


class UsageError(RetinaTrtError):
    """A command-line value is invalid."""


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
    parts = text.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 800x1344, got {text!r}") from err
    return height, width


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
    p.add_argument("--nms", choices=["onnx", "none"], default="onnx", help="NMS in the graph (onnx) or on the host (none)")
    p.add_argument("--batch", type=_parse_batch, default=(1, 1, 8), help="MIN:OPT:MAX batch (default 1:1:8)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--input-size", type=_parse_size, help="fixed HEIGHTxWIDTH, e.g. 800x1344")
    shape.add_argument("--dynamic-shapes", action="store_true", help="dynamic height and width")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")

    p = sub.add_parser("detect", help="detect objects in images, folders, globs and videos")
    p.add_argument("model", help=".onnx or .pt model")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, folders, globs or video files")
    p.add_argument("--output", required=True, help="folder for annotated outputs and JSON")
    p.add_argument("--min-score", type=_score, default=0.3, help="drop detections below (default 0.3)")
    p.add_argument("--json", action="store_true", help="one JSON file per image (default: one detections.jsonl)")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch"])
    p.add_argument("--no-draw", action="store_true", help="write JSON only, no annotated images/videos")
    p.add_argument("--max-frames", type=int, default=None, help="stop each video after N frames")

    p = sub.add_parser("info", help="print what a model file says about itself")
    p.add_argument("model", help=".onnx or .pt model")
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
        from retina_trt.export.metadata import read_metadata

        meta = read_metadata(path)
        print(f"{path}: retina_trt ONNX model")
        print(f"  export: {meta.export}")
        print(f"  spec: {meta.spec.to_json(indent=2)}")
    else:
        from retina_trt.model.checkpoint import load_checkpoint

        model = load_checkpoint(path)
        print(f"{path}: RetinaNet checkpoint, {sum(p.numel() for p in model.parameters()):,} parameters")
        print(f"  spec: {model.spec.to_json(indent=2)}")
    return 0


COMMANDS = {"export": _cmd_export, "detect": _cmd_detect, "info": _cmd_info}


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
    try:
        return COMMANDS[args.command](args)
    except (RetinaTrtError, ValueError, TypeError, FileNotFoundError) as err:
        if args.verbose:
            logger.exception("failed")
        print(f"retina-trt {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"retina-trt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
