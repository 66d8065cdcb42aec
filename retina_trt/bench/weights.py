"""Seeded torchvision RetinaNet weights for benchmarks (no pretrained weights can be downloaded here).

  python -m retina_trt.bench.weights bench-output/r50_bench.pth [--version 1|2] [--depth 50]

Latency does not depend on the weight values except through the postprocess: with torchvision's
prior initialization no score passes 0.05 and NMS has nothing to do. These weights raise the
classification bias (-2.2, sigmoid 0.10) and spread the logits, so every level fills its top-1000
candidates and NMS keeps the full 300 detections: the postprocess does its worst-case work, in
ours and in torchvision's model alike.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retina_trt.utils import atomic_path


def make_torchvision_weights(path: str | Path, *, version: int = 1, seed: int = 0, cls_bias: float = -2.2) -> Path:
    import torch
    from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

    torch.manual_seed(seed)
    builder = retinanet_resnet50_fpn if version == 1 else retinanet_resnet50_fpn_v2
    model = builder(weights=None, weights_backbone=None).eval()
    with torch.no_grad():
        head = model.head.classification_head.cls_logits
        head.bias.fill_(cls_bias)
        torch.nn.init.normal_(head.weight, std=0.02)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--version", type=int, choices=(1, 2), default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.output.exists():
        print(f"{args.output} exists; keeping it")
        return 0
    print(f"wrote {make_torchvision_weights(args.output, version=args.version, seed=args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
