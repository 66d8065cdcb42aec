"""Where a detector loses AP on a COCO-format set (issue #17, point 2): per-class AP, AP by object
size, the confusion between classes, the worst images, how well the anchors cover the objects
and, given training images, the gap between training and held-out AP.

  retina-trt error-analysis MODEL --annotations A.json --images DIR --out DIR [--min-score 0.3]
      [--anchor-sizes 12,24,48,96,192 ...] [--train-annotations T.json --train-images DIR [--train-max-images 300]]

Per-class AP and AP by size come from COCO's own evaluation (faster-coco-eval). The confusion
matrix matches each ground-truth box to the detection (score >= ``min_score``) of any class with
the highest IoU >= 0.5: the row is the true class, the column the detected one, or "missed".
Anchor coverage places the model's anchors (and each ``--anchor-sizes`` alternative) on every
image's network input and reports, per ground-truth box, the best anchor IoU and how many anchors
reach IoU 0.5 (the positives the training loss sees), overall and for small objects (< 32 px).
The training-set AP (:func:`generalization_gap`) against the held-out AP tells memorization from
underfitting: a large gap says more data or augmentation, a small one more capacity or training.
The command (``cli/analysis.py``) writes ``analysis.json`` and ``analysis.md``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.contract.boxes import box_iou
from retina_trt.data.coco import CocoDataset
from retina_trt.evaluate import category_mapping, evaluate
from retina_trt.image import read_image, resize_scale, resized_shape
from retina_trt.runtime.detector import Detector
from retina_trt.spec import ModelSpec


# long function: one pass over the evaluation set filling every table of the report
def analyse(
    model: str | Path,
    annotations: str | Path,
    images: str | Path,
    *,
    min_score: float = 0.3,
    anchor_alternatives: Sequence[tuple[float, ...]] = (),
) -> dict[str, Any]:
    """The report: AP, per-class AP, AP by size, confusion, worst images, and the anchor coverage of
    the model's anchors and of each of ``anchor_alternatives`` (see :func:`anchor_coverage`)."""
    from faster_coco_eval import COCO, COCOeval_faster

    dataset = CocoDataset.load(annotations, images)
    results, per_image = [], []
    names = None
    with Detector(model) as det:
        spec = det.spec
        names = list(spec.class_names)
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
                overlaps = box_iou(gt_box[None], boxes)[0] if len(boxes) else np.zeros(0)
                if len(overlaps) and overlaps.max() >= 0.5:
                    predicted = int(classes[int(overlaps.argmax())])
                    confusion[true, predicted] += 1
                    found += predicted == true
                else:
                    confusion[true, -1] += 1
            per_image.append(
                {
                    "image": Path(record["file_name"]).name,
                    "objects": len(gt_labels),
                    "recall_at_min_score": round(found / len(gt_labels), 3) if len(gt_labels) else 1.0,
                    "detections_at_min_score": int(keep.sum()),
                }
            )
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
    by_size = {
        "small": round(float(stats[3]) * 100, 1),
        "medium": round(float(stats[4]) * 100, 1),
        "large": round(float(stats[5]) * 100, 1),
    }
    worst = sorted(per_image, key=lambda r: (r["recall_at_min_score"], -r["objects"]))[:10]
    coverage = [anchor_coverage(spec, dataset, sizes) for sizes in [None, *anchor_alternatives]]
    return {
        "model": str(model),
        "images": len(dataset),
        "AP": round(float(stats[0]) * 100, 1),
        "per_class_AP": per_class,
        "AP_by_size": by_size,
        "min_score": min_score,
        "classes": names,
        "confusion": confusion.tolist(),
        "worst_images": worst,
        "anchor_coverage": coverage,
    }


SMALL_SIDE = 32.0  # COCO's "small": area below 32 x 32


