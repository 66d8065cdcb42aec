"""Classification and box subnets (paper sec. 4, Fig. 3 c/d).

Each subnet: ``num_head_convs`` 3x3 conv (+ optional GroupNorm(32), as torchvision v2) + ReLU
layers, then a 3x3 conv predicting K*A class logits or 4*A box deltas per location; parameters
are shared across pyramid levels. Initialization (sec. 4.1): Gaussian sigma=0.01, bias 0, and
the classification bias set to -log((1 - pi) / pi).
"""

from __future__ import annotations

import math

from torch import Tensor, nn


class ConvBlock(nn.Module):
    """3x3 conv (bias only without norm) -> optional GroupNorm(32) -> ReLU."""

    def __init__(self, channels: int, norm: str | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=norm is None)
        self.norm = nn.GroupNorm(32, channels) if norm == "group_norm" else nn.Identity()
        self.act = nn.ReLU(inplace=True)
        nn.init.normal_(self.conv.weight, std=0.01)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class Subnet(nn.Module):
    """A shared subnet: conv tower + predictor with ``num_outputs`` channels per location."""

    def __init__(self, channels: int, num_outputs: int, *, num_convs: int, norm: str | None, bias_init: float) -> None:
        super().__init__()
        self.convs = nn.Sequential(*(ConvBlock(channels, norm) for _ in range(num_convs)))
        self.predictor = nn.Conv2d(channels, num_outputs, 3, padding=1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, bias_init)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """[P3..P7] (Tensor[B, C, H_l, W_l]) -> per level Tensor[B, A*outputs, H_l, W_l]."""
        return [self.predictor(self.convs(f)) for f in feats]


class RetinaHead(nn.Module):
    """Class subnet (A*K outputs) and box subnet (A*4 outputs)."""

    def __init__(
        self,
        channels: int,
        num_anchors: int,
        num_classes: int,
        *,
        num_convs: int = 4,
        norm: str | None = None,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        prior_bias = -math.log((1 - prior_prob) / prior_prob)
        self.cls = Subnet(channels, num_anchors * num_classes, num_convs=num_convs, norm=norm, bias_init=prior_bias)
        self.box = Subnet(channels, num_anchors * 4, num_convs=num_convs, norm=norm, bias_init=0.0)
