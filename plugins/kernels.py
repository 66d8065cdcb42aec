"""Triton kernels of the retina_trt NMS plugin (design and cost: plugins/README.md).

Three kernels, one per TensorRT AOT plugin (an AOT plugin launches exactly one kernel and has no
workspace, so the intermediate ``order`` and ``mask`` tensors are outputs of one plugin and inputs
of the next):

* ``sort_kernel`` (grid B x cdiv(N, CHUNK)): ranks the merged candidates by score, descending,
  and among equal scores by lower candidate index, by counting for each candidate how many come
  before it (CHUNK x CHUNK comparisons at a time), then scatters ``order[b, rank] = index``;
  candidates with score <= ``score_thresh`` (the export's padding) rank last and are stored as
  -1. (``tl.sort`` over up to 8192 keys unrolls into a bitonic network far too large to compile
  (plugins/README.md); counting ranks compiles to a small loop.)
* ``mask_kernel`` (grid B x cdiv(N, ROWS)): the suppression bitmask ``mask`` [B, N, cdiv(N, 64)]
  int64, computed fully in parallel: bit k of word w of rank r's row says the candidate ranked
  64 w + k comes after r, has its class and IoU > ``nms_thresh`` with it;
* ``scan_kernel`` (one program per image): greedy class-aware NMS as a walk over the ranks that
  tests one bit per candidate and, for each kept one, ORs its mask row into the removed set, until
  ``detections_per_img`` boxes are kept; writes the output contract and zero-fills the rest.

Argument order is the AOT plugin's: input tensors, integer scalars, output tensors; the
thresholds are compile-time constants (AOT plugin attributes are not serialized into engines).

IoU is computed exactly as torchvision's NMS does it, in float32 with IEEE division:
``inter / (area_i + area_j - inter)``; a degenerate pair (union 0) gives NaN, which suppresses
nothing, as in torchvision. FP16 inputs are read as FP16 and computed in FP32.
"""

from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

# Ranked candidates per mask program (x 64 columns per step): 32 on the GPU (2048 pairs a step
# for 4 warps); the Triton interpreter runs programs one after another, so on CPU tensors fewer,
# larger programs (the bits are the same for any tiling; the tests run both).
MASK_ROWS = 32
MASK_ROWS_INTERPRETER = 512