def anchor_coverage(
    spec: ModelSpec, dataset: CocoDataset, anchor_sizes: tuple[float, ...] | None = None
) -> dict[str, Any]:
    """How well the anchors of ``spec`` (with ``anchor_sizes`` instead of its own, if given) cover
    the ground truth of ``dataset`` on the network input (each image resized as the runtime does).

    Returns:
        dict: ``anchor_sizes``, ``objects``, ``small_objects``, ``covered`` and ``covered_small``
        (share of objects with an anchor at IoU >= 0.5), ``median_best_iou`` and
        ``positives_per_object`` (anchors at IoU >= 0.5 per object, as the loss counts them).
    """
    import torch  # heavy; only this report needs it
    from torchvision.ops import box_iou as torch_box_iou

    from retina_trt.model.anchors import anchors_per_level, feature_sizes_for

    if anchor_sizes is not None:
        if len(anchor_sizes) != len(spec.anchor_sizes) or min(anchor_sizes) <= 0:
            raise ValueError(
                f"--anchor-sizes needs {len(spec.anchor_sizes)} positive sizes (P3..P7), got {anchor_sizes}"
            )
        spec = spec.replace(anchor_sizes=tuple(float(s) for s in anchor_sizes))
    anchors: dict[tuple[int, int], torch.Tensor] = {}
    best, positives, sides = [], [], []
    for index in range(len(dataset)):
        boxes, _ = dataset.targets(index)
        if not len(boxes):
            continue
        record = dataset.images[index]
        if "height" in record and "width" in record:
            height, width = int(record["height"]), int(record["width"])
        else:
            height, width = read_image(dataset.image_path(index)).shape[:2]
        scale = resize_scale(height, width, min_size=spec.min_size, max_size=spec.max_size)
        h, w = resized_shape(height, width, scale)
        d = spec.size_divisible
        padded = (-(-h // d) * d, -(-w // d) * d)
        if padded not in anchors:
            anchors[padded] = torch.cat(anchors_per_level(spec, padded, feature_sizes_for(padded)))
        iou = torch_box_iou(torch.from_numpy(boxes * np.float32(scale)), anchors[padded])
        best.append(iou.max(1).values.numpy())
        positives.append((iou >= 0.5).sum(1).numpy())
        sides.append(np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)) * scale)
    if not best:
        raise ValueError(f"{dataset.annotation_path} has no ground-truth boxes to cover")
    best_iou, pos, side = np.concatenate(best), np.concatenate(positives), np.concatenate(sides)
    small = side < SMALL_SIDE
    return {
        "anchor_sizes": list(spec.anchor_sizes),
        "objects": int(len(side)),
        "small_objects": int(small.sum()),
        "covered": round(float((pos > 0).mean()), 3),
        "covered_small": round(float((pos[small] > 0).mean()), 3) if small.any() else None,
        "median_best_iou": round(float(np.median(best_iou)), 3),
        "positives_per_object": round(float(pos.mean()), 2),
    }


def generalization_gap(
    model: str | Path, annotations: str | Path, images: str | Path, heldout_ap: float, *, max_images: int = 300
) -> dict[str, Any]:
    """AP on (the first ``max_images`` of) the training set beside the held-out AP (both x 100)."""
    metrics = evaluate(model, annotations, images, max_images=max_images)
    train_ap = round(float(metrics["AP"]) * 100, 1)
    return {
        "train_images": metrics["images"],
        "train_AP": train_ap,
        "heldout_AP": heldout_ap,
        "gap": round(train_ap - heldout_ap, 1),
    }


def markdown(report: dict[str, Any]) -> str:
    names = report["classes"]
    lines = [
        f"AP {report['AP']} on {report['images']} images; by size: "
        + ", ".join(f"{k} {v}" for k, v in report["AP_by_size"].items()),
        "",
        "| class | AP |",
        "|---|---|",
    ]
    lines += [f"| {name} | {ap} |" for name, ap in sorted(report["per_class_AP"].items(), key=lambda kv: kv[1] or 0)]
    lines += [
        "",
        f"Confusion at score >= {report['min_score']} (rows: true class; columns: detected, IoU >= 0.5):",
        "",
        "| true \\ detected | " + " | ".join(names) + " | missed |",
        "|---" * (len(names) + 2) + "|",
    ]
    for name, row in zip(names, report["confusion"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "Worst images (recall at the score threshold):", ""]
    lines += [
        f"- {r['image']}: {r['objects']} objects, recall {r['recall_at_min_score']}" for r in report["worst_images"]
    ]
    if report.get("anchor_coverage"):
        lines += [
            "",
            "Anchor coverage (objects with an anchor at IoU >= 0.5 on the network input):",
            "",
            "| anchor sizes P3..P7 | covered | small covered | median best IoU | positives per object |",
            "|---|---|---|---|---|",
        ]
        for row in report["anchor_coverage"]:
            sizes = ",".join(f"{s:g}" for s in row["anchor_sizes"])
            lines.append(
                f"| {sizes} | {row['covered']:.1%} | {row['covered_small'] or 0:.1%} | "
                f"{row['median_best_iou']} | {row['positives_per_object']} |"
            )
    if report.get("generalization"):
        g = report["generalization"]
        lines += [
            "",
            f"Training-set AP {g['train_AP']} ({g['train_images']} training images) against held-out "
            f"AP {g['heldout_AP']}: gap {g['gap']}.",
        ]
    return "\n".join(lines) + "\n"
