"""The postprocess of DESIGN.md sec. 4 as standard ONNX operators, appended to the traced network.

Per level: sigmoid, TopK over anchors x classes (K = min(topk_candidates, level size), so the
candidates are exactly the reference's once scores <= score_thresh are dropped), anchor/class
split, GatherND of the deltas, box decoding with the clamp, clipping to each image's valid
region (``image_sizes`` input). Levels are merged; then either the merged candidates are the
outputs (``nms="none"``) or class-aware ``NonMaxSuppression`` and a TopK of ``detections_per_img``
give the fixed-shape output contract (``nms="onnx"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retina_trt.export.graph import FLOAT, INT32, INT64, GraphBuilder
from retina_trt.model.anchors import anchors_per_level, base_anchors_per_level, feature_sizes_for
from retina_trt.spec import ModelSpec

CONTRACT_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
CANDIDATE_OUTPUTS = ("candidate_boxes", "candidate_scores", "candidate_classes")


def _level_anchors_dynamic(g: GraphBuilder, base: np.ndarray, cls_level: str, images: str) -> str:
    """Anchors of one level computed from the runtime shapes: Tensor[H*W*A, 4] float32."""
    height, width = g.shape_dim(cls_level, 1), g.shape_dim(cls_level, 2)  # int64 [1]
    stride_y = g.op("Div", [g.shape_dim(images, 1), height])  # padded size // feature size
    stride_x = g.op("Div", [g.shape_dim(images, 2), width])
    zero, one = g.const(0, np.int64), g.const(1, np.int64)
    xs = g.op("Mul", [g.op("Range", [zero, g.squeeze(width, [0]), one]), stride_x])  # [W]
    ys = g.op("Mul", [g.op("Range", [zero, g.squeeze(height, [0]), one]), stride_y])  # [H]
    grid = g.op("Concat", [height, width], axis=0)
    shift_x = g.op("Expand", [g.unsqueeze(xs, [0]), grid])  # [H, W]
    shift_y = g.op("Expand", [g.unsqueeze(ys, [1]), grid])  # [H, W]
    x3, y3 = g.unsqueeze(shift_x, [2]), g.unsqueeze(shift_y, [2])
    shifts = g.cast(g.op("Concat", [x3, y3, x3, y3], axis=2), FLOAT)  # [H, W, 4]
    shifts = g.reshape(shifts, [-1, 1, 4])
    # (H*W, 1, 4) + (1, A, 4) -> (H*W*A, 4)
    anchors = g.op("Add", [shifts, g.const(base.reshape(1, -1, 4), hint="base_anchors")])
    return g.reshape(anchors, [-1, 4])


def _decode_and_clip(
    g: GraphBuilder, deltas: str, anchors: str, image_hw: tuple[str, str], spec: ModelSpec
) -> str:
    """Box decoding (same operation order as box_coder.decode_boxes) and clipping: [B, k, 4]."""

    def part(x: str, i: int) -> str:  # [B, k, 4] -> [B, k, 1]
        return g.op("Gather", [x, g.const([i], np.int64)], axis=2)

    ax1, ay1, ax2, ay2 = (part(anchors, i) for i in range(4))
    d = [part(deltas, i) for i in range(4)]
    wx, wy, ww, wh = spec.box_coder_weights
    widths = g.op("Sub", [ax2, ax1])
    heights = g.op("Sub", [ay2, ay1])
    half = g.const(0.5)
    ctr_x = g.op("Add", [ax1, g.op("Mul", [half, widths])])
    ctr_y = g.op("Add", [ay1, g.op("Mul", [half, heights])])
    dx = g.op("Div", [d[0], g.const(wx)])
    dy = g.op("Div", [d[1], g.const(wy)])
    clamp = g.const(spec.box_clamp)
    dw = g.op("Min", [g.op("Div", [d[2], g.const(ww)]), clamp])
    dh = g.op("Min", [g.op("Div", [d[3], g.const(wh)]), clamp])
    pred_ctr_x = g.op("Add", [g.op("Mul", [dx, widths]), ctr_x])
    pred_ctr_y = g.op("Add", [g.op("Mul", [dy, heights]), ctr_y])
    half_w = g.op("Mul", [half, g.op("Mul", [g.op("Exp", [dw]), widths])])
    half_h = g.op("Mul", [half, g.op("Mul", [g.op("Exp", [dh]), heights])])
    zero = g.const(0.0)
    img_h, img_w = image_hw

    def clip(v: str, hi: str) -> str:
        return g.op("Min", [g.op("Max", [v, zero]), hi])

    x1 = clip(g.op("Sub", [pred_ctr_x, half_w]), img_w)
    y1 = clip(g.op("Sub", [pred_ctr_y, half_h]), img_h)
    x2 = clip(g.op("Add", [pred_ctr_x, half_w]), img_w)
    y2 = clip(g.op("Add", [pred_ctr_y, half_h]), img_h)
    return g.op("Concat", [x1, y1, x2, y2], axis=2)


def append_candidates(
    g: GraphBuilder,
    *,
    cls_levels: Sequence[str],
    box_levels: Sequence[str],
    images: str,
    image_sizes: str,
    spec: ModelSpec,
    input_size: tuple[int, int] | None,
) -> tuple[str, str, str]:
    """Merged pre-NMS candidates: boxes [B, N, 4] f32, scores [B, N] f32, labels [B, N] int64.

    Args:
        cls_levels: per level tensor [B, H, W, A, K] of class logits.
        box_levels: per level tensor [B, H, W, A, 4] of box deltas.
        images: the graph input (for the padded size when shapes are dynamic).
        image_sizes: [B, 2] int32 (h, w) of each image's valid region.
        input_size: fixed (H, W) of the export, or None for dynamic shapes.
    """
    num_classes = spec.num_classes
    sizes_f = g.cast(image_sizes, FLOAT)
    img_h = g.unsqueeze(g.op("Gather", [sizes_f, g.const([0], np.int64)], axis=1), [2])  # [B,1,1]
    img_w = g.unsqueeze(g.op("Gather", [sizes_f, g.const([1], np.int64)], axis=1), [2])
    k_const = g.const(num_classes, np.int64, "num_classes")
    static_anchors = None
    if input_size is not None:
        feature_sizes = feature_sizes_for(input_size)
        static_anchors = [a.numpy() for a in anchors_per_level(spec, input_size, feature_sizes)]
    bases = [b.numpy() for b in base_anchors_per_level(spec)]
    boxes_all, scores_all, labels_all = [], [], []
    for level, (cls_level, box_level) in enumerate(zip(cls_levels, box_levels)):
        logits = g.reshape(cls_level, [0, -1])  # (B, H, W, A, K) -> (B, H*W*A*K)
        scores = g.op("Sigmoid", [logits])
        if static_anchors is not None:
            level_size = static_anchors[level].shape[0] * num_classes
            k = g.const([min(spec.topk_candidates, level_size)], np.int64, "topk")
            anchors = g.const(static_anchors[level], hint=f"anchors_p{level + 3}")
        else:
            k = g.op("Min", [g.shape_dim(logits, 1), g.const([spec.topk_candidates], np.int64)])
            anchors = _level_anchors_dynamic(g, bases[level], cls_level, images)
        top_scores, top_idx = g.op("TopK", [scores, k], num_outputs=2, axis=1, largest=1, sorted=1)
        anchor_idx = g.op("Div", [top_idx, k_const])  # [B, k]
        labels = g.op("Sub", [top_idx, g.op("Mul", [anchor_idx, k_const])])
        deltas = g.reshape(box_level, [0, -1, 4])  # (B, H, W, A, 4) -> (B, H*W*A, 4)
        level_deltas = g.op("GatherND", [deltas, g.unsqueeze(anchor_idx, [2])], batch_dims=1)
        level_anchors = g.op("Gather", [anchors, anchor_idx], axis=0)  # [B, k, 4]
        boxes_all.append(_decode_and_clip(g, level_deltas, level_anchors, (img_h, img_w), spec))
        scores_all.append(top_scores)
        labels_all.append(labels)
    boxes = g.op("Concat", boxes_all, axis=1)
    scores = g.op("Concat", scores_all, axis=1)
    labels = g.op("Concat", labels_all, axis=1)
    return boxes, scores, labels


def append_onnx_nms(
    g: GraphBuilder, boxes: str, scores: str, labels: str, spec: ModelSpec
) -> tuple[str, str, str, str]:
    """Class-aware NonMaxSuppression + best ``detections_per_img``: the output contract tensors."""
    num_classes, max_det = spec.num_classes, spec.detections_per_img
    # Class-aware NMS through a per-class score matrix: [B, K, N], -1 where the class differs.
    class_ids = g.const(np.arange(num_classes).reshape(1, -1, 1), np.int64, "class_ids")
    one_hot = g.op("Equal", [g.unsqueeze(labels, [1]), class_ids])
    class_scores = g.op("Where", [one_hot, g.unsqueeze(scores, [1]), g.const(-1.0)])
    selected = g.op(
        "NonMaxSuppression",
        [
            boxes,
            class_scores,
            g.const([max_det], np.int64, "max_per_class"),
            g.const([spec.nms_thresh], hint="iou_thresh"),
            g.const([spec.score_thresh], hint="score_thresh"),
        ],
        center_point_box=0,
    )  # [M, 3]: (batch, class, candidate)
    batch_and_index = g.op("Gather", [selected, g.const([0, 2], np.int64)], axis=1)  # [M, 2]
    kept_scores = g.op("GatherND", [scores, batch_and_index])  # [M]
    zeros = g.op("ConstantOfShape", [g.op("Shape", [scores])])
    kept = g.op("ScatterND", [zeros, batch_and_index, kept_scores])  # [B, N], 0 = suppressed
    # Pad with D zeros so TopK(D) works for any N; padding sorts after every kept score.
    batch = g.shape_dim(scores, 0)
    pad_shape = g.op("Concat", [batch, g.const([max_det], np.int64)], axis=0)
    pad = g.op("ConstantOfShape", [pad_shape])
    kept = g.op("Concat", [kept, pad], axis=1)
    boxes = g.op(
        "Concat",
        [boxes, g.op("ConstantOfShape", [g.op("Concat", [pad_shape, g.const([4], np.int64)], axis=0)])],
        axis=1,
    )
    labels = g.op("Concat", [labels, g.cast(pad, INT64)], axis=1)
    det_scores, order = g.op(
        "TopK", [kept, g.const([max_det], np.int64, "max_det")], num_outputs=2, axis=1, largest=1, sorted=1
    )
    order3 = g.unsqueeze(order, [2])
    det_boxes = g.op("GatherND", [boxes, order3], batch_dims=1)  # [B, D, 4]
    det_labels = g.op("GatherND", [labels, order3], batch_dims=1)  # [B, D]
    valid = g.op("Greater", [det_scores, g.const(0.0)])  # [B, D]
    det_boxes = g.op("Where", [g.unsqueeze(valid, [2]), det_boxes, g.const(0.0)])
    det_classes = g.cast(g.op("Where", [valid, det_labels, g.const(0, np.int64)]), INT32)
    num = g.op("ReduceSum", [g.cast(valid, INT32), g.const([1], np.int64)], keepdims=1)  # [B, 1]
    return num, det_boxes, det_scores, det_classes


__all__ = ["CANDIDATE_OUTPUTS", "CONTRACT_OUTPUTS", "append_candidates", "append_onnx_nms"]
