"""Training losses (paper sec. 3, 4.1 and appendix A).

* :func:`sigmoid_focal_loss`: the alpha-balanced focal loss of eq. (5), from logits, in a
  numerically stable form: with x_t = x for positives and -x for negatives,
  CE = softplus(-x_t) and (1 - p_t)^gamma = exp(gamma * logsigmoid(-x_t)).
* :func:`focal_loss_star`: FL* of appendix A, -log(sigmoid(gamma * x_t + beta)) / gamma.
* :func:`match_anchors`: IoU >= 0.5 foreground, < 0.4 background, ignored between (sec. 4);
  optionally torchvision's low-quality matches (each ground truth keeps its best anchors).
* :func:`retinanet_loss`: focal loss over all non-ignored anchors plus smooth-L1 box loss on the
  foreground, both summed and normalized by the number of foreground anchors (sec. 4.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from retina_trt.model.box_coder import encode_boxes

IGNORE = -2
BACKGROUND = -1


def _signed_logits(logits: Tensor, targets: Tensor) -> Tensor:
    # x_t = x where t = 1, -x where t = 0 (targets are binary)
    return torch.where(targets > 0.5, logits, -logits)


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "sum",
) -> Tensor:
    """Alpha-balanced focal loss FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), eq. (5).

    Args:
        logits (Tensor[...]): raw class scores x.
        targets (Tensor[...]): binary labels (0 or 1), same shape.
        alpha: weight of positives (alpha_t = alpha for t=1, 1-alpha for t=0); None: no weight.
        gamma: focusing parameter; gamma=0 and alpha=None give binary cross entropy.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
    """
    x_t = _signed_logits(logits, targets)
    loss = F.softplus(-x_t)  # -log(p_t)
    if gamma:
        loss = loss * torch.exp(gamma * F.logsigmoid(-x_t))  # (1 - p_t)^gamma
    if alpha is not None:
        loss = loss * torch.where(targets > 0.5, alpha, 1.0 - alpha)
    return _reduce(loss, reduction)


def focal_loss_star(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma: float = 2.0,
    beta: float = 1.0,
    alpha: float | None = 0.25,
    reduction: str = "sum",
) -> Tensor:
    """FL* of appendix A: p*_t = sigmoid(gamma * x_t + beta), FL* = -log(p*_t) / gamma."""
    if gamma <= 0:
        raise ValueError(f"focal_loss_star needs gamma > 0, got {gamma}")
    x_t = _signed_logits(logits, targets)
    loss = F.softplus(-(gamma * x_t + beta)) / gamma
    if alpha is not None:
        loss = loss * torch.where(targets > 0.5, alpha, 1.0 - alpha)
    return _reduce(loss, reduction)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


def match_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    *,
    fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.4,
    allow_low_quality_matches: bool = False,
) -> Tensor:
    """Assign each anchor to a ground-truth box.

    Args:
        anchors (Tensor[N, 4]): xyxy. gt_boxes (Tensor[G, 4]): xyxy.

    Returns:
        Tensor[N] int64: index of the matched box, ``BACKGROUND`` (-1) or ``IGNORE`` (-2).
    """
    if gt_boxes.numel() == 0:
        return torch.full((anchors.shape[0],), BACKGROUND, dtype=torch.int64)
    iou = box_iou(gt_boxes, anchors)  # (G, N)
    best_iou, matches = iou.max(dim=0)
    result = matches.clone()
    result[best_iou < fg_iou_thresh] = IGNORE
    result[best_iou < bg_iou_thresh] = BACKGROUND
    if allow_low_quality_matches:
        best_per_gt = iou.max(dim=1, keepdim=True).values
        _, anchor_idx = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
        result[anchor_idx] = matches[anchor_idx]
    return result


def retinanet_loss(
    logits: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    targets: Sequence[dict[str, Tensor]],
    *,
    box_coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    smooth_l1_beta: float = 0.11,
    allow_low_quality_matches: bool = False,
) -> dict[str, Tensor]:
    """The RetinaNet training loss of a batch.

    Args:
        logits (Tensor[B, N, K]): class logits of all anchors (levels concatenated).
        deltas (Tensor[B, N, 4]): box deltas.
        anchors (Tensor[N, 4]): xyxy anchors in input pixels.
        targets: per image ``boxes`` (Tensor[G, 4] xyxy, input pixels) and ``labels``
            (Tensor[G] int64 in [0, K)).

    Returns:
        dict with ``classification``, ``box_regression`` and ``loss`` (their sum), each
        normalized by the number of foreground anchors in the batch (at least 1).
    """
    cls_losses, box_losses, num_foreground = [], [], 0
    num_classes = logits.shape[-1]
    for logits_i, deltas_i, target in zip(logits, deltas, targets):
        matched = match_anchors(anchors, target["boxes"], allow_low_quality_matches=allow_low_quality_matches)
        foreground = matched >= 0
        valid = matched != IGNORE
        num_foreground += int(foreground.sum())
        cls_target = torch.zeros_like(logits_i)
        if foreground.any():
            labels = target["labels"][matched[foreground]]
            if labels.min() < 0 or labels.max() >= num_classes:
                raise ValueError(f"target labels must be in [0, {num_classes}), got {labels.tolist()}")
            cls_target[foreground, labels] = 1.0
        cls_losses.append(sigmoid_focal_loss(logits_i[valid], cls_target[valid], alpha=alpha, gamma=gamma))
        if foreground.any():
            reg_target = encode_boxes(target["boxes"][matched[foreground]], anchors[foreground], box_coder_weights)
            box_losses.append(F.smooth_l1_loss(deltas_i[foreground], reg_target, beta=smooth_l1_beta, reduction="sum"))
    normalizer = max(1, num_foreground)
    cls_loss = torch.stack(cls_losses).sum() / normalizer
    box_loss = (torch.stack(box_losses).sum() if box_losses else deltas.sum() * 0) / normalizer
    return {"classification": cls_loss, "box_regression": box_loss, "loss": cls_loss + box_loss}
