"""ResNet/ResNeXt body and the feature pyramid (paper sec. 4, "Feature Pyramid Network Backbone").

The body is torchvision's ImageNet architecture with frozen BatchNorm (the paper freezes BN
statistics and affine parameters when fine-tuning from ImageNet). The FPN builds P3..P5 from
C3..C5 with 1x1 lateral and 3x3 output convs, P6 by a 3x3 stride-2 conv on C5 (paper) or P5
(torchvision v1), and P7 by ReLU followed by a 3x3 stride-2 conv on P6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from retina_trt.spec import ModelSpec


class ResNetBody(nn.Module):
    """C3, C4, C5 of a torchvision ResNet/ResNeXt (no pretrained weights are loaded)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (Tensor[B, 3, H, W]) normalized RGB -> [C3, C4, C5] at strides 8, 16, 32."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


class FeaturePyramid(nn.Module):
    """FPN P3..P7 over C3..C5 (all outputs have ``channels`` channels)."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int, p6_from: str) -> None:
        super().__init__()
        self.p6_from = p6_from
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        p6_in = in_channels[-1] if p6_from == "c5" else channels
        self.p6 = nn.Conv2d(p6_in, channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        for conv in [*self.lateral, *self.output, self.p6, self.p7]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """[C3, C4, C5] -> [P3, P4, P5, P6, P7]."""
        last_inner = self.lateral[-1](feats[-1])
        outputs = [self.output[-1](last_inner)]
        for idx in range(len(feats) - 2, -1, -1):
            lateral = self.lateral[idx](feats[idx])
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            outputs.insert(0, self.output[idx](last_inner))
        p6 = self.p6(feats[-1] if self.p6_from == "c5" else outputs[-1])
        p7 = self.p7(torch.relu(p6))
        return [*outputs, p6, p7]


class Backbone(nn.Module):
    """Body + FPN: normalized images (Tensor[B, 3, H, W]) -> [P3..P7]."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.body = ResNetBody(spec.backbone)
        self.fpn = FeaturePyramid(spec.backbone_channels, spec.fpn_channels, spec.p6_from)

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.fpn(self.body(x))