def block_sizes(num_candidates: int, detections_per_img: int) -> tuple[int, int]:
    """(WBLOCK, KBLOCK) of the walk: mask words it holds (a power of two >= cdiv(N, 64)) and kept
    ranks it holds (a power of two >= D)."""
    words = max(1, -(-num_candidates // 64))
    return max(16, triton.next_power_of_2(words)), max(16, triton.next_power_of_2(detections_per_img))


def nms_threshold(nms_thresh: float) -> float:
    """The float32 threshold the kernels compare their float32 IoU with, so that the decision
    equals torchvision's comparison in double (docs/export-and-contract.md, tie order)."""
    t = np.float32(nms_thresh)
    if float(t) > float(nms_thresh):
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)


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
def mask_kernel(boxes_ptr, classes_ptr, order_ptr, N, mask_ptr, NMS_THRESH: tl.constexpr, ROWS: tl.constexpr):
    """Grid (B, cdiv(N, ROWS)): the suppression bitmask. For each of ROWS ranked candidates r of
    its image and each 64-wide word w of ranks at or after r's own word, bit k of
    ``mask[b, r, w]`` is set when the candidate ranked 64 w + k comes after r, has r's class and
    an IoU with r greater than the threshold. Words before r's are never read (scan_kernel)."""
    image = tl.program_id(0)
    first = tl.program_id(1) * ROWS
    r = first + tl.arange(0, ROWS)
    in_r = r < N
    idx_r = tl.load(order_ptr + image * N + r, mask=in_r, other=-1)
    valid_r = idx_r >= 0
    row_r = image * N + tl.where(valid_r, idx_r, 0)
    x1 = tl.load(boxes_ptr + row_r * 4 + 0, mask=valid_r, other=0.0).to(tl.float32)
    y1 = tl.load(boxes_ptr + row_r * 4 + 1, mask=valid_r, other=0.0).to(tl.float32)
    x2 = tl.load(boxes_ptr + row_r * 4 + 2, mask=valid_r, other=0.0).to(tl.float32)
    y2 = tl.load(boxes_ptr + row_r * 4 + 3, mask=valid_r, other=0.0).to(tl.float32)
    cls_r = tl.load(classes_ptr + row_r, mask=valid_r, other=-1)
    area_r = (x2 - x1) * (y2 - y1)
    words = (N + 63) // 64
    bits = tl.arange(0, 64)
    ones = tl.full([64], 1, tl.int64) << bits.to(tl.int64)
    for w in range(first // 64, words):
        c = w * 64 + bits
        in_c = c < N
        idx_c = tl.load(order_ptr + image * N + c, mask=in_c, other=-1)
        valid_c = idx_c >= 0
        row_c = image * N + tl.where(valid_c, idx_c, 0)
        cx1 = tl.load(boxes_ptr + row_c * 4 + 0, mask=valid_c, other=0.0).to(tl.float32)
        cy1 = tl.load(boxes_ptr + row_c * 4 + 1, mask=valid_c, other=0.0).to(tl.float32)
        cx2 = tl.load(boxes_ptr + row_c * 4 + 2, mask=valid_c, other=0.0).to(tl.float32)
        cy2 = tl.load(boxes_ptr + row_c * 4 + 3, mask=valid_c, other=0.0).to(tl.float32)
        cls_c = tl.load(classes_ptr + row_c, mask=valid_c, other=-2)
        area_c = (cx2 - cx1) * (cy2 - cy1)
        iw = tl.maximum(tl.minimum(x2[:, None], cx2[None, :]) - tl.maximum(x1[:, None], cx1[None, :]), 0.0)
        ih = tl.maximum(tl.minimum(y2[:, None], cy2[None, :]) - tl.maximum(y1[:, None], cy1[None, :]), 0.0)
        inter = iw * ih
        iou = tl.div_rn(inter, area_r[:, None] + area_c[None, :] - inter)
        hit = (c[None, :] > r[:, None]) & valid_r[:, None] & valid_c[None, :] & (cls_c[None, :] == cls_r[:, None])
        hit = hit & (iou > NMS_THRESH)
        word = tl.sum(tl.where(hit, ones[None, :], 0), axis=1)  # disjoint bits: the sum is the OR
        tl.store(mask_ptr + (image * N + r) * words + w, word, mask=in_r)


@triton.jit
def scan_kernel(
    boxes_ptr,
    scores_ptr,
    classes_ptr,
    order_ptr,
    mask_ptr,
    N,
    num_ptr,
    out_boxes_ptr,
    out_scores_ptr,
    out_classes_ptr,
    D: tl.constexpr,
    WBLOCK: tl.constexpr,
    KBLOCK: tl.constexpr,
):
    """Grid (B,): walks the ranked candidates of its image, keeping every one whose bit is not
    yet set in ``removed`` and OR-ing its mask row into ``removed``, until D are kept. The walk is
    one bit test per candidate; a kept one costs one load (its mask row, which depends only on its
    rank). The kept ranks collect in registers, and the output contract is gathered and written
    once at the end (rows past ``num_detections`` zero)."""
    image = tl.program_id(0)
    words = (N + 63) // 64
    lanes = tl.arange(0, WBLOCK)
    num_valid = 0  # valid candidates rank first (padding is -1 at the end)
    for start in range(0, N, 1024):
        ranks = start + tl.arange(0, 1024)
        num_valid += tl.sum(
            (tl.load(order_ptr + image * N + ranks, mask=ranks < N, other=-1) >= 0).to(tl.int32), axis=0
        )
    slots = tl.arange(0, KBLOCK)
    kept_ranks = tl.zeros([KBLOCK], dtype=tl.int32)
    removed = tl.zeros([WBLOCK], dtype=tl.int64)
    kept = 0
    for w in range(0, (num_valid + 63) // 64):
        current = tl.sum(tl.where(lanes == w, removed, 0), axis=0)
        for k in range(0, 64):
            rank = w * 64 + k
            if (rank < num_valid) & (kept < D) & (((current >> k) & 1) == 0):
                kept_ranks = tl.where(slots == kept, rank, kept_ranks)
                kept += 1
                row_bits = tl.load(
                    mask_ptr + (image * N + rank) * words + lanes, mask=(lanes >= w) & (lanes < words), other=0
                )
                removed = removed | row_bits
                current = tl.sum(tl.where(lanes == w, removed, 0), axis=0)
    tl.store(num_ptr + image, kept)
    taken = slots < kept
    index = tl.load(order_ptr + image * N + kept_ranks, mask=taken, other=0)
    row = image * N + index
    out = image * D + slots
    inside = slots < D
    for j in range(4):
        tl.store(
            out_boxes_ptr + out * 4 + j,
            tl.load(boxes_ptr + row * 4 + j, mask=taken, other=0.0).to(tl.float32),
            mask=inside,
        )
    tl.store(out_scores_ptr + out, tl.load(scores_ptr + row, mask=taken, other=0.0).to(tl.float32), mask=inside)
    tl.store(out_classes_ptr + out, tl.load(classes_ptr + row, mask=taken, other=0), mask=inside)
