"""COCO evaluation of any model the Detector runs (.pt, .onnx; .engine later), via faster-coco-eval.

Detections per image are capped at 100 as in COCO evaluation (``maxDets=100``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from retina_trt.data.coco import CocoDataset, DatasetError
from retina_trt.errors import ImageError
from retina_trt.runtime.detector import Detector
from retina_trt.utils import atomic_path

logger = logging.getLogger(__name__)

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
MAX_DETECTIONS = 100


def category_mapping(class_names: tuple[str, ...], dataset: CocoDataset) -> list[int]:
    """COCO category id of each model class: by name when the names match, else in id order."""
    by_name = dict(zip(dataset.class_names, dataset.category_ids))
    if all(name in by_name for name in class_names):
        return [by_name[name] for name in class_names]
    if len(class_names) != len(dataset.category_ids):
        raise DatasetError(
            f"the model has {len(class_names)} classes {list(class_names)[:6]}... but the annotations have "
            f"{len(dataset.category_ids)} categories {list(dataset.class_names)[:6]}...; evaluate on a dataset "
            "with the model's classes"
        )
    return list(dataset.category_ids)


def coco_metrics(
    annotations: str | os.PathLike | dict, results: list[dict[str, Any]], image_ids: list[int] | None = None
) -> dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl (fractions in [0, 1]) of COCO ``results`` with faster-coco-eval."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(str(annotations)) if not isinstance(annotations, dict) else COCO(annotations)
    if not results:
        return dict.fromkeys(METRICS, 0.0)
    dt = gt.loadRes(results)
    evaluator = COCOeval_faster(gt, dt, "bbox", print_function=lambda *a, **k: None)
    if image_ids is not None:
        evaluator.params.imgIds = list(image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: max(0.0, float(v)) for name, v in zip(METRICS, evaluator.stats[:6])}


def evaluate(
    model: str | os.PathLike | Detector,
    annotations: str | os.PathLike,
    images: str | os.PathLike,
    *,
    max_images: int | None = None,
    backend: str = "auto",
    precision: str | None = None,
) -> dict[str, Any]:
    """Run ``model`` over a COCO dataset and score it.

    Returns:
        dict with the six metrics, ``images`` (how many were evaluated), ``detections``,
        ``failed_images`` (unreadable images are skipped and counted), and ``backend`` and
        ``runs_in`` (the precision it ran in). ``precision``: OpenVINO's (auto, f32, bf16).
    """
    dataset = CocoDataset.load(annotations, images)
    det = model if isinstance(model, Detector) else Detector(model, backend=backend, precision=precision)
    categories = category_mapping(det.spec.class_names, dataset)
    count = len(dataset) if max_images is None else min(len(dataset), max(1, int(max_images)))
    results, image_ids, failed = [], [], 0
    for index in tqdm(range(count), desc="eval", unit="img", disable=None):
        record = dataset.images[index]
        try:
            dets = det(dataset.image_path(index))
        except ImageError as err:
            failed += 1
            logger.warning("skipped %s: %s", dataset.image_path(index), err)
            continue
        image_ids.append(int(record["id"]))
        results.extend(dets.to_coco(int(record["id"]), categories)[:MAX_DETECTIONS])  # best first
    metrics = coco_metrics(dataset.annotation_path, results, image_ids)
    return {
        **metrics,
        "images": len(image_ids),
        "detections": len(results),
        "failed_images": failed,
        "backend": det.backend,
        "runs_in": det.precision,
    }


def format_table(metrics: dict[str, Any]) -> str:
    """A one-row Markdown table of the metrics in percent."""
    header = "| " + " | ".join(METRICS) + " |"
    rule = "|" + "---|" * len(METRICS)
    row = "| " + " | ".join(f"{100 * metrics[m]:.1f}" for m in METRICS) + " |"
    return "\n".join([header, rule, row])


def write_json(metrics: dict[str, Any], path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, sort_keys=True))
    return Path(path)
