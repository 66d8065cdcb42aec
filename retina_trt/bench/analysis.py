"""Where a detector loses AP on a COCO-format set (issue #17, point 2): per-class AP, AP by object
size, the confusion between classes, and the worst images.

  python -m retina_trt.bench.analysis MODEL --annotations A.json --images DIR --out DIR [--min-score 0.3]

Per-class AP and AP by size come from COCO's own evaluation (faster-coco-eval). The confusion
matrix matches each ground-truth box to the detection (score >= ``--min-score``) of any class with
the highest IoU >= 0.5: the row is the true class, the column the detected one, or "missed".
Writes ``analysis.json`` and ``analysis.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.data.coco import CocoDataset
from retina_trt.errors import RetinaTrtError
from retina_trt.evaluate import category_mapping
from retina_trt.runtime.detector import Detector
from retina_trt.utils import atomic_path


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def analyse(model: str | Path, annotations: str | Path, images: str | Path, *, min_score: float = 0.3) -> dict[str, Any]:
    from faster_coco_eval import COCO, COCOeval_faster

    dataset = CocoDataset.load(annotations, images)
    results, per_image = [], []
    names = None
    with Detector(model) as det:
        names = list(det.spec.class_names)
        categories = category_mapping(det.spec.class_names, dataset)
        model_index = {c: i for i, c in enumerate(categories)}  # COCO category id -> model class
        to_model = [model_index[c] for c in dataset.category_ids]  # dataset class -> model class
        confusion = np.zeros((len(names), len(names) + 1), dtype=np.int64)  # last column: missed
        for index in range(len(dataset)):
            record = dataset.images[index]
            dets = det(dataset.image_path(index))
            results.extend(dets.to_coco(int(record["id"]), categories)[:100])
            keep = dets.scores >= min_score
            boxes, classes = dets.boxes_xyxy[keep], dets.class_ids[keep]
            gt_boxes, gt_labels = dataset.targets(index)
            found = 0
            for gt_box, gt_label in zip(gt_boxes, gt_labels):
                true = to_model[int(gt_label)]
                overlaps = _iou(gt_box, boxes) if len(boxes) else np.zeros(0)
                if len(overlaps) and overlaps.max() >= 0.5:
                    predicted = int(classes[int(overlaps.argmax())])
                    confusion[true, predicted] += 1
                    found += predicted == true
                else:
                    confusion[true, -1] += 1
            per_image.append({"image": Path(record["file_name"]).name, "objects": len(gt_labels),
                              "recall_at_min_score": round(found / len(gt_labels), 3) if len(gt_labels) else 1.0,
                              "detections_at_min_score": int(keep.sum())})  # fmt: skip
    gt = COCO(str(dataset.annotation_path))
    evaluator = COCOeval_faster(gt, gt.loadRes(results), "bbox", print_function=lambda *a, **k: None)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall, classes, areas, max dets]
    order = list(evaluator.params.catIds)
    per_class = {}
    for name, category in zip(names, categories):
        p = precision[:, :, order.index(category), 0, -1]
        per_class[name] = round(float(np.mean(p[p > -1])) * 100, 1) if (p > -1).any() else None
    stats = evaluator.stats
    by_size = {"small": round(float(stats[3]) * 100, 1), "medium": round(float(stats[4]) * 100, 1),
               "large": round(float(stats[5]) * 100, 1)}  # fmt: skip
    worst = sorted(per_image, key=lambda r: (r["recall_at_min_score"], -r["objects"]))[:10]
    return {"model": str(model), "images": len(dataset), "AP": round(float(stats[0]) * 100, 1), "per_class_AP": per_class,
            "AP_by_size": by_size, "min_score": min_score, "classes": names,
            "confusion": confusion.tolist(), "worst_images": worst}  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    names = report["classes"]
    lines = [f"AP {report['AP']} on {report['images']} images; by size: " +
             ", ".join(f"{k} {v}" for k, v in report["AP_by_size"].items()), "",
             "| class | AP |", "|---|---|"]  # fmt: skip
    lines += [f"| {name} | {ap} |" for name, ap in sorted(report["per_class_AP"].items(), key=lambda kv: kv[1] or 0)]
    lines += ["", f"Confusion at score >= {report['min_score']} (rows: true class; columns: detected, IoU >= 0.5):", "",
              "| true \\ detected | " + " | ".join(names) + " | missed |", "|---" * (len(names) + 2) + "|"]  # fmt: skip
    for name, row in zip(names, report["confusion"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "Worst images (recall at the score threshold):", ""]
    lines += [f"- {r['image']}: {r['objects']} objects, recall {r['recall_at_min_score']}" for r in report["worst_images"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("model")
    cli.add_argument("--annotations", required=True)
    cli.add_argument("--images", required=True)
    cli.add_argument("--out", required=True)
    cli.add_argument("--min-score", type=float, default=0.3)
    args = cli.parse_args(argv)
    try:
        report = analyse(args.model, args.annotations, args.images, min_score=args.min_score)
    except (RetinaTrtError, ValueError, OSError) as err:
        print(f"retina_trt.bench.analysis: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "analysis.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    text = markdown(report)
    with atomic_path(out / "analysis.md") as tmp:
        tmp.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
