"""`make demo`: the main job end to end on this machine.

checkpoint -> ONNX export -> Detector (ONNX Runtime on the CPU; TensorRT where present) on a
few generated images and a generated video -> annotated outputs + JSON, and a summary.

Until the project ships a trained demo model, the checkpoint is a RetinaNet (ResNet-18 FPN)
with seeded random weights: the boxes it draws are meaningless, the pipeline is real.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from retina_trt import Detector, ModelSpec, RetinaNet, export_onnx, save_checkpoint
from retina_trt.runtime.preprocess import preprocess_batch


def make_scene(rng: np.random.Generator, height: int, width: int, shift: int = 0) -> np.ndarray:
    """A textured background with a few coloured shapes (HxWx3 uint8 BGR)."""
    image = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 4)
    for k in range(5):
        color = tuple(int(c) for c in rng.integers(30, 255, 3))
        x = int(40 + 110 * k + shift) % width
        y = int(height * (0.3 + 0.1 * (k % 3)))
        if k % 2:
            cv2.rectangle(image, (x, y), (x + 50, y + 70), color, -1)
        else:
            cv2.circle(image, (x, y), 30, color, -1)
    return image


def _matched(a, b, tol_px: float = 0.01) -> int:
    """How many detections of ``a`` have a same-class box in ``b`` within ``tol_px``."""
    count = 0
    for box, cls in zip(a.boxes_xyxy, a.class_ids):
        same = b.boxes_xyxy[b.class_ids == cls]
        count += bool(len(same)) and float(np.abs(same - box).max(axis=1).min()) <= tol_px
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo-output", help="folder for every output")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    stages: dict[str, float] = {}

    print("retina-trt demo")
    print("  model: RetinaNet ResNet-18 FPN, seeded random weights (no trained demo model yet:")
    print("         detections are meaningless; every stage below runs for real)")
    start = time.perf_counter()
    torch.manual_seed(0)
    spec = ModelSpec(backbone="resnet18", num_classes=5, fpn_channels=64, min_size=384, max_size=640,
                     class_names=("circle", "square", "triangle", "star", "ring"))
    model = RetinaNet(spec).eval()
    with torch.no_grad():  # spread the untrained logits so some boxes pass the threshold
        for module in [*model.head.cls.convs.modules(), *model.head.box.convs.modules()]:
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.normal_(module.weight, std=0.03)
        torch.nn.init.normal_(model.head.cls.predictor.weight, std=0.3)
        model.head.cls.predictor.bias.fill_(-6.0)
    checkpoint = save_checkpoint(model, out / "demo_model.pt")
    stages["checkpoint"] = time.perf_counter() - start

    start = time.perf_counter()
    onnx_path = export_onnx(model, out / "demo_model.onnx", nms="onnx", dynamic_shapes=True)
    stages["onnx export"] = time.perf_counter() - start

    has_trt = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
    if has_trt:
        print("  TensorRT and a GPU are present, but this version has no engine builder yet:")
    print("  runtime: ONNX Runtime on the CPU")

    image_paths = []
    for i, (h, w) in enumerate([(480, 640), (360, 640), (600, 400)]):
        path = inputs / f"scene{i}.jpg"
        cv2.imwrite(str(path), make_scene(rng, h, w))
        image_paths.append(path)
    video_path = inputs / "street.avi"
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (640, 360))
    for t in range(30):  # the same background, shapes moving right
        writer.write(make_scene(np.random.default_rng(7), 360, 640, shift=8 * t))
    writer.release()

    from retina_trt.cli import main as cli_main

    start = time.perf_counter()
    code = cli_main(["detect", str(onnx_path), *map(str, image_paths), str(video_path),
                     "--output", str(out / "detections"), "--min-score", "0.3"])
    stages["detect (3 images + 30 frames)"] = time.perf_counter() - start
    if code != 0:
        print("demo: detect failed", file=sys.stderr)
        return code

    # The same images through the PyTorch reference and ONNX Runtime: do they agree?
    with Detector(checkpoint) as ref, Detector(onnx_path) as det:
        images = [cv2.imread(str(p)) for p in image_paths]
        ours = det.predict_batch(images)
        theirs = ref.predict_batch(images)
        matched = sum(_matched(a, b) for a, b in zip(ours, theirs))
        total = sum(len(a) for a in ours)
        latency = det.timer.mean_ms()
    batch = preprocess_batch(images[:1], min_size=spec.min_size, max_size=spec.max_size, size_divisible=spec.size_divisible)

    summary = {
        "model": "resnet18-fpn, random weights",
        "runtime": "onnxruntime-cpu",
        "images": {p.name: len(d) for p, d in zip(image_paths, ours)},
        "onnx_vs_torch": {"detections": total, "matched_within_0.01px": matched},
        "latency_ms_per_call": {k: round(v, 1) for k, v in latency.items()},
        "network_input_first_image": list(batch.pixels.shape[1:3]),
        "stages_s": {k: round(v, 2) for k, v in stages.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print()
    print("summary")
    for name, count in summary["images"].items():
        print(f"  {name}: {count} detections")
    print(f"  ONNX Runtime vs PyTorch reference: {matched} of {total} detections match within 0.01 px")
    if matched < total:
        print("    (the rest are exact score ties, e.g. anchors over zero padding, whose order is arbitrary)")
    print("  latency per batch call (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in latency.items()))
    for name, seconds in stages.items():
        print(f"  {name}: {seconds:.1f} s")
    print(f"  outputs: {out.resolve()} (detections/: annotated images, video, JSONL; summary.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
