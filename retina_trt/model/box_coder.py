"""Box encoding and decoding (paper sec. 4, "Box Regression Subnet"; R-CNN parametrization).

Pure functions with the same operation order as torchvision's ``BoxCoder`` so both give the
same bits. ``weights`` are (wx, wy, ww, wh); ``clamp`` bounds dw/dh before ``exp``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_CLAMP = math.log(1000.0 / 16)


def decode_boxes(
    deltas: Tensor,
    anchors: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    clamp: float = DEFAULT_CLAMP,
) -> Tensor:
    """Apply regression ``deltas`` to ``anchors``.

    Args:
        deltas (Tensor[N, 4]): (dx, dy, dw, dh).
        anchors (Tensor[N, 4]): xyxy, pixels.

    Returns:
        Tensor[N, 4]: decoded boxes, xyxy, pixels (not clipped).
    """
    anchors = anchors.to(deltas.dtype)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    ctr_x = anchors[:, 0] + 0.5 * widths
    ctr_y = anchors[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0] / wx
    dy = deltas[:, 1] / wy
    dw = torch.clamp(deltas[:, 2] / ww, max=clamp)
    dh = torch.clamp(deltas[:, 3] / wh, max=clamp)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    half_w = 0.5 * (torch.exp(dw) * widths)
    half_h = 0.5 * (torch.exp(dh) * heights)
    return torch.stack((pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=1)


def encode_boxes(
    boxes: Tensor,
    anchors: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> Tensor:
    """Regression targets that turn ``anchors`` into ``boxes`` (inverse of :func:`decode_boxes`).

    Args:
        boxes (Tensor[N, 4]): ground-truth xyxy, pixels.
        anchors (Tensor[N, 4]): xyxy, pixels.

    Returns:
        Tensor[N, 4]: (dx, dy, dw, dh).
    """
    wx, wy, ww, wh = weights
    ex_w = anchors[:, 2] - anchors[:, 0]
    ex_h = anchors[:, 3] - anchors[:, 1]
    ex_x = anchors[:, 0] + 0.5 * ex_w
    ex_y = anchors[:, 1] + 0.5 * ex_h
    gt_w = boxes[:, 2] - boxes[:, 0]
    gt_h = boxes[:, 3] - boxes[:, 1]
    gt_x = boxes[:, 0] + 0.5 * gt_w
    gt_y = boxes[:, 1] + 0.5 * gt_h
    return torch.stack(
        (
            wx * (gt_x - ex_x) / ex_w,
            wy * (gt_y - ex_y) / ex_h,
            ww * torch.log(gt_w / ex_w),
            wh * torch.log(gt_h / ex_h),
        ),
        dim=1,
    )


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Clip xyxy ``boxes`` (Tensor[N, 4]) to an image of ``image_size`` (H, W)."""
    height, width = image_size
    x = boxes[:, 0::2].clamp(min=0, max=width)
    y = boxes[:, 1::2].clamp(min=0, max=height)
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)
