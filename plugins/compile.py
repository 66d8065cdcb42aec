"""The NMS plugin's three Triton kernels compiled to PTX for a compute capability (or the GPU at
hand): what both the TensorRT registration (``registration.py``) and the offline PTX writer
(``aot.py``) compile. No TensorRT here, so neither of them needs the other for it.
"""

from __future__ import annotations

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .kernels import MASK_ROWS, block_sizes, mask_kernel, nms_threshold, scan_kernel, sort_kernel

SORT_CHUNK = 128
MASK_WARPS = 4
NMS_WARPS = 4  # the walk is scalar work; more warps only make its reductions wider


def _target(cc: int | None) -> GPUTarget | None:
    return None if cc is None else GPUTarget("cuda", int(cc), 32)


def compile_sort(*, score_thresh: float, cc: int | None = None):
    """The rank kernel compiled for compute capability ``cc`` (None: the current GPU)."""
    signature = {
        "scores_ptr": "*fp32",
        "N": "i32",
        "order_ptr": "*i32",
        "SCORE_THRESH": "constexpr",
        "CHUNK": "constexpr",
    }
    source = ASTSource(
        fn=sort_kernel, signature=signature, constexprs={"SCORE_THRESH": float(score_thresh), "CHUNK": SORT_CHUNK}
    )
    return triton.compile(source, target=_target(cc))


def compile_mask(*, nms_thresh: float, cc: int | None = None):
    """The suppression-bitmask kernel compiled for compute capability ``cc`` (None: the current GPU)."""
    signature = {
        "boxes_ptr": "*fp32",
        "classes_ptr": "*i32",
        "order_ptr": "*i32",
        "N": "i32",
        "mask_ptr": "*i64",
        "NMS_THRESH": "constexpr",
        "ROWS": "constexpr",
    }
    constexprs = {"NMS_THRESH": nms_threshold(nms_thresh), "ROWS": MASK_ROWS}
    return triton.compile(
        ASTSource(fn=mask_kernel, signature=signature, constexprs=constexprs),
        target=_target(cc),
        options={"num_warps": MASK_WARPS},
    )


def compile_nms(*, detections_per_img: int, block: int, cc: int | None = None, nms_thresh: float | None = None):
    """The greedy walk (scan) kernel compiled for compute capability ``cc`` (None: the current
    GPU). ``block``: a power of two >= the candidate count (the walk holds block / 64 mask words);
    ``nms_thresh`` is the mask kernel's and unused here."""
    signature = {
        "boxes_ptr": "*fp32",
        "scores_ptr": "*fp32",
        "classes_ptr": "*i32",
        "order_ptr": "*i32",
        "mask_ptr": "*i64",
        "N": "i32",
        "num_ptr": "*i32",
        "out_boxes_ptr": "*fp32",
        "out_scores_ptr": "*fp32",
        "out_classes_ptr": "*i32",
        "D": "constexpr",
        "WBLOCK": "constexpr",
        "KBLOCK": "constexpr",
    }
    wblock, kblock = block_sizes(int(block), int(detections_per_img))
    constexprs = {"D": int(detections_per_img), "WBLOCK": wblock, "KBLOCK": kblock}
    return triton.compile(
        ASTSource(fn=scan_kernel, signature=signature, constexprs=constexprs),
        target=_target(cc),
        options={"num_warps": NMS_WARPS},
    )
