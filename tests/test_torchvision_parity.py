"""A torchvision RetinaNet state dict loads with retina_trt.load_checkpoint and gives the same
detections as torchvision's own model: same labels, boxes within 1e-3 px, scores within 1e-5."""

import argparse

import pytest
import torch
from helpers import assert_identical_up_to_ties, tie_groups
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2
from torchvision.ops.misc import FrozenBatchNorm2d

from retina_trt import load_checkpoint, save_checkpoint


def _torchvision_model(version: int) -> torch.nn.Module:
    torch.manual_seed(version)
    build = retinanet_resnet50_fpn if version == 1 else retinanet_resnet50_fpn_v2
    model = build(weights=None, weights_backbone=None, num_classes=91).eval()
    with torch.no_grad():
        # raise the class bias so that hundreds of candidates pass score_thresh
        model.head.classification_head.cls_logits.bias.fill_(-1.0)
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    # smaller images than COCO's 800 px keep the test fast; the code path is the same
    model.transform.min_size = (320,)
    model.transform.max_size = 480
    return model


def _torchvision_detections(model, images):
    """torchvision's postprocess_detections on its own transformed batch (resized coords)."""
    with torch.no_grad():
        image_list, _ = model.transform(images)
        features = list(model.backbone(image_list.tensors).values())
        head_outputs = model.head(features)
        anchors = model.anchor_generator(image_list, features)
        per_level = [x.size(2) * x.size(3) for x in features]
        num_anchors = head_outputs["cls_logits"].size(1) // sum(per_level)
        per_level = [n * num_anchors for n in per_level]
        split_outputs = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        detections = model.postprocess_detections(split_outputs, split_anchors, image_list.image_sizes)
    return image_list, detections


def _assert_identical(ours, theirs):
    """Row by row equal, except that torchvision may return exactly equal scores in any order
    (its batched_nms sorts without a defined order of ties; the order depends on the CPU)."""
    assert_identical_up_to_ties(ours, theirs, box_tol=1e-3, score_tol=1e-5, min_count=100)


@pytest.fixture(scope="module", params=[1, 2], ids=["v1", "v2"])
def torchvision_case(request):
    model = _torchvision_model(request.param)
    images = [torch.rand(3, 240, 320), torch.rand(3, 300, 200)]  # batch 2, different sizes
    image_list, expected = _torchvision_detections(model, images)
    return request.param, model, image_list, expected


def test_detections_match_torchvision(torchvision_case):
    version, model, image_list, expected = torchvision_case
    ours = load_checkpoint(model.state_dict())
    assert ours.spec.p6_from == ("p5" if version == 1 else "c5")
    assert ours.spec.head_norm == (None if version == 1 else "group_norm")
    got = ours.detect(image_list.tensors, image_list.image_sizes)
    assert len(got) == 2
    for g, e in zip(got, expected):
        _assert_identical(g, e)


def test_checkpoint_files_on_disk_detect_identically(torchvision_case, tmp_path):
    version, model, image_list, expected = torchvision_case
    state = model.state_dict()
    legacy = {}
    for key, value in state.items():  # torchvision < 0.13 head layout: conv.{2i}.weight
        for head in ("classification_head", "regression_head"):
            for i in range(4):
                key = key.replace(f"head.{head}.conv.{i}.0.", f"head.{head}.conv.{2 * i}.")
        legacy[key] = value
    files = {
        "plain.pth": state,
        "reference_script.pth": {"model": state, "epoch": 3, "args": argparse.Namespace(lr=0.01)},
        "ddp.pth": {f"module.{k}": v for k, v in state.items()},
    }
    if version == 1:
        files["legacy.pth"] = legacy
    for name, payload in files.items():
        torch.save(payload, tmp_path / name)
        ours = load_checkpoint(tmp_path / name)
        got = ours.detect(image_list.tensors, image_list.image_sizes)
        for g, e in zip(got, expected):
            _assert_identical(g, e)
    # and through our own checkpoint format
    save_checkpoint(load_checkpoint(state), tmp_path / "ours.pt")
    again = load_checkpoint(tmp_path / "ours.pt")
    assert again.spec.anchor_rounding == "torchvision"
    for g, e in zip(again.detect(image_list.tensors, image_list.image_sizes), expected):
        _assert_identical(g, e)


def test_full_torchvision_forward_agrees_in_original_pixels(torchvision_case):
    _, model, _, _ = torchvision_case
    images = [torch.rand(3, 240, 320)]
    with torch.no_grad():
        (expected,) = model(images)
    image_list, _ = model.transform(images)
    ours = load_checkpoint(model.state_dict())
    (got,) = ours.detect(image_list.tensors, image_list.image_sizes)
    scale = torch.tensor([320 / image_list.image_sizes[0][1], 240 / image_list.image_sizes[0][0]] * 2)
    got["boxes"] = got["boxes"] * scale
    _assert_identical(got, expected)


def test_tie_tolerant_comparison_accepts_only_permutations_within_ties():
    """The comparator above is not a blank cheque: it accepts a permutation of exactly equal
    scores and rejects a swap of unequal ones, a changed label and a moved box."""
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4], [2, 2, 9, 9]], dtype=torch.float32)
    expected = {"boxes": boxes, "scores": torch.tensor([0.9, 0.5, 0.5, 0.3]), "labels": torch.tensor([1, 2, 3, 1])}
    assert [list(g) for g in tie_groups(expected["scores"].numpy())] == [[0], [1, 2], [3]]
    swap_ties = [0, 2, 1, 3]
    permuted = {k: v[swap_ties] for k, v in expected.items()}
    assert_identical_up_to_ties(permuted, expected)
    swap_unequal = [1, 0, 2, 3]
    with pytest.raises(AssertionError):
        assert_identical_up_to_ties({k: v[swap_unequal] for k, v in expected.items()}, expected)
    with pytest.raises(AssertionError):
        assert_identical_up_to_ties({**permuted, "labels": torch.tensor([1, 3, 3, 1])}, expected)
    with pytest.raises(AssertionError):
        assert_identical_up_to_ties({**permuted, "boxes": permuted["boxes"] + 0.01}, expected)
