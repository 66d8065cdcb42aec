"""The reference postprocess (docs/export-and-contract.md) as ONNX, appended to the traced network,
and every NMS kind in one place (``NMS_APPENDERS``).

Per level: sigmoid, the TopK over anchors x classes (K = min(topk_candidates, level size), so the
candidates are exactly the reference's once scores <= score_thresh are dropped; taken in two small
TopKs, ``_top_candidates``, read from the head outputs in the convolutions' own layout),
anchor/class split, GatherElements of the chosen anchors' deltas (``_anchor_rows``), box decoding
with the clamp, clipping to each image's valid region (``image_sizes`` input). Levels are merged;
then either the merged candidates are the outputs (``nms="none"``) or class-aware
``NonMaxSuppression`` and a TopK of ``detections_per_img`` give the fixed-shape output contract:
``NonMaxSuppression`` (``nms="onnx"``), exact greedy NMS from plain operators (``nms="graph"``), the
retina_trt plugin's three nodes (``nms="plugin"``) or TensorRT's EfficientNMS_TRT
(``nms="efficient"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from retina_trt.contract import CANDIDATE_OUTPUTS, CONTRACT_OUTPUTS
from retina_trt.export.graph import BOOL, FLOAT, INT32, INT64, GraphBuilder
from retina_trt.export.trt_ops import PLUGIN_DOMAIN
from retina_trt.model.anchors import anchors_per_level, base_anchors_per_level, feature_sizes_for
from retina_trt.spec import ModelSpec


def _level_anchors_dynamic(g: GraphBuilder, base: np.ndarray, cls_level: str, images: str) -> str:
    """Anchors of one level computed from the runtime shapes: Tensor[H*W*A, 4] float32."""
    height, width = g.shape_dim(cls_level, 2), g.shape_dim(cls_level, 3)  # int64 [1]
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


def _decode_and_clip(g: GraphBuilder, deltas: str, anchors: str, image_hw: tuple[str, str], spec: ModelSpec) -> str:
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
        cls_levels: per level tensor [B, A*K, H, W] of class logits (the head's own layout;
            anchors are numbered (h, w, a) as in the reference).
        box_levels: per level tensor [B, A*4, H, W] of box deltas.
        images: the graph input (for the padded size when shapes are dynamic).
        image_sizes: [B, 2] int32 (h, w) of each image's valid region.
        input_size: fixed (H, W) of the export, or None for dynamic shapes.
    """
    num_classes, num_anchors = spec.num_classes, spec.num_anchors_per_location
    sizes_f = g.cast(image_sizes, FLOAT)
    img_h = g.unsqueeze(g.op("Gather", [sizes_f, g.const([0], np.int64)], axis=1), [2])  # [B,1,1]
    img_w = g.unsqueeze(g.op("Gather", [sizes_f, g.const([1], np.int64)], axis=1), [2])
    static_anchors = None
    if input_size is not None:
        feature_sizes = feature_sizes_for(input_size)
        static_anchors = [a.numpy() for a in anchors_per_level(spec, input_size, feature_sizes)]
    bases = [b.numpy() for b in base_anchors_per_level(spec)]
    boxes_all, scores_all, labels_all = [], [], []
    for level, (cls_level, box_level) in enumerate(zip(cls_levels, box_levels)):
        if static_anchors is not None:
            anchors = g.const(static_anchors[level], hint=f"anchors_p{level + 3}")
        else:
            anchors = _level_anchors_dynamic(g, bases[level], cls_level, images)
        top_scores, anchor_idx, labels = _top_candidates(g, cls_level, spec.topk_candidates, num_anchors, num_classes)
        level_deltas = _anchor_rows(g, box_level, anchor_idx, num_anchors, 4)
        level_anchors = g.op("Gather", [anchors, anchor_idx], axis=0)  # [B, k, 4]
        boxes_all.append(_decode_and_clip(g, level_deltas, level_anchors, (img_h, img_w), spec))
        scores_all.append(top_scores)
        labels_all.append(labels)
    boxes = g.op("Concat", boxes_all, axis=1)
    scores = g.op("Concat", scores_all, axis=1)
    labels = g.op("Concat", labels_all, axis=1)
    return boxes, scores, labels


