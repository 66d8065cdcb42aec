"""``error-analysis``: where a detector loses AP on a COCO-format set (``retina_trt/analysis.py``)."""

from __future__ import annotations

import argparse
import json

from retina_trt.argtypes import positive_int, score
from retina_trt.spec import ModelSpec


def _anchor_sizes(text: str) -> tuple[float, ...]:
    levels = len(ModelSpec().anchor_sizes)
    try:
        sizes = tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err
    if len(sizes) != levels or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"needs {levels} positive sizes (P3..P7), got {text!r}")
    return sizes


def register(sub) -> None:
    """Add this group's subcommands to the ``retina-trt`` parser."""
    p = sub.add_parser(
        "error-analysis",
        help="where a model loses AP: per-class AP, confusions, worst images, anchor coverage, training gap",
    )
    p.add_argument("model", help=".onnx, .engine or .pt model")
    p.add_argument("--annotations", required=True, help="held-out instances_*.json")
    p.add_argument("--images", required=True, help="held-out image folder")
    p.add_argument("--out", required=True, help="folder for analysis.json and analysis.md")
    p.add_argument("--min-score", type=score, default=0.3, help="detections counted in the confusions (default 0.3)")
    p.add_argument(
        "--anchor-sizes",
        type=_anchor_sizes,
        action="append",
        default=[],
        metavar="S3,S4,S5,S6,S7",
        help="alternative anchor sizes to compare with the model's own (repeatable)",
    )
    p.add_argument("--train-annotations", help="training set annotations: report training AP beside held-out AP")
    p.add_argument("--train-images", help="training set image folder (with --train-annotations)")
    p.add_argument("--train-max-images", type=positive_int, default=300)
    p.set_defaults(run=_cmd_error_analysis)


def _cmd_error_analysis(args: argparse.Namespace) -> int:
    from retina_trt.analysis import analyse, generalization_gap, markdown
    from retina_trt.data.coco import CocoDataset
    from retina_trt.utils import atomic_path, check_output_folder, refuse_overlap

    if bool(args.train_annotations) != bool(args.train_images):
        raise ValueError("--train-annotations and --train-images go together")
    out = check_output_folder(args.out, "--out")  # before the work, not after it
    refuse_overlap(
        [("--out", out / "analysis.json"), ("--out", out / "analysis.md")],
        [args.model, args.annotations, args.train_annotations],
        folders=[args.images, args.train_images],
    )
    if args.train_annotations:
        CocoDataset.load(args.train_annotations, args.train_images)  # a bad training set fails now, not later
    report = analyse(
        args.model, args.annotations, args.images, min_score=args.min_score, anchor_alternatives=args.anchor_sizes
    )
    if args.train_annotations:
        report["generalization"] = generalization_gap(
            args.model, args.train_annotations, args.train_images, report["AP"], max_images=args.train_max_images
        )
    with atomic_path(out / "analysis.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    text = markdown(report)
    with atomic_path(out / "analysis.md") as tmp:
        tmp.write_text(text)
    print(text)
    return 0
