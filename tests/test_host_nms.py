"""The reference NMS in numpy (``retina_trt.contract.nms``, the torch-free host postprocess of
``nms="none"`` outputs) equals the torch reference (``retina_trt.model.postprocess``) bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TINY_SPEC

from retina_trt.contract.nms import finish_candidates, nms_per_image
from retina_trt.model import postprocess as reference


def _torch_nms(boxes, scores, labels, thresh, limit):
    result = reference.nms_per_image(
        torch.from_numpy(boxes),
        torch.from_numpy(scores),
        torch.from_numpy(labels),
        nms_thresh=thresh,
        detections_per_img=limit,
    )
    return result["boxes"].numpy(), result["scores"].numpy(), result["labels"].numpy()


def _assert_same(got, want):
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def random_boxes(rng, n, *, classes=3, span=200.0, ties=False):
    xy = rng.uniform(0, span, (n, 2)).astype(np.float32)
    wh = rng.uniform(1, span / 3, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0.05, 1.0, n).astype(np.float32)
    if ties:  # few distinct scores: the tie order decides
        scores = np.round(scores * 4).astype(np.float32) / 4 + np.float32(0.01)
    return boxes, scores, rng.integers(0, classes, n).astype(np.int64)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thresh", [0.3, 0.5, 0.75])
def test_equal_to_the_torch_reference(seed, thresh):
    rng = np.random.default_rng(seed)
    boxes, scores, labels = random_boxes(rng, 400, ties=seed % 2 == 1)
    _assert_same(
        nms_per_image(boxes, scores, labels, nms_thresh=thresh, detections_per_img=100),
        _torch_nms(boxes, scores, labels, thresh, 100),
    )


def test_degenerate_boxes_and_exact_threshold():
    """Identical boxes, zero-area boxes (0/0 IoU), and a pair whose float32 IoU is exactly 0.5."""
    boxes = np.array(
        [[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 20], [0, 0, 10, 10]], dtype=np.float32
    )
    scores = np.array([0.9, 0.9, 0.8, 0.8, 0.7, 0.6], dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 1, 1], dtype=np.int64)  # boxes 4, 5: IoU exactly 0.5
    for thresh in (0.5, np.nextafter(0.5, 0.0), 0.49):
        got = nms_per_image(boxes, scores, labels, nms_thresh=float(thresh), detections_per_img=10)
        _assert_same(got, _torch_nms(boxes, scores, labels, float(thresh), 10))
    # one of the identical pair, both zero-area boxes (0/0 is no overlap), and the class-1 pair
    # only while its IoU (0.5) is not above the threshold
    assert len(nms_per_image(boxes, scores, labels, nms_thresh=0.5, detections_per_img=10).scores) == 5
    assert len(nms_per_image(boxes, scores, labels, nms_thresh=0.49, detections_per_img=10).scores) == 4


def test_finish_candidates_equals_postprocess_candidates():
    rng = np.random.default_rng(7)
    boxes, scores, classes = [], [], []
    for _ in range(3):
        b, s, c = random_boxes(rng, 300, ties=True)
        s[rng.random(300) < 0.3] = 0.0  # padding rows (score <= score_thresh)
        boxes.append(b), scores.append(s), classes.append(c)
    boxes, scores, classes = np.stack(boxes), np.stack(scores), np.stack(classes).astype(np.int32)
    got = finish_candidates(boxes, scores, classes, TINY_SPEC)
    want = reference.postprocess_candidates(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), TINY_SPEC
    )
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        _assert_same(g, (w["boxes"].numpy(), w["scores"].numpy(), w["labels"].numpy()))
        assert len(g.scores) > 0
