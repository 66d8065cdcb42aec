"""The paper's loss claims at small scale (Table 1a/1b and sec. 4.1 "Network Initialization").

Trains the same small RetinaNet three times on the same data and budget and evaluates each:

  (a) alpha-balanced CE, alpha=0.75, gamma=0, prior initialization   (paper: 31.1 AP)
  (b) focal loss, gamma=2, alpha=0.25, prior initialization          (paper: 34.0 AP)
  (c) CE (alpha=0.75, gamma=0) without the prior initialization      (paper: diverges)

Gradient clipping is off for all three, as in the paper, so that a divergence shows. Results
are reported as measured, beside the paper's figures (ResNet-50-FPN, COCO, 90k iterations).

The backbone trains from scratch (no ImageNet weights here), so its BatchNorm layers are trained
(``backbone_bn="train"``, as for the demo model): with the paper's frozen BatchNorm a random
backbone barely learns, and both (a) and (b) ended at AP 0.4 after 2000 iterations.

  python -m retina_trt.bench.paper_claims --iterations 1500 --image-size 128 --out bench-output/paper_claims

It generates its own synthetic data under --out (train: seed 0, val: seed 1) at --image-size, with
anchors scaled to it (image_size/16 ... image_size on P3..P7).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from retina_trt.data.coco import CocoDataset
from retina_trt.data.synthetic import SyntheticConfig, generate_dataset
from retina_trt.evaluate import evaluate
from retina_trt.spec import ModelSpec
from retina_trt.train import TrainConfig, train
from retina_trt.utils import atomic_path

logger = logging.getLogger(__name__)

VARIANTS = {
    "a_ce_alpha0.75": {"loss": "ce", "alpha": 0.75, "prior_init": True, "paper": "31.1 AP (Table 1a, alpha=.75)"},
    "b_focal_g2_a0.25": {
        "loss": "focal",
        "alpha": 0.25,
        "gamma": 2.0,
        "prior_init": True,
        "paper": "34.0 AP (Table 1b, gamma=2, alpha=.25)",
    },
    "c_ce_no_prior": {
        "loss": "ce",
        "alpha": 0.75,
        "prior_init": False,
        "paper": "diverges (sec. 4.1, Network Initialization)",
    },
}


# long function: the three trainings of the same budget side by side
def run(
    out: Path, *, iterations: int, batch_size: int, lr: float, image_size: int, train_images: int, val_images: int
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    config = SyntheticConfig(min_height=image_size, max_height=image_size, min_width=image_size, max_width=image_size)
    generate_dataset(data, num_images=train_images, seed=0, split="train", config=config)
    generate_dataset(data, num_images=val_images, seed=1, split="val", config=config)
    train_set = CocoDataset.load(data / "instances_train.json", data / "train")
    spec = ModelSpec(
        backbone="resnet18",
        num_classes=len(train_set.class_names),
        class_names=train_set.class_names,
        fpn_channels=64,
        head_norm="group_norm",
        anchor_sizes=tuple(image_size / 2**k for k in (4, 3, 2, 1, 0)),
        min_size=image_size,
        max_size=image_size,
        size_divisible=min(128, image_size),
    )
    results = {}
    for name, variant in VARIANTS.items():
        options = {k: v for k, v in variant.items() if k != "paper"}
        config = TrainConfig(
            iterations=iterations,
            batch_size=batch_size,
            lr=lr,
            warmup_iters=min(100, iterations // 5),
            clip_grad_norm=None,
            allow_low_quality_matches=True,
            backbone_bn="train",
            save_every=max(1, iterations),
            **options,
        )
        checkpoint = out / f"{name}.pt"
        started = time.perf_counter()
        entry = {"paper": variant["paper"], "config": options}
        try:
            train(spec, train_set, checkpoint, config)
            entry["diverged"] = False
            metrics = evaluate(checkpoint, data / "instances_val.json", data / "val")
            entry.update({k: metrics[k] for k in ("AP", "AP50", "AP75")})
        except FloatingPointError as err:
            entry.update({"diverged": True, "detail": str(err), "AP": None, "AP50": None, "AP75": None})
        entry["train_minutes"] = round((time.perf_counter() - started) / 60, 1)
        results[name] = entry
        logger.info("%s: %s", name, entry)
    report = {
        "iterations": iterations,
        "batch_size": batch_size,
        "lr": lr,
        "image_size": image_size,
        "train_images": train_images,
        "val_images": val_images,
        "backbone_bn": "train",
        "clip_grad_norm": None,
        "spec": spec.to_dict(),
        "results": results,
    }
    with atomic_path(out / "paper_claims.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    with atomic_path(out / "paper_claims.md") as tmp:
        tmp.write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [
        f"Same budget for each: {report['iterations']} iterations x {report['batch_size']} images, lr {report['lr']}, "
        f"ResNet-18 FPN-64 (GroupNorm heads) at {report.get('image_size', '?')} px, synthetic shapes "
        f"({report.get('train_images', '?')} train / {report.get('val_images', '?')} held-out images); "
        "backbone BatchNorm trained (from scratch), low-quality matches, no gradient clipping.",
        "",
        "| variant | diverged | AP | AP50 | AP75 | paper (R50-FPN, COCO) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in report["results"].items():

        def pct(v):
            return "—" if v is None else f"{100 * v:.1f}"

        lines.append(
            f"| {name} | {'yes' if r['diverged'] else 'no'} | {pct(r['AP'])} | {pct(r['AP50'])} | "
            f"{pct(r['AP75'])} | {r['paper']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=Path("bench-output/paper_claims"), type=Path)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--val-images", type=int, default=300)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = run(
        args.out,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        image_size=args.image_size,
        train_images=args.train_images,
        val_images=args.val_images,
    )
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
