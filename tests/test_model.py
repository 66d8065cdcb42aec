import math

import pytest
import torch

from retina_trt import HeadOutputs, ModelSpec, RetinaNet


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return RetinaNet(ModelSpec(backbone="resnet50", num_classes=80)).eval()


def test_architecture_is_the_papers(paper_model):
    model = paper_model
    spec = model.spec
    cls, box = model.head.cls, model.head.box
    assert len(cls.convs) == 4 and len(box.convs) == 4
    for block in [*cls.convs, *box.convs]:
        assert block.conv.kernel_size == (3, 3) and block.conv.out_channels == 256
    assert cls.predictor.out_channels == 9 * 80 and box.predictor.out_channels == 9 * 4
    # sec. 4.1 initialization: sigma = 0.01, bias -log((1 - pi) / pi) on the class predictor
    torch.testing.assert_close(cls.predictor.bias, torch.full((720,), -math.log(99.0)))
    assert abs(cls.predictor.weight.std().item() - 0.01) < 1e-3
    assert abs(cls.convs[0].conv.weight.std().item() - 0.01) < 1e-3
    assert box.predictor.bias.abs().max() == 0
    # P6 from C5 (paper): a 3x3 stride-2 conv over 2048 channels
    assert model.backbone.fpn.p6.in_channels == 2048 and model.backbone.fpn.p6.stride == (2, 2)
    assert spec.num_anchors_per_location == 9


def test_forward_returns_p3_to_p7_shared_heads(paper_model):
    out = paper_model(torch.randn(1, 3, 256, 384))
    assert isinstance(out, HeadOutputs)
    shapes = [tuple(x.shape) for x in out.cls_logits]
    assert shapes == [(1, 720, 32, 48), (1, 720, 16, 24), (1, 720, 8, 12), (1, 720, 4, 6), (1, 720, 2, 3)]
    assert [tuple(x.shape[1:2]) for x in out.box_deltas] == [(36,)] * 5
    # the same output type in train mode
    paper_model.train()
    try:
        assert isinstance(paper_model(torch.randn(1, 3, 128, 128)), HeadOutputs)
    finally:
        paper_model.eval()


def test_p6_from_p5_and_group_norm_variants():
    model = RetinaNet(
        ModelSpec(backbone="resnet18", num_classes=3, p6_from="p5", head_norm="group_norm", fpn_channels=64)
    )
    assert model.backbone.fpn.p6.in_channels == 64
    assert isinstance(model.head.cls.convs[0].norm, torch.nn.GroupNorm)
    assert model.head.cls.convs[0].conv.bias is None


def test_detect_validates_its_input(tiny_model):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny_model.detect(torch.zeros(3, 128, 128))
    with pytest.raises(ValueError, match="image_sizes"):
        tiny_model.detect(torch.zeros(2, 3, 128, 128), [(128, 128)])
    with pytest.raises(TypeError, match="ModelSpec"):
        RetinaNet({"backbone": "resnet50"})


def test_detect_returns_torchvision_structure(tiny_model):
    (result,) = tiny_model.detect(torch.randn(1, 3, 256, 256) * 3)
    assert set(result) == {"boxes", "scores", "labels"}
    assert result["labels"].dtype == torch.int64
    n = len(result["scores"])
    assert 0 < n <= tiny_model.spec.detections_per_img
    assert torch.all(result["scores"][:-1] >= result["scores"][1:])
    assert result["boxes"].min() >= 0 and result["boxes"].max() <= 256


def test_nms_tie_order_is_score_then_lower_index():
    """Equal scores keep the lower candidate index first, in suppression and in the output,
    for both of torchvision's batched_nms paths (<= 1000 and > 1000 candidates)."""
    import numpy as np
    from torchvision.ops import box_iou

    from retina_trt.model.postprocess import nms_per_image

    def greedy(boxes, scores, labels, thresh):
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        iou = box_iou(boxes, boxes)
        kept, suppressed = [], torch.zeros(len(scores), dtype=torch.bool)
        for i in order:
            if suppressed[i]:
                continue
            kept.append(i)
            suppressed |= (labels == labels[i]) & (iou[i] > thresh)
        return kept

    for seed, n in ((0, 300), (1, 2500)):
        g = torch.Generator().manual_seed(seed)
        xy = torch.rand(n, 2, generator=g) * 300
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40 + 1], 1)
        scores = torch.randint(1, 6, (n,), generator=g).float() / 10  # many exact ties
        labels = torch.randint(0, 3, (n,), generator=g)
        out = nms_per_image(boxes, scores, labels, nms_thresh=0.5, detections_per_img=n)
        want = greedy(boxes, scores, labels, 0.5)
        np.testing.assert_array_equal(out["boxes"].numpy(), boxes[want].numpy())
        np.testing.assert_array_equal(out["scores"].numpy(), scores[want].numpy())
