"""Commands on data and training: ``data synthetic``, ``train``, ``eval``."""

from __future__ import annotations

import argparse

from retina_trt.argtypes import parse_floats, parse_range, positive_int, score
from retina_trt.contract import BACKENDS, CPU_PRECISIONS
from retina_trt.spec import ModelSpec
from retina_trt.utils import check_output_file, refuse_overlap


# long function: argparse declarations of data, train and eval, one statement per flag
def register(sub) -> None:
    """Add this group's subcommands to the ``retina-trt`` parser."""
    p = sub.add_parser("data", help="datasets")
    data_sub = p.add_subparsers(dest="data_command", metavar="KIND", required=True)
    q = data_sub.add_parser("synthetic", help="generate the synthetic shapes dataset (COCO format)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--images", type=positive_int, required=True, help="number of images")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--split", default="train", help="split name: <out>/<split>/ and instances_<split>.json")
    q.add_argument("--height", type=parse_range, default=(256, 320), help="image height MIN:MAX (default 256:320)")
    q.add_argument("--width", type=parse_range, default=(256, 384), help="image width MIN:MAX (default 256:384)")
    q.add_argument(
        "--plain-fraction",
        type=score,
        default=0.0,
        help="share of images on a plain background (hard negatives; default 0)",
    )
    p.set_defaults(run=_cmd_data)

    p = sub.add_parser("train", help="train a RetinaNet on a COCO-format dataset (paper recipe, CPU-sized)")
    p.add_argument("--annotations", required=True, help="instances_*.json")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--output", required=True, help="checkpoint to write (and resume from with --resume)")
    p.add_argument("--resume", action="store_true", help="continue from --output's training state")
    p.add_argument(
        "--init-from",
        default=None,
        help="start from this checkpoint's weights (same model options) with a fresh optimizer and "
        "schedule: a second training stage or fine-tuning",
    )
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--fpn-channels", type=int, default=256)
    p.add_argument(
        "--head-norm", choices=["none", "group_norm"], default="none", help="subnet normalization (v2: group_norm)"
    )
    p.add_argument(
        "--anchor-sizes",
        type=parse_floats,
        default=(32.0, 64.0, 128.0, 256.0, 512.0),
        help="P3..P7, e.g. 16,32,64,128,256",
    )
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
    p.add_argument(
        "--backbone-bn",
        choices=["frozen", "train"],
        default="frozen",
        help="frozen BatchNorm (paper, for pretrained backbones) or trained (from scratch)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--deploy", default=None, help="also write a deployable copy here: no training state, FP16 weights")
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("eval", help="COCO AP of a model on a COCO-format dataset")
    p.add_argument("model", help=".onnx or .pt model")
    p.add_argument("--annotations", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--json", dest="json_path", default=None, help="write the metrics as one JSON object")
    p.add_argument("--max-images", type=positive_int, default=None)
    p.add_argument("--backend", default="auto", choices=[b for b in BACKENDS if b != "tensorrt"])
    p.add_argument(
        "--cpu-precision",
        default=None,
        choices=CPU_PRECISIONS,
        help="OpenVINO: precision of the layers the graph does not quantize (default auto)",
    )
    p.set_defaults(run=_cmd_eval)


def _cmd_data(args: argparse.Namespace) -> int:
    from retina_trt.data.synthetic import SyntheticConfig, generate_dataset

    config = SyntheticConfig(
        min_height=args.height[0],
        max_height=args.height[1],
        min_width=args.width[0],
        max_width=args.width[1],
        plain_fraction=args.plain_fraction,
    )
    path = generate_dataset(args.out, num_images=args.images, seed=args.seed, split=args.split, config=config)
    print(f"wrote {args.images} images to {path.parent / args.split} and annotations to {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from retina_trt.data.coco import CocoDataset
    from retina_trt.train import TrainConfig, train

    check_output_file(args.output, "--output")  # before loading data and training
    if args.deploy:
        check_output_file(args.deploy, "--deploy")
    outputs = [("--output", args.output), ("--deploy", args.deploy)]
    refuse_overlap(outputs, [args.annotations, args.init_from], folders=[args.images])
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
    path = train(
        spec, dataset, args.output, config, resume=args.resume, init_from=args.init_from, num_threads=args.threads
    )
    print(f"wrote {path}")
    if args.deploy:
        from retina_trt.train import write_deploy_checkpoint

        print(f"wrote {write_deploy_checkpoint(path, args.deploy, fp16=True)} (FP16 weights, no training state)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from retina_trt.evaluate import evaluate, format_table, write_json

    if args.json_path:
        check_output_file(args.json_path, "--json")  # before the evaluation
        refuse_overlap([("--json", args.json_path)], [args.model, args.annotations], folders=[args.images])
    metrics = evaluate(
        args.model,
        args.annotations,
        args.images,
        max_images=args.max_images,
        backend=args.backend,
        precision=args.cpu_precision,
    )
    print(format_table(metrics))
    print(
        f"{metrics['images']} images, {metrics['detections']} detections, {metrics['failed_images']} unreadable; "
        f"ran on {metrics['backend']} ({metrics['runs_in']})"
    )
    if args.json_path:
        write_json(metrics, args.json_path)
    return 0