def _anchor_rows(g: GraphBuilder, heads: str, anchor_idx: str, num_anchors: int, width: int) -> str:
    """The ``width`` values of the given anchors from a head output in its own layout:
    heads [B, A*width, H, W], anchor_idx [B, k] int64 (anchor n = (h*W + w)*A + a) -> [B, k, width].
    Value c of anchor n lies at channel a*width + c, location h*W + w: one GatherElements of
    k*width values, no transpose of the whole map."""
    return _rows(g, _by_anchor(g, heads, num_anchors, width), anchor_idx, num_anchors, width)


def _by_anchor(g: GraphBuilder, heads: str, num_anchors: int, width: int) -> str:
    """[B, A*width, H, W] -> [B, A, width, H*W]: the same memory, one view for every reader (so
    OpenVINO converts the convolution's blocked layout once)."""
    return g.reshape(heads, [0, num_anchors, width, -1])


def _rows(g: GraphBuilder, by_anchor: str, anchor_idx: str, num_anchors: int, width: int) -> str:
    """``_anchor_rows`` on the view ``_by_anchor`` made: by_anchor [B, A, width, H*W] -> [B, k, width]."""
    locations = g.shape_dim(by_anchor, 3)  # H*W, int64 [1]
    a_const = g.const(num_anchors, np.int64, "num_anchors")
    location = g.op("Div", [anchor_idx, a_const])  # [B, k]
    anchor = g.op("Sub", [anchor_idx, g.op("Mul", [location, a_const])])
    first = g.op("Add", [g.op("Mul", [g.op("Mul", [anchor, g.const(width, np.int64)]), locations]), location])
    steps = g.op("Mul", [g.const(np.arange(width).reshape(1, 1, -1), np.int64, "channels"), locations])
    index = g.reshape(g.op("Add", [g.unsqueeze(first, [2]), steps]), [0, -1])  # [B, k*width]
    rows = g.op("GatherElements", [g.reshape(by_anchor, [0, -1]), index], axis=1)
    return g.reshape(rows, [0, -1, width])


