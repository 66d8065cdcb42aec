"""Raw pixels to network input, as a module that is part of every exported graph.

The graph takes what decoders produce: uint8 BGR, NHWC. BGR->RGB, the 1/255 scaling and the
mean/std normalization are folded into one multiply-add per channel, so C++ and DeepStream
users feed decoded frames directly. The torch backend uses this same module, so the PyTorch
reference and the ONNX graph see the same floats.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from retina_trt.spec import ModelSpec


class PixelNormalizer(nn.Module):
    """uint8 BGR NHWC -> normalized float32 RGB NCHW: ``x * scale + bias`` per channel."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        mean = torch.tensor(spec.pixel_mean, dtype=torch.float64)
        std = torch.tensor(spec.pixel_std, dtype=torch.float64)
        # (x / 255 - mean) / std == x * (1 / (255 * std)) + (-mean / std), in RGB order
        scale = (1.0 / (255.0 * std)).float().view(1, 3, 1, 1)
        bias = (-mean / std).float().view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, pixels: Tensor) -> Tensor:
        """pixels (Tensor[B, H, W, 3] uint8, BGR) -> Tensor[B, 3, H, W] float32, RGB normalized."""
        # The cast comes first: TensorRT takes uint8 only at network inputs and needs it cast to
        # float before any other layer (its DataType.UINT8 rule); the cast is exact.
        x = pixels.to(torch.float32).permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W), BGR
        x = x[:, [2, 1, 0]]  # BGR -> RGB
        return x * self.scale + self.bias
