"""Anchor maths (paper sec. 4, "Anchors"): pure functions, no module state.

Layout (same as torchvision): anchors of a level are ordered location-major (row, column) and,
within a location, aspect-ratio-major then scale, matching the head's ``(A, K)`` channel order.
Anchors are centred on ``(x * stride, y * stride)``, the top-left corner of each cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from retina_trt.spec import ModelSpec


def anchor_sizes_per_level(spec: ModelSpec) -> list[list[float]]:
    """Anchor side lengths of each level: ``size * scale`` (truncated to int for torchvision)."""
    sizes = []
    for size in spec.anchor_sizes:
        level = [size * scale for scale in spec.anchor_scales]
        if spec.anchor_rounding == "torchvision":
            level = [float(math.floor(s)) for s in level]
        sizes.append(level)
    return sizes


def base_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float], *, rounded: bool) -> Tensor:
    """Anchors of one location centred on (0, 0).

    Args:
        sizes: side lengths of the anchors (sqrt of the area).
        aspect_ratios: height / width.
        rounded: round to whole pixels (torchvision).

    Returns:
        Tensor[R*S, 4] float32: xyxy, ratio-major then size.
    """
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h_ratios[:, None] * scales[None, :]).view(-1)
    anchors = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
    return anchors.round() if rounded else anchors


def base_anchors_per_level(spec: ModelSpec) -> list[Tensor]:
    """:func:`base_anchors` for P3..P7 of ``spec``: list of Tensor[A, 4] float32."""
    rounded = spec.anchor_rounding == "torchvision"
    return [base_anchors(sizes, spec.aspect_ratios, rounded=rounded) for sizes in anchor_sizes_per_level(spec)]


def level_strides(image_size: tuple[int, int], feature_size: tuple[int, int]) -> tuple[int, int]:
    """Stride of a level as torchvision computes it: padded image size // feature size."""
    return image_size[0] // feature_size[0], image_size[1] // feature_size[1]


def grid_anchors(base: Tensor, feature_size: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """All anchors of one level.

    Args:
        base (Tensor[A, 4]): anchors of one location, xyxy around (0, 0).
        feature_size: (H, W) of the level.
        stride: (stride_y, stride_x) in input pixels.

    Returns:
        Tensor[H*W*A, 4] float32: xyxy in input pixels.
    """
    height, width = feature_size
    shifts_x = torch.arange(0, width, dtype=torch.int32) * stride[1]
    shifts_y = torch.arange(0, height, dtype=torch.int32) * stride[0]
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    # (H*W, 1, 4) + (1, A, 4) -> (H*W*A, 4)
    return (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4).to(torch.float32)


def anchors_per_level(
    spec: ModelSpec, image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]]
) -> list[Tensor]:
    """Anchors of every level for a padded input of ``image_size`` (H, W).

    Returns:
        list of Tensor[H_l*W_l*A, 4] float32, xyxy in input pixels, one per level P3..P7.
    """
    return [
        grid_anchors(base, tuple(fs), level_strides(image_size, tuple(fs)))
        for base, fs in zip(base_anchors_per_level(spec), feature_sizes)
    ]


def feature_sizes_for(image_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Feature sizes (H, W) of P3..P7 for an input of ``image_size``.

    Each stride-2 stage (3x3 or 1x1 conv with padding, or max-pool) maps n to ceil(n / 2).
    """
    sizes = []
    h, w = image_size
    for level in range(1, 8):
        h, w = (h + 1) // 2, (w + 1) // 2
        if level >= 3:
            sizes.append((h, w))
    return sizes
