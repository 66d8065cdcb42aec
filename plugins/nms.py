"""``retina_nms``: the NMS plugin's kernels as a torch function (CUDA tensors: compiled; CPU
tensors: the Triton interpreter), and the reference it must equal."""

from __future__ import annotations

import torch
import triton

from .kernels import (
    MASK_ROWS,
    MASK_ROWS_INTERPRETER,
    block_sizes,
    mask_kernel,
    nms_threshold,
    scan_kernel,
    sort_kernel,
)

SORT_CHUNK = 128
OUTPUT_NAMES = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


def _interpreting() -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(sort_kernel, InterpretedFunction)


def retina_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    *,
    nms_thresh: float,
    detections_per_img: int,
    score_thresh: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-aware greedy NMS of merged candidates, the output contract out.

    Args:
        boxes (Tensor[B, N, 4] float32/float16): xyxy. scores (Tensor[B, N] float32/float16):
            entries <= ``score_thresh`` are padding. classes (Tensor[B, N] int32).

    Returns:
        ``num_detections`` int32 [B, 1], ``detection_boxes`` float32 [B, D, 4],
        ``detection_scores`` float32 [B, D], ``detection_classes`` int32 [B, D]; rows past
        ``num_detections`` are 0. Equal to the reference postprocess, including its tie order.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:2] or classes.shape != scores.shape:
        raise ValueError(
            f"expected boxes [B, N, 4], scores [B, N], classes [B, N]; got {tuple(boxes.shape)}, "
            f"{tuple(scores.shape)}, {tuple(classes.shape)}"
        )
    if detections_per_img < 1:
        raise ValueError(f"detections_per_img must be >= 1, got {detections_per_img}")
    order = rank_candidates(scores, score_thresh=score_thresh)
    return nms_from_order(boxes, scores, classes, order, nms_thresh=nms_thresh, detections_per_img=detections_per_img)


def rank_candidates(scores: torch.Tensor, *, score_thresh: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """The first plugin: ``order`` [B, N] int32, candidate indices by score (then index), -1 for padding."""
    _check_device(scores.device)
    batch, n = scores.shape
    order = torch.empty((batch, n), dtype=torch.int32, device=scores.device) if out is None else out
    if batch and n:
        sort_kernel[(batch, triton.cdiv(n, SORT_CHUNK))](
            scores.contiguous(), n, order, SCORE_THRESH=float(score_thresh), CHUNK=SORT_CHUNK
        )
    return order


def suppression_mask(boxes, classes, order, *, nms_thresh: float, out=None, rows: int | None = None) -> torch.Tensor:
    """The second plugin: ``mask`` [B, N, cdiv(N, 64)] int64, bit k of word w of rank r's row set
    when the candidate ranked 64 w + k comes after r, has its class and IoU > ``nms_thresh``.
    ``rows``: candidates per program (a power of two; default by device, see MASK_ROWS)."""
    _check_device(boxes.device)
    rows = rows or (MASK_ROWS_INTERPRETER if _interpreting() else MASK_ROWS)
    batch, n = order.shape
    words = -(-n // 64)
    mask = torch.empty((batch, n, words), dtype=torch.int64, device=boxes.device) if out is None else out
    if batch and n:
        mask_kernel[(batch, triton.cdiv(n, rows))](
            boxes.contiguous(),
            classes.to(torch.int32).contiguous(),
            order,
            n,
            mask,
            NMS_THRESH=nms_threshold(nms_thresh),
            ROWS=rows,
        )
    return mask


def nms_from_mask(boxes, scores, classes, order, mask, *, detections_per_img: int, out=None):
    """The third plugin: the greedy walk over ``order`` and ``mask``; the output contract."""
    _check_device(boxes.device)
    batch, n = scores.shape
    d = int(detections_per_img)
    device = boxes.device
    if out is None:
        out = (
            torch.empty((batch, 1), dtype=torch.int32, device=device),
            torch.empty((batch, d, 4), dtype=torch.float32, device=device),
            torch.empty((batch, d), dtype=torch.float32, device=device),
            torch.empty((batch, d), dtype=torch.int32, device=device),
        )
    num, out_boxes, out_scores, out_classes = out
    if batch == 0:
        return out
    if n == 0:
        for t in out:
            t.zero_()
        return out
    wblock, kblock = block_sizes(n, d)
    scan_kernel[(batch,)](
        boxes.contiguous(),
        scores.contiguous(),
        classes.to(torch.int32).contiguous(),
        order,
        mask,
        n,
        num,
        out_boxes,
        out_scores,
        out_classes,
        D=d,
        WBLOCK=wblock,
        KBLOCK=kblock,
    )
    return out


def nms_from_order(
    boxes, scores, classes, order, *, nms_thresh: float, detections_per_img: int, out=None, rows: int | None = None
):
    """The second and third plugins together: greedy NMS over ``order``; the output contract."""
    mask = suppression_mask(boxes, classes, order, nms_thresh=nms_thresh, rows=rows)
    return nms_from_mask(boxes, scores, classes, order, mask, detections_per_img=detections_per_img, out=out)


def _check_device(device: torch.device) -> None:
    if (device.type == "cuda") == _interpreting():
        raise RuntimeError(
            f"the Triton kernels were set up for {'the interpreter (CPU tensors)' if _interpreting() else 'CUDA'}, "
            f"got {device.type} tensors; set TRITON_INTERPRET=1 before anything imports Triton to run them on the CPU"
        )
