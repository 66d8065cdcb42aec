import math

import pytest
import torch

from retina_trt import ModelSpec, torchvision_spec
from retina_trt.model.anchors import (
    anchor_sizes_per_level,
    anchors_per_level,
    base_anchors,
    feature_sizes_for,
)
from retina_trt.model.box_coder import clip_boxes, decode_boxes, encode_boxes


def test_anchor_sizes_paper_vs_torchvision():
    paper = anchor_sizes_per_level(ModelSpec())
    assert paper[0] == pytest.approx([32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)])
    assert paper[4][0] == 512
    tv = anchor_sizes_per_level(torchvision_spec(1))
    assert tv[0] == [32, 40, 50] and tv[2] == [128, 161, 203]


def test_base_anchors_have_the_right_areas_and_ratios():
    anchors = base_anchors([32.0, 64.0], [0.5, 1.0, 2.0], rounded=False)
    assert anchors.shape == (6, 4)
    w = anchors[:, 2] - anchors[:, 0]
    h = anchors[:, 3] - anchors[:, 1]
    torch.testing.assert_close(w * h, torch.tensor([32.0**2, 64.0**2] * 3))
    torch.testing.assert_close(h / w, torch.tensor([0.5, 0.5, 1.0, 1.0, 2.0, 2.0]))
    torch.testing.assert_close((anchors[:, 0] + anchors[:, 2]) / 2, torch.zeros(6))


def test_anchors_per_level_layout():
    spec = ModelSpec()
    sizes = feature_sizes_for((256, 384))
    assert sizes == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    anchors = anchors_per_level(spec, (256, 384), sizes)
    for (h, w), level, stride in zip(sizes, anchors, (8, 16, 32, 64, 128)):
        assert level.shape == (h * w * 9, 4)
        centers = (level[:, :2] + level[:, 2:]) / 2
        # location-major: anchors 9..17 sit one stride to the right of anchors 0..8
        torch.testing.assert_close(centers[9] - centers[0], torch.tensor([float(stride), 0.0]))
        torch.testing.assert_close(centers[9 * w] - centers[0], torch.tensor([0.0, float(stride)]))


def test_encode_decode_round_trip_and_clamp():
    anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0], [10.0, 20.0, 74.0, 52.0]])
    boxes = torch.tensor([[2.0, 4.0, 30.0, 40.0], [0.0, 0.0, 100.0, 90.0]])
    weights = (10.0, 10.0, 5.0, 5.0)
    deltas = encode_boxes(boxes, anchors, weights)
    torch.testing.assert_close(decode_boxes(deltas, anchors, weights), boxes, atol=1e-4, rtol=0)
    huge = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    decoded = decode_boxes(huge, anchors[:1])
    assert decoded[0, 2] - decoded[0, 0] == pytest.approx(32 * 1000 / 16, rel=1e-4)
    assert math.isfinite(decoded.abs().max().item())


def test_clip_boxes():
    boxes = torch.tensor([[-5.0, -1.0, 50.0, 70.0]])
    torch.testing.assert_close(clip_boxes(boxes, (60, 40)), torch.tensor([[0.0, 0.0, 40.0, 60.0]]))


def test_box_iou_equals_torchvision_and_is_zero_where_the_union_is_zero():
    """contract/boxes.py: the one numpy IoU (NMS, the IoU tracker, error analysis) equals
    torchvision's on random float32 boxes; empty boxes (union 0) give 0, empty inputs an empty matrix."""
    import numpy as np
    from torchvision.ops import box_iou as torch_box_iou

    from retina_trt.contract.boxes import box_area, box_iou

    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (2, 40, 2)).astype(np.float32)
    a = np.concatenate([corners[0], corners[0] + rng.uniform(0, 50, (40, 2)).astype(np.float32)], axis=1)
    b = np.concatenate([corners[1], corners[1] + rng.uniform(0, 50, (40, 2)).astype(np.float32)], axis=1)
    got = box_iou(a, b[:30])
    assert got.shape == (40, 30) and got.dtype == np.float32
    assert np.allclose(got, torch_box_iou(torch.from_numpy(a), torch.from_numpy(b[:30])).numpy(), atol=1e-6)
    empty = np.zeros((2, 4), np.float32)
    assert box_iou(empty, empty).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert box_iou(a[:0], b).shape == (0, 40) and box_area(a[:3]).shape == (3,)