def _top_candidates(g: GraphBuilder, heads: str, topk: int, num_anchors: int, num_classes: int) -> tuple[str, str, str]:
    """The reference's TopK over a level's anchors x classes, exactly, without a TopK over all
    of them: heads [B, A*K, H, W] -> (scores [B, k], anchor index [B, k] int64, class [B, k]
    int64), k = min(topk, H*W*A*K).

    The top k (anchor, class) pairs, in the reference's order (score descending, equal scores
    lower anchor * K + class first), all lie in the k anchors whose best class scores highest
    (equal best scores: lower anchor first): each of those anchors has a pair that ranks above
    any pair of an anchor left out. So: the best score per anchor (the sigmoid of the best logit:
    sigmoid is monotonic), a TopK of k anchors, those anchors' K logits gathered in anchor order
    and their sigmoids, a TopK of k over the k * K. On a ResNet-50 level of 600x1000 px that is a
    TopK over 100k and one over 91k instead of one over 8M (what OpenVINO spent in the one large
    TopK is measured in docs/cpu.md). The maxima are taken in the head's layout
    and only they are transposed to anchor order (B, H*W*A)."""
    per_anchor = _by_anchor(g, heads, num_anchors, num_classes)  # [B, A, K, H*W]
    best_logit = g.op("Transpose", [g.reduce_max(per_anchor, 2)], perm=[0, 2, 1])  # [B, H*W, A]
    best_score = g.op("Sigmoid", [g.reshape(best_logit, [0, -1])])  # = the best sigmoid: it is monotonic
    num = g.shape_dim(best_score, 1)
    k_anchors = g.op("Min", [num, g.const([topk], np.int64)])
    _, best = g.op("TopK", [best_score, k_anchors], num_outputs=2, axis=1, largest=1, sorted=1)
    # the chosen anchors in ascending index order, so that ties below break as the reference's do
    ascending, _ = g.op("TopK", [g.cast(best, FLOAT), k_anchors], num_outputs=2, axis=1, largest=0, sorted=1)
    chosen = g.cast(ascending, INT64)  # [B, k_a] (anchor indices < 2^24: exact in float32)
    chosen_logits = _rows(g, per_anchor, chosen, num_anchors, num_classes)  # [B, k_a, K]
    pairs = g.op("Sigmoid", [g.reshape(chosen_logits, [0, -1])])  # [B, k_a*K]: sigmoid of these only
    k = g.op("Min", [g.shape_dim(pairs, 1), g.const([topk], np.int64)])
    top_scores, position = g.op("TopK", [pairs, k], num_outputs=2, axis=1, largest=1, sorted=1)
    k_const = g.const(num_classes, np.int64, "num_classes")
    slot = g.op("Div", [position, k_const])  # [B, k] row in the chosen anchors
    labels = g.op("Sub", [position, g.op("Mul", [slot, k_const])])
    anchor_idx = g.op("GatherElements", [chosen, slot], axis=1)
    return top_scores, anchor_idx, labels


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
    zeros = g.zeros(g.op("Shape", [scores]))
    kept = g.op("ScatterND", [zeros, batch_and_index, kept_scores])  # [B, N], 0 = suppressed
    # Pad with D zeros so TopK(D) works for any N; padding sorts after every kept score.
    batch = g.shape_dim(scores, 0)
    pad_shape = g.op("Concat", [batch, g.const([max_det], np.int64)], axis=0)
    pad = g.zeros(pad_shape)
    kept = g.op("Concat", [kept, pad], axis=1)
    boxes = g.op(
        "Concat",
        [boxes, g.zeros(g.op("Concat", [pad_shape, g.const([4], np.int64)], axis=0))],
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


def iou_threshold_f32(nms_thresh: float) -> np.float32:
    """The float32 ``t`` with ``iou > t`` (float32) exactly when ``iou > nms_thresh`` (double).

    torchvision compares its float32 IoU with the threshold as a double. float32(nms_thresh)
    rounds up for some thresholds (0.7 -> 0.70000005); then an IoU equal to that float would
    pass the float32 test and fail the double one, so the next float32 below is used instead."""
    t = np.float32(nms_thresh)
    if float(t) > float(nms_thresh):
        t = np.nextafter(t, np.float32(-np.inf))
    return t


def append_graph_nms(
    g: GraphBuilder, boxes: str, scores: str, labels: str, spec: ModelSpec
) -> tuple[str, str, str, str]:
    """Exact class-aware greedy NMS from plain operators (``nms="graph"``): the output contract.

    Greedy NMS is the fixed point of ``keep_j = valid_j and not any_i(keep_i and S_ij)``, where
    ``S_ij`` says candidate ``i`` goes first (higher score, or equal score and lower index: the
    reference's tie order), has the same class and IoU > ``nms_thresh``. The order is a DAG, so
    the fixed point is unique and iterating from ``keep = valid`` reaches it ("Cluster-NMS",
    Zheng et al. 2020): an ONNX ``Loop`` runs until ``keep`` stops changing (at most N + 1
    passes; a chain of L boxes needs L, so no fixed unroll would do). IoU is computed in float32
    with torchvision's operation order. Candidates are ranked with the same pairwise order
    (no TopK over N, which TensorRT caps at 3840) and the best ``detections_per_img`` kept
    boxes are taken by a TopK of D over ``-rank``.

    No plugin, static output shapes: TensorRT 10/11 and TensorRT-RTX build it, ONNX Runtime runs
    it (slowly: it materializes the N x N matrices, so ONNX Runtime users keep ``nms="onnx"``).

    Args:
        boxes (str): Tensor[B, N, 4] float32 xyxy. scores: Tensor[B, N] float32 (entries
            <= score_thresh are padding). labels: Tensor[B, N] int64.
    """
    valid = g.op("Greater", [scores, g.const(spec.score_thresh, hint="score_thresh")])  # [B, N]
    n = g.op("Squeeze", [g.shape_dim(scores, 1), g.const([0], np.int64)])  # scalar N
    first, suppress_f = _suppression(g, boxes, scores, labels, n, spec)
    keep = _greedy_fixed_point(g, valid, suppress_f, n)
    return _best_kept(g, keep, first, boxes, scores, labels, spec.detections_per_img)


def _suppression(g: GraphBuilder, boxes: str, scores: str, labels: str, n: str, spec: ModelSpec) -> tuple[str, str]:
    """(first [B, N, N] bool: i goes before j, suppress [B, N, N] float 0/1: i suppresses j if kept)."""
    # pairwise order: first[b, i, j] = candidate i goes before candidate j
    s_i, s_j = g.unsqueeze(scores, [2]), g.unsqueeze(scores, [1])  # [B, N, 1], [B, 1, N]
    index = g.op("Range", [g.const(0, np.int64), n, g.const(1, np.int64)])  # [N]
    lower_index = g.op("Less", [g.unsqueeze(index, [1]), g.unsqueeze(index, [0])])  # [N, N]
    ties = g.op("And", [g.op("Equal", [s_i, s_j]), lower_index])
    first = g.op("Or", [g.op("Greater", [s_i, s_j]), ties], hint="goes_first")  # [B, N, N]
    same_class = g.op("Equal", [g.unsqueeze(labels, [2]), g.unsqueeze(labels, [1])])  # [B, N, N]

    def coord(i: int) -> tuple[str, str]:  # [B, N, 4] -> column i as [B, N, 1] and [B, 1, N]
        column = g.op("Gather", [boxes, g.const([i], np.int64)], axis=2)
        return column, g.op("Transpose", [column], perm=[0, 2, 1])

    (x1i, x1j), (y1i, y1j), (x2i, x2j), (y2i, y2j) = (coord(i) for i in range(4))
    area_i = g.op("Mul", [g.op("Sub", [x2i, x1i]), g.op("Sub", [y2i, y1i])])  # [B, N, 1]
    area_j = g.op("Transpose", [area_i], perm=[0, 2, 1])  # [B, 1, N]
    zero = g.const(0.0)
    w = g.op("Max", [g.op("Sub", [g.op("Min", [x2i, x2j]), g.op("Max", [x1i, x1j])]), zero])
    h = g.op("Max", [g.op("Sub", [g.op("Min", [y2i, y2j]), g.op("Max", [y1i, y1j])]), zero])
    inter = g.op("Mul", [w, h])  # [B, N, N]
    union = g.op("Sub", [g.op("Add", [area_i, area_j]), inter])
    # IoU 0 where the union is 0 (two zero-area boxes): the reference's NaN compares False, and
    # so must ours on every runtime (OpenVINO's CPU Greater calls NaN > t true).
    iou = g.op("Where", [g.op("Greater", [union, zero]), g.op("Div", [inter, union]), zero])
    overlaps = g.op("Greater", [iou, g.const(iou_threshold_f32(spec.nms_thresh), hint="iou_thresh")])
    suppresses = g.op("And", [g.op("And", [first, same_class]), overlaps])
    suppress_f = g.cast(suppresses, FLOAT)  # [B, N, N] 0/1

    return first, suppress_f


def _greedy_fixed_point(g: GraphBuilder, valid: str, suppress_f: str, n: str) -> str:
    """keep [B, N] bool: the Loop to the fixed point of keep_j = valid_j and no kept suppressor."""
    zero = g.const(0.0)
    # Loop body: (iteration, cond, keep) -> (changed, keep'), reading suppress_f/valid from outside.
    body = GraphBuilder(onnx.helper.make_graph([], "graph_nms_body", [], []), "graph_nms_body")
    keep_in = "graph_nms_body/keep_in"
    # The body's constants live in the outer graph (captured, like suppress_f): Model Optimizer's
    # type inference does not handle initializers inside subgraphs.
    axis1 = g.const([1], np.int64, "axes")
    keep_f = body.op("Unsqueeze", [body.cast(keep_in, FLOAT), axis1])  # [B, 1, N]
    hits = body.op("Squeeze", [body.op("MatMul", [keep_f, suppress_f]), axis1])  # [B, N] kept suppressors
    keep_out = body.op("And", [valid, body.op("Not", [body.op("Greater", [hits, zero])])])
    changed = body.op("Xor", [keep_out, keep_in])
    any_changed = body.op("ReduceMax", [body.cast(changed, INT32)], keepdims=0)
    cond_out = body.cast(any_changed, BOOL)
    body.rename_output(cond_out, "graph_nms_body/cond_out")
    body.rename_output(keep_out, "graph_nms_body/keep_out")
    body.graph.input.extend(
        [
            onnx.helper.make_tensor_value_info("graph_nms_body/iteration", INT64, []),
            onnx.helper.make_tensor_value_info("graph_nms_body/cond_in", BOOL, []),
            onnx.helper.make_tensor_value_info(keep_in, BOOL, ["batch", "candidates"]),
        ]
    )
    body.graph.output.extend(
        [
            onnx.helper.make_tensor_value_info("graph_nms_body/cond_out", BOOL, []),
            onnx.helper.make_tensor_value_info("graph_nms_body/keep_out", BOOL, ["batch", "candidates"]),
        ]
    )
    trips = g.op("Add", [n, g.const(1, np.int64)])  # a fixed point is reached within N + 1 passes
    keep = g.op("Loop", [trips, g.const(True, np.bool_), valid], body=body.graph, hint="graph_nms_loop")
    return keep


def _best_kept(g: GraphBuilder, keep: str, first: str, boxes: str, scores: str, labels: str, max_det: int):
    """The best ``max_det`` kept candidates by rank, zero-padded: the output contract."""
    zero = g.const(0.0)
    # rank_j = number of candidates that go before j; kept ones sorted by rank, best D taken
    rank = g.op("ReduceSum", [g.cast(first, FLOAT), g.const([1], np.int64)], keepdims=0)  # [B, N]
    no_key = g.const(-1.0e9)
    key = g.op("Where", [keep, g.op("Neg", [rank]), no_key])  # [B, N], kept: 0, -1, -2, ...
    # pad with D entries that are never kept, so TopK(D) works for any N
    batch = g.shape_dim(scores, 0)
    pad_shape = g.op("Concat", [batch, g.const([max_det], np.int64)], axis=0)
    pad = g.zeros(pad_shape)  # [B, D] float 0
    key = g.op("Concat", [key, g.op("Add", [pad, no_key])], axis=1)
    padded_boxes = g.op("Concat", [boxes, g.zeros(g.op("Concat", [pad_shape, g.const([4], np.int64)], axis=0))], axis=1)
    padded_scores = g.op("Concat", [scores, pad], axis=1)
    padded_labels = g.op("Concat", [labels, g.cast(pad, INT64)], axis=1)
    top_key, order = g.op(
        "TopK", [key, g.const([max_det], np.int64, "max_det")], num_outputs=2, axis=1, largest=1, sorted=1
    )
    kept = g.op("Greater", [top_key, g.const(-0.5e9)])  # [B, D]
    order3 = g.unsqueeze(order, [2])
    det_boxes = g.op("GatherND", [padded_boxes, order3], batch_dims=1)  # [B, D, 4]
    det_scores = g.op("GatherND", [padded_scores, order3], batch_dims=1)  # [B, D]
    det_labels = g.op("GatherND", [padded_labels, order3], batch_dims=1)  # [B, D]
    det_boxes = g.op("Where", [g.unsqueeze(kept, [2]), det_boxes, zero])
    det_scores = g.op("Where", [kept, det_scores, zero])
    det_classes = g.cast(g.op("Where", [kept, det_labels, g.const(0, np.int64)]), INT32)
    num = g.op("ReduceSum", [g.cast(kept, INT32), g.const([1], np.int64)], keepdims=1)  # [B, 1]
    return num, det_boxes, det_scores, det_classes


def graph_nms_model(spec: ModelSpec, opset: int = 17) -> onnx.ModelProto:
    """:func:`append_graph_nms` alone as a model (tests, cost measurements): inputs ``boxes``
    float32 [B, N, 4], ``scores`` float32 [B, N], ``labels`` int64 [B, N]; the contract outputs."""
    inputs = [
        onnx.helper.make_tensor_value_info("boxes", FLOAT, ["batch", "candidates", 4]),
        onnx.helper.make_tensor_value_info("scores", FLOAT, ["batch", "candidates"]),
        onnx.helper.make_tensor_value_info("labels", INT64, ["batch", "candidates"]),
    ]
    graph = onnx.helper.make_graph([], "graph_nms", inputs, [])
    g = GraphBuilder(graph, "postprocess")
    d = spec.detections_per_img
    shapes = (["batch", 1], ["batch", d, 4], ["batch", d], ["batch", d])
    dtypes = (INT32, FLOAT, FLOAT, INT32)
    for tensor, name, dtype, shape in zip(
        append_graph_nms(g, "boxes", "scores", "labels", spec), CONTRACT_OUTPUTS, dtypes, shapes
    ):
        g.rename_output(tensor, name)
        graph.output.append(onnx.helper.make_tensor_value_info(name, dtype, shape))
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


__all__ = [
    "CANDIDATE_OUTPUTS",
    "CONTRACT_OUTPUTS",
    "append_candidates",
    "append_graph_nms",
    "append_onnx_nms",
    "graph_nms_model",
    "iou_threshold_f32",
]


def append_efficient_nms(g: GraphBuilder, boxes: str, scores: str, labels: str, spec) -> tuple[str, ...]:
    """TensorRT's built-in EfficientNMS_TRT plugin on the merged candidates (same output contract).

    It takes per-class scores [B, N, K]: each candidate's score in its own class column, 0
    elsewhere. Where its results differ from the reference: see README ("nms=efficient").
    """
    class_ids = g.const(np.arange(spec.num_classes).reshape(1, 1, -1), np.int64, "class_ids")
    one_hot = g.op("Equal", [g.unsqueeze(labels, [2]), class_ids])  # [B, N, K]
    class_scores = g.op("Where", [one_hot, g.unsqueeze(scores, [2]), g.const(0.0)], hint="efficient_nms_scores")
    return tuple(
        g.op(
            "EfficientNMS_TRT",
            [boxes, class_scores],
            num_outputs=4,
            domain="TRT",
            plugin_version="1",
            background_class=-1,
            max_output_boxes=int(spec.detections_per_img),
            score_threshold=float(spec.score_thresh),
            iou_threshold=float(spec.nms_thresh),
            score_activation=0,
            class_agnostic=0,
            box_coding=0,
        )
    )


def append_plugin_nms(g: GraphBuilder, boxes: str, scores: str, labels: str, spec) -> tuple[str, ...]:
    """The three retina_trt NMS plugin nodes (plugins/README.md): rank, suppression bitmask,
    greedy walk."""
    common = {"plugin_namespace": "retina_trt", "plugin_version": "1", "aot": 1, "domain": PLUGIN_DOMAIN}
    classes = g.cast(labels, onnx.TensorProto.INT32)
    order = g.op("RetinaNMSSort", [scores], score_thresh=float(spec.score_thresh), **common)
    mask = g.op("RetinaNMSMask", [boxes, classes, order], nms_thresh=float(spec.nms_thresh), **common)
    # a power of two >= every possible candidate count (the walk holds block / 64 mask words)
    block = 1 << max(4, (len(spec.anchor_sizes) * spec.topk_candidates - 1).bit_length())
    return tuple(
        g.op(
            "RetinaNMS",
            [boxes, scores, classes, order, mask],
            num_outputs=4,
            detections_per_img=int(spec.detections_per_img),
            block=block,
            **common,
        )
    )


# Every NMS kind but "none" (which stops at the candidates), by name: what export_onnx appends.
NMS_APPENDERS = {
    "onnx": append_onnx_nms,
    "graph": append_graph_nms,
    "plugin": append_plugin_nms,
    "efficient": append_efficient_nms,
}
