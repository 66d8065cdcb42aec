import math

import pytest
import torch
import torch.nn.functional as F

from retina_trt.model.loss import (
    BACKGROUND,
    IGNORE,
    focal_loss_star,
    match_anchors,
    retinanet_loss,
    sigmoid_focal_loss,
)

LOGITS = torch.linspace(-6, 6, 25, dtype=torch.float64)


@pytest.mark.parametrize("target", [0.0, 1.0])
def test_gamma_zero_is_cross_entropy(target):
    targets = torch.full_like(LOGITS, target)
    got = sigmoid_focal_loss(LOGITS, targets, alpha=None, gamma=0.0, reduction="none")
    expected = F.binary_cross_entropy_with_logits(LOGITS, targets, reduction="none")
    torch.testing.assert_close(got, expected)


def test_focal_loss_matches_eq5():
    targets = (torch.arange(25) % 2).double()
    p = torch.sigmoid(LOGITS)
    p_t = torch.where(targets == 1, p, 1 - p)
    alpha_t = torch.where(targets == 1, 0.25, 0.75)
    expected = -alpha_t * (1 - p_t) ** 2 * torch.log(p_t)
    got = sigmoid_focal_loss(LOGITS, targets, alpha=0.25, gamma=2.0, reduction="none")
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("target", [0.0, 1.0])
def test_focal_loss_gradient_is_appendix_b_eq10(gamma, target):
    x = LOGITS.clone().requires_grad_(True)
    targets = torch.full_like(LOGITS, target)
    sigmoid_focal_loss(x, targets, alpha=None, gamma=gamma, reduction="sum").backward()
    y = 1.0 if target == 1.0 else -1.0
    p_t = torch.sigmoid(y * LOGITS)
    expected = y * (1 - p_t) ** gamma * (gamma * p_t * torch.log(p_t) + p_t - 1)
    torch.testing.assert_close(x.grad, expected)


def test_focal_loss_star_and_its_gradient_eq11():
    x = LOGITS.clone().requires_grad_(True)
    targets = torch.ones_like(LOGITS)
    loss = focal_loss_star(x, targets, gamma=2.0, beta=1.0, alpha=None, reduction="none")
    p_star = torch.sigmoid(2.0 * LOGITS + 1.0)
    torch.testing.assert_close(loss, -torch.log(p_star) / 2.0)
    loss.sum().backward()
    torch.testing.assert_close(x.grad, p_star - 1)


def test_focal_loss_is_stable_for_extreme_logits():
    x = torch.tensor([-200.0, -50.0, 50.0, 200.0], requires_grad=True)
    for target in (0.0, 1.0):
        loss = sigmoid_focal_loss(x, torch.full((4,), target), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_match_anchors_thresholds():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 -> fg
            [0.0, 0.0, 10.0, 18.0],  # IoU 0.556 -> fg
            [0.0, 0.0, 10.0, 22.0],  # IoU 0.4545 -> ignored
            [0.0, 0.0, 10.0, 30.0],  # IoU 0.333 -> bg
        ]
    )
    assert match_anchors(anchors, gt).tolist() == [0, 0, IGNORE, BACKGROUND]
    assert match_anchors(anchors, torch.zeros((0, 4))).tolist() == [BACKGROUND] * 4


def test_low_quality_matches_keep_the_best_anchor():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor([[0.0, 0.0, 10.0, 30.0], [20.0, 20.0, 30.0, 30.0]])
    assert match_anchors(anchors, gt).tolist() == [BACKGROUND, BACKGROUND]
    assert match_anchors(anchors, gt, allow_low_quality_matches=True).tolist() == [0, BACKGROUND]


def test_total_loss_is_normalized_by_foreground_count():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 30.0], [50.0, 50.0, 60.0, 60.0]])
    logits = torch.zeros(1, 3, 2)
    deltas = torch.zeros(1, 3, 4)
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]
    out = retinanet_loss(logits, deltas, anchors, targets)
    # one foreground anchor: FL over 3 anchors x 2 classes with p = 0.5
    fg = 0.25 * 0.25 * math.log(2)
    bg = 0.75 * 0.25 * math.log(2)
    assert out["classification"].item() == pytest.approx(fg + 5 * bg)
    assert out["box_regression"].item() == pytest.approx(0.0)
    torch.testing.assert_close(out["loss"], out["classification"] + out["box_regression"])


def test_a_few_training_steps_reduce_the_loss():
    from helpers import TINY_SPEC

    from retina_trt import RetinaNet
    from retina_trt.model.postprocess import flatten_level

    torch.manual_seed(0)
    model = RetinaNet(TINY_SPEC).train()  # the paper's initialization (prior pi = 0.01)
    images = torch.randn(2, 3, 128, 128)
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[30.0, 40.0, 120.0, 100.0], [5.0, 5.0, 25.0, 20.0]]), "labels": torch.tensor([0, 3])},
    ]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        out = model(images)
        anchors = torch.cat(model.anchors((128, 128), out))
        logits = torch.cat([flatten_level(x, 5) for x in out.cls_logits], dim=1)
        deltas = torch.cat([flatten_level(x, 4) for x in out.box_deltas], dim=1)
        loss = retinanet_loss(logits, deltas, anchors, targets, allow_low_quality_matches=True)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.95 * losses[0], losses
