"""The reference NMS in numpy: the host postprocess of ``nms="none"`` outputs, for every backend,
without torch.

It is the same computation as ``retina_trt.model.postprocess.nms_per_image`` (torchvision's NMS
kernel run per class), bit for bit (tests/test_host_nms.py):

* per class, candidates are visited by score, descending; equal scores: lower index first;
* a visited, unsuppressed box suppresses each later box whose IoU with it, computed in float32
  as ``inter / (area_i + area_j - inter)``, is greater than ``nms_thresh`` compared in double;
* the kept boxes are ordered the same way and cut at ``detections_per_img``.

This tie order is the contract every NMS path keeps (docs/ARCHITECTURE.md, "Tie order").
"""

from __future__ import annotations

import numpy as np

from retina_trt.contract import RawDetections
from retina_trt.contract.boxes import box_iou
from retina_trt.spec import ModelSpec


def _nms(boxes: np.ndarray, scores: np.ndarray, nms_thresh: float) -> np.ndarray:
    """Indices kept by greedy NMS of one class (float32 boxes [N, 4], scores [N])."""
    order = np.argsort(-scores, kind="stable")
    ordered = boxes[order]
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        iou = box_iou(ordered[i : i + 1], ordered[i + 1 :])[0]
        suppressed[i + 1 :] |= iou.astype(np.float64) > nms_thresh
    return np.asarray(keep, dtype=np.int64)


def nms_per_image(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, *, nms_thresh: float, detections_per_img: int
) -> RawDetections:
    """Class-aware NMS, then the best ``detections_per_img``, highest score first (module docstring).

    Args:
        boxes: ndarray[N, 4] xyxy. scores: [N]. labels: [N] class ids.
    """
    boxes = np.ascontiguousarray(boxes, dtype=np.float32)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.zeros(len(scores), dtype=bool)
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        keep[index[_nms(boxes[index], scores[index], nms_thresh)]] = True
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(-scores[kept], kind="stable")][:detections_per_img]
    return RawDetections(boxes[kept], scores[kept], labels[kept])


def finish_candidates(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, spec: ModelSpec
) -> list[RawDetections]:
    """The host postprocess of ``nms="none"`` outputs (candidates boxes [B, N, 4], scores [B, N],
    classes [B, N]; scores <= ``spec.score_thresh`` are padding): per image, detections."""
    results = []
    for b in range(len(boxes)):
        valid = scores[b] > spec.score_thresh
        results.append(
            nms_per_image(
                boxes[b][valid],
                scores[b][valid],
                classes[b][valid],
                nms_thresh=spec.nms_thresh,
                detections_per_img=spec.detections_per_img,
            )
        )
    return results
