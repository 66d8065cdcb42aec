"""The reference postprocess (paper sec. 4.1; docs/export-and-contract.md), identical to torchvision's.

Per image and pyramid level: sigmoid the class logits, keep scores > ``score_thresh``, keep the
top ``topk_candidates`` over anchors x classes, decode with the box coder and clip to the
image. Levels are merged, class-aware NMS at ``nms_thresh`` is applied and the best
``detections_per_img`` are kept, highest score first. Every other path (ONNX graph, NMS plugin,
host postprocess of ``nms="none"`` exports) is tested against these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import nms

from retina_trt.model.box_coder import clip_boxes, decode_boxes
from retina_trt.spec import ModelSpec


def flatten_level(output: Tensor, num_values: int) -> Tensor:
    """Head output of one level to per-anchor rows.

    Args:
        output (Tensor[B, A*V, H, W]): class logits (V=K) or box deltas (V=4).
        num_values: V.

    Returns:
        Tensor[B, H*W*A, V]: rows ordered (y, x, anchor), as the anchors are.
    """
    batch, _, height, width = output.shape
    # (B, A*V, H, W) -> (B, A, V, H, W) -> (B, H, W, A, V) -> (B, H*W*A, V)
    output = output.view(batch, -1, num_values, height, width)
    return output.permute(0, 3, 4, 1, 2).reshape(batch, -1, num_values)


def select_candidates(
    logits_per_level: Sequence[Tensor],
    deltas_per_level: Sequence[Tensor],
    anchors_per_level: Sequence[Tensor],
    image_size: tuple[int, int],
    spec: ModelSpec,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pre-NMS candidates of one image, merged over levels.

    Args:
        logits_per_level: per level Tensor[H*W*A, K] class logits.
        deltas_per_level: per level Tensor[H*W*A, 4] box deltas.
        anchors_per_level: per level Tensor[H*W*A, 4] xyxy anchors.
        image_size: (H, W) of the valid image region boxes are clipped to.

    Returns:
        boxes (Tensor[N, 4] float32): xyxy, clipped; scores (Tensor[N]); labels (Tensor[N] int64).
    """
    num_classes = spec.num_classes
    all_boxes, all_scores, all_labels = [], [], []
    for logits, deltas, anchors in zip(logits_per_level, deltas_per_level, anchors_per_level):
        scores = torch.sigmoid(logits).flatten()
        keep = scores > spec.score_thresh
        scores = scores[keep]
        topk_idxs = torch.where(keep)[0]
        num_topk = min(spec.topk_candidates, int(topk_idxs.numel()))
        scores, idxs = scores.topk(num_topk)
        topk_idxs = topk_idxs[idxs]
        anchor_idxs = torch.div(topk_idxs, num_classes, rounding_mode="floor")
        labels = topk_idxs % num_classes
        boxes = decode_boxes(deltas[anchor_idxs], anchors[anchor_idxs], spec.box_coder_weights, spec.box_clamp)
        all_boxes.append(clip_boxes(boxes, image_size))
        all_scores.append(scores)
        all_labels.append(labels)
    return torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)


def batched_nms_exact(boxes: Tensor, scores: Tensor, labels: Tensor, nms_thresh: float) -> Tensor:
    """Class-aware greedy NMS with exact per-class IoU: indices of the kept boxes (any order).

    torchvision's ``batched_nms`` gives the same result when it runs per class (above 1000
    boxes on the CPU); at or below that it offsets each class's boxes by class x (max coordinate
    + 1) and runs one NMS, and the offset rounds float32 coordinates, which can flip a pair whose
    IoU is within rounding of ``nms_thresh``. This reference never offsets, so every NMS path
    (the in-graph NMS, the plugin kernels) can match it bit for bit.

    Args:
        boxes (Tensor[N, 4]): xyxy. scores (Tensor[N]). labels (Tensor[N] int64).
    """
    keep = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    for label in torch.unique(labels):
        index = torch.where(labels == label)[0]
        keep[index[nms(boxes[index], scores[index], nms_thresh)]] = True
    return torch.where(keep)[0]


def nms_per_image(
    boxes: Tensor, scores: Tensor, labels: Tensor, *, nms_thresh: float, detections_per_img: int
) -> dict[str, Tensor]:
    """Class-aware NMS, then the best ``detections_per_img`` (highest score first).

    Tie order (the contract every NMS path follows): candidates are taken by score, descending,
    and among equal scores the lower candidate index first, both for suppression and for the
    order of the output (so the cut at ``detections_per_img`` is defined). torchvision's ``nms``
    suppresses in that order (its sort is stable); the kept set is re-ordered here. IoU is
    float32, computed per class as torchvision's ``nms`` does (:func:`batched_nms_exact`).

    Args:
        boxes (Tensor[N, 4]): xyxy. scores (Tensor[N]). labels (Tensor[N] int64).

    Returns:
        dict with ``boxes`` (Tensor[D, 4]), ``scores`` (Tensor[D]), ``labels`` (Tensor[D] int64).
    """
    keep = batched_nms_exact(boxes, scores, labels, nms_thresh)
    keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices][:detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def postprocess_detections(
    logits_per_level: Sequence[Tensor],
    deltas_per_level: Sequence[Tensor],
    anchors_per_level: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    spec: ModelSpec,
) -> list[dict[str, Tensor]]:
    """Detections of a batch from flattened head outputs.

    Args:
        logits_per_level: per level Tensor[B, H*W*A, K].
        deltas_per_level: per level Tensor[B, H*W*A, 4].
        anchors_per_level: per level Tensor[H*W*A, 4] (shared by the padded batch).
        image_sizes: (H, W) of each image's valid region.

    Returns:
        per image a dict with ``boxes`` (xyxy, input pixels), ``scores``, ``labels`` (int64).
    """
    results = []
    for index, image_size in enumerate(image_sizes):
        boxes, scores, labels = select_candidates(
            [x[index] for x in logits_per_level],
            [x[index] for x in deltas_per_level],
            anchors_per_level,
            image_size,
            spec,
        )
        results.append(
            nms_per_image(
                boxes,
                scores,
                labels,
                nms_thresh=spec.nms_thresh,
                detections_per_img=spec.detections_per_img,
            )
        )
    return results


def postprocess_candidates(boxes: Tensor, scores: Tensor, classes: Tensor, spec: ModelSpec) -> list[dict[str, Tensor]]:
    """Finish the postprocess from merged candidates (the ``nms="none"`` export's outputs).

    Args:
        boxes (Tensor[B, N, 4]): decoded, clipped xyxy. scores (Tensor[B, N]): sigmoid scores,
            entries <= ``score_thresh`` are padding. classes (Tensor[B, N]): class ids.

    Returns:
        per image a dict as :func:`postprocess_detections` returns.
    """
    results = []
    for b in range(boxes.shape[0]):
        keep = scores[b] > spec.score_thresh
        results.append(
            nms_per_image(
                boxes[b][keep].float(),
                scores[b][keep].float(),
                classes[b][keep].long(),
                nms_thresh=spec.nms_thresh,
                detections_per_img=spec.detections_per_img,
            )
        )
    return results
