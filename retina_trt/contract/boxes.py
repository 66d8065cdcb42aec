"""Box maths in numpy, the one home of it: areas and pairwise IoU of xyxy boxes, used by the
reference NMS (``contract/nms.py``), the IoU tracker and the evaluation's error analysis.

The IoU is computed as NMS's contract states it, ``inter / (area_i + area_j - inter)`` in the
boxes' own dtype (float32 boxes: float32 maths), so the reference NMS stays bit-exact with
torchvision's kernel (tests/test_host_nms.py). A pair whose union is 0 (two empty boxes) has IoU 0:
it never suppresses and never matches.
"""

from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``boxes`` (ndarray[N, 4]: xyxy, pixels) -> ndarray[N], in the boxes' dtype."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of every pair: ``boxes1`` (ndarray[N, 4]) against ``boxes2`` (ndarray[M, 4]), both xyxy
    -> ndarray[N, M] (0 where the union is 0)."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where(union > 0, iou, 0)
