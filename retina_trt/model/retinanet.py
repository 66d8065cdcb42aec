"""RetinaNet (paper sec. 4): backbone + FPN, class and box subnets, anchors, reference postprocess."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from retina_trt.model.anchors import anchors_per_level
from retina_trt.model.backbone import Backbone
from retina_trt.model.head import RetinaHead
from retina_trt.model.postprocess import flatten_level, postprocess_detections
from retina_trt.spec import ModelSpec


class HeadOutputs(NamedTuple):
    """Raw per-level head outputs (the same in train and eval mode).

    cls_logits: per level Tensor[B, A*K, H_l, W_l]. box_deltas: per level Tensor[B, A*4, H_l, W_l].
    """

    cls_logits: list[Tensor]
    box_deltas: list[Tensor]


class RetinaNet(nn.Module):
    """RetinaNet as in the paper, configured by a :class:`~retina_trt.ModelSpec`.

    ``forward(images)`` returns :class:`HeadOutputs`; ``detect(images, image_sizes)`` runs the
    reference postprocess. ``images`` are normalized RGB float (Tensor[B, 3, H, W]); the
    runtime's preprocessing (or the exported graph) does the normalization.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"RetinaNet(spec) expects a ModelSpec, got {type(spec).__name__}")
        self.spec = spec
        self.backbone = Backbone(spec)
        self.head = RetinaHead(
            spec.fpn_channels,
            spec.num_anchors_per_location,
            spec.num_classes,
            num_convs=spec.num_head_convs,
            norm=spec.head_norm,
            prior_prob=spec.prior_prob,
        )

    def forward(self, images: Tensor) -> HeadOutputs:
        """images (Tensor[B, 3, H, W] float) -> raw head outputs of P3..P7."""
        feats = self.backbone(images)
        return HeadOutputs(self.head.cls(feats), self.head.box(feats))

    def anchors(self, image_size: tuple[int, int], outputs: HeadOutputs) -> list[Tensor]:
        """Anchors (per level Tensor[H*W*A, 4], xyxy) for a padded input of ``image_size``."""
        feature_sizes = [tuple(x.shape[-2:]) for x in outputs.cls_logits]
        return anchors_per_level(self.spec, image_size, feature_sizes)

    @torch.no_grad()
    def detect(self, images: Tensor, image_sizes: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Tensor]]:
        """Detections of a normalized, padded batch (reference postprocess, docs/export-and-contract.md).

        Args:
            images (Tensor[B, 3, H, W] float): normalized RGB, padded bottom/right.
            image_sizes: (h, w) of each image's valid region; the full ``H, W`` when None.

        Returns:
            per image a dict with ``boxes`` (Tensor[D, 4] float32, xyxy in the coordinates of
            ``images``), ``scores`` (Tensor[D]) and ``labels`` (Tensor[D] int64), best first.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"detect() expects images of shape [B, 3, H, W], got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if image_sizes is None:
            image_sizes = [(height, width)] * images.shape[0]
        image_sizes = [(int(h), int(w)) for h, w in image_sizes]
        if len(image_sizes) != images.shape[0]:
            raise ValueError(f"detect() got {len(image_sizes)} image_sizes for a batch of {images.shape[0]}")
        outputs = self(images)
        k = self.spec.num_classes
        return postprocess_detections(
            [flatten_level(x, k) for x in outputs.cls_logits],
            [flatten_level(x, 4) for x in outputs.box_deltas],
            self.anchors((height, width), outputs),
            image_sizes,
            self.spec,
        )
