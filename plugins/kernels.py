"""Triton kernels of the retina_trt NMS plugin (design and cost: plugins/README.md).

Two kernels, one per TensorRT AOT plugin (an AOT plugin launches exactly one kernel and has no
workspace, so the intermediate ``order`` tensor is an output of the first and an input of the
second):

* ``sort_kernel`` (grid B x cdiv(N, CHUNK)): ranks the merged candidates by score, descending,
  and among equal scores by lower candidate index, by counting for each candidate how many come
  before it (CHUNK x CHUNK comparisons at a time), then scatters ``order[b, rank] = index``;
  candidates with score <= ``score_thresh`` (the export's padding) rank last and are stored as
  -1. (``tl.sort`` over up to 8192 keys unrolls into a bitonic network that took ten minutes and
  2.7 MB of PTX to compile; counting ranks compiles to a small loop.)
* ``nms_kernel`` (one program per image): greedy class-aware NMS over that order, suppressing
  every later candidate of the same class whose IoU with a kept box is > ``nms_thresh``, until
  ``detections_per_img`` boxes are kept; writes the output contract and zero-fills the rest.

Argument order is the AOT plugin's: input tensors, integer scalars, output tensors; the
thresholds are compile-time constants (AOT plugin attributes are not serialized into engines).

IoU is computed exactly as torchvision's NMS does it, in float32 with IEEE division:
``inter / (area_i + area_j - inter)``; a degenerate pair (union 0) gives NaN, which suppresses
nothing, as in torchvision. FP16 inputs are read as FP16 and computed in FP32.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def sort_kernel(scores_ptr, N, order_ptr, SCORE_THRESH: tl.constexpr, CHUNK: tl.constexpr):
    """Grid (B, cdiv(N, CHUNK)): each program ranks CHUNK candidates against all N of its image
    and scatters their indices to ``order[b, rank]`` (a permutation: ranks are unique)."""
    image = tl.program_id(0)
    mine = tl.program_id(1) * CHUNK + tl.arange(0, CHUNK)
    inside = mine < N
    s = tl.load(scores_ptr + image * N + mine, mask=inside, other=-1.0).to(tl.float32)
    valid = inside & (s > SCORE_THRESH)
    key = tl.where(valid, s, -1.0)  # padding ranks after every real candidate (scores are >= 0)
    rank = tl.zeros([CHUNK], dtype=tl.int32)
    for start in range(0, N, CHUNK):
        other = start + tl.arange(0, CHUNK)
        t = tl.load(scores_ptr + image * N + other, mask=other < N, other=-1.0).to(tl.float32)
        other_key = tl.where((other < N) & (t > SCORE_THRESH), t, -1.0)
        # `other` comes first: a higher score, or the same score and a lower index
        ahead = (other_key[None, :] > key[:, None]) | (
            (other_key[None, :] == key[:, None]) & (other[None, :] < mine[:, None])
        )
        ahead = ahead & (other[None, :] < N)
        rank += tl.sum(ahead.to(tl.int32), axis=1)
    tl.store(order_ptr + image * N + rank, tl.where(valid, mine, -1), mask=inside)


@triton.jit
def nms_kernel(
    boxes_ptr,
    scores_ptr,
    classes_ptr,
    order_ptr,
    N,
    num_ptr,
    out_boxes_ptr,
    out_scores_ptr,
    out_classes_ptr,
    NMS_THRESH: tl.constexpr,
    D: tl.constexpr,
    BLOCK: tl.constexpr,
    DBLOCK: tl.constexpr,
):
    image = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    index = tl.load(order_ptr + image * N + offs, mask=offs < N, other=-1)
    valid = index >= 0
    row = image * N + tl.where(valid, index, 0)
    x1 = tl.load(boxes_ptr + row * 4 + 0, mask=valid, other=0.0).to(tl.float32)
    y1 = tl.load(boxes_ptr + row * 4 + 1, mask=valid, other=0.0).to(tl.float32)
    x2 = tl.load(boxes_ptr + row * 4 + 2, mask=valid, other=0.0).to(tl.float32)
    y2 = tl.load(boxes_ptr + row * 4 + 3, mask=valid, other=0.0).to(tl.float32)
    classes = tl.load(classes_ptr + row, mask=valid, other=-1)
    areas = (x2 - x1) * (y2 - y1)
    alive = valid.to(tl.int32)
    num_valid = tl.sum(valid.to(tl.int32), axis=0)
    kept = 0
    i = 0
    while (i < num_valid) & (kept < D):
        here = offs == i
        if tl.sum(tl.where(here, alive, 0), axis=0) > 0:
            ix1 = tl.sum(tl.where(here, x1, 0.0), axis=0)
            iy1 = tl.sum(tl.where(here, y1, 0.0), axis=0)
            ix2 = tl.sum(tl.where(here, x2, 0.0), axis=0)
            iy2 = tl.sum(tl.where(here, y2, 0.0), axis=0)
            icls = tl.sum(tl.where(here, classes, 0), axis=0)
            iarea = (ix2 - ix1) * (iy2 - iy1)
            w = tl.maximum(tl.minimum(x2, ix2) - tl.maximum(x1, ix1), 0.0)
            h = tl.maximum(tl.minimum(y2, iy2) - tl.maximum(y1, iy1), 0.0)
            inter = w * h
            iou = tl.div_rn(inter, iarea + areas - inter)
            suppress = (offs > i) & (classes == icls) & (iou > NMS_THRESH)
            alive = tl.where(suppress, 0, alive)
            src = tl.sum(tl.where(here, index, 0), axis=0)
            score = tl.load(scores_ptr + image * N + src).to(tl.float32)
            out = image * D + kept
            tl.store(out_boxes_ptr + out * 4 + 0, ix1)
            tl.store(out_boxes_ptr + out * 4 + 1, iy1)
            tl.store(out_boxes_ptr + out * 4 + 2, ix2)
            tl.store(out_boxes_ptr + out * 4 + 3, iy2)
            tl.store(out_scores_ptr + out, score)
            tl.store(out_classes_ptr + out, icls)
            kept += 1
        i += 1
    tl.store(num_ptr + image, kept)
    for start in range(0, D, DBLOCK):
        rows = start + tl.arange(0, DBLOCK)
        empty = (rows >= kept) & (rows < D)
        out = image * D + rows
        tl.store(out_scores_ptr + out, 0.0, mask=empty)
        tl.store(out_classes_ptr + out, 0, mask=empty)
        for k in range(4):
            tl.store(out_boxes_ptr + out * 4 + k, 0.0, mask=empty)
