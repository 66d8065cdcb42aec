"""``nms="graph"``: exact greedy NMS from plain ONNX operators (the NMS TensorRT-RTX engines
carry). Run in ONNX Runtime against the reference postprocess, bit for bit, tie order included,
on random inputs, the hard cases and N = 5000; built by the real TensorRT-RTX builder."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import DEMO_MODEL
from helpers import TINY_SPEC
from test_nms_plugin import THRESH, random_candidates, reference

from retina_trt import Detector, export_onnx
from retina_trt.export.postprocess_graph import graph_nms_model, iou_threshold_f32


def _session(spec):
    return ort.InferenceSession(graph_nms_model(spec).SerializeToString(), providers=["CPUExecutionProvider"])


def graph_nms(boxes, scores, classes, *, nms_thresh=0.5, d=100, cache={}):  # noqa: B006 (a module cache)
    spec = dataclasses.replace(TINY_SPEC, nms_thresh=nms_thresh, detections_per_img=d, score_thresh=THRESH)
    key = (nms_thresh, d)
    if key not in cache:
        cache[key] = _session(spec)
    outputs = cache[key].run(
        None, {"boxes": boxes.float().numpy(), "scores": scores.float().numpy(), "labels": classes.long().numpy()}
    )
    return tuple(torch.from_numpy(o) for o in outputs)


def assert_equal_to_reference(boxes, scores, classes, *, nms_thresh=0.5, d=100):
    got = graph_nms(boxes, scores, classes, nms_thresh=nms_thresh, d=d)
    want = reference(boxes, scores, classes, nms_thresh, d)
    for g, w, name in zip(got, want, ("num", "boxes", "scores", "classes")):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        assert torch.equal(g, w), f"{name} differs"
    return got


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_inputs_equal_the_reference(seed):
    boxes, scores, classes = random_candidates(seed, 2, 700)
    assert_equal_to_reference(boxes, scores, classes, d=1000)


def test_hard_cases():
    box = torch.tensor([10.0, 10.0, 50.0, 60.0])
    num = assert_equal_to_reference(
        box.repeat(1, 5, 1), torch.full((1, 5), 0.01), torch.zeros((1, 5), dtype=torch.int32)
    )[0]
    assert int(num) == 0  # only padding
    assert_equal_to_reference(box.view(1, 1, 4), torch.tensor([[0.9]]), torch.tensor([[2]], dtype=torch.int32))
    # identical boxes, exact score ties: the lowest index survives
    got = assert_equal_to_reference(
        box.repeat(1, 50, 1), torch.full((1, 50), 0.5), torch.zeros((1, 50), dtype=torch.int32)
    )
    assert int(got[0]) == 1
    classes = torch.arange(6, dtype=torch.int32).repeat_interleave(5).view(1, 30)
    assert int(assert_equal_to_reference(box.repeat(1, 30, 1), torch.rand(1, 30), classes)[0]) == 6
    # exact score ties between separate boxes keep the index order
    assert_equal_to_reference(*random_candidates(3, 2, 400, ties=True), d=300)
    # more survivors than D
    assert int(assert_equal_to_reference(*random_candidates(4, 1, 200, spread=5000), d=5)[0]) == 5
    # zero-area boxes (IoU NaN: suppresses nothing) and huge ones
    degenerate = torch.tensor([[[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 0.0]]])
    assert_equal_to_reference(degenerate, torch.tensor([[0.9, 0.8, 0.7]]), torch.zeros((1, 3), dtype=torch.int32))
    huge = torch.tensor([[[0.0, 0.0, 1e6, 1e6], [1.0, 1.0, 1e6, 1e6], [-1e6, -1e6, 0.0, 0.0]]])
    assert_equal_to_reference(huge, torch.tensor([[0.9, 0.8, 0.7]]), torch.zeros((1, 3), dtype=torch.int32))


def test_a_chain_needs_one_pass_per_link():
    """Boxes in a row, each overlapping the next above the threshold: greedy keeps every other
    one, which only the iteration to the fixed point gets right (a fixed unroll would not)."""
    n = 40
    x = torch.arange(n, dtype=torch.float32) * 3.0  # width 12, step 3: neighbours IoU 9/15 = 0.6,
    boxes = torch.stack([x, torch.zeros(n), x + 12.0, torch.full((n,), 10.0)], 1).view(1, n, 4)  # next-but-one 0.33
    scores = torch.linspace(0.9, 0.5, n).view(1, n)
    got = assert_equal_to_reference(boxes, scores, torch.zeros((1, n), dtype=torch.int32), nms_thresh=0.5)
    assert int(got[0]) == n // 2


def test_iou_exactly_at_the_threshold_is_kept_and_thresholds_round_like_torchvision():
    # IoU exactly 0.5 is not > 0.5: both boxes stay
    boxes = torch.tensor([[[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]]])
    got = assert_equal_to_reference(boxes, torch.tensor([[0.9, 0.8]]), torch.zeros((1, 2), dtype=torch.int32))
    assert int(got[0]) == 2
    for t in (0.3, 0.45, 0.5, 0.6, 0.7, 0.75):
        f = iou_threshold_f32(t)  # float32 IoU > f exactly when IoU > t as a double
        assert float(f) <= t and float(np.nextafter(f, np.float32(1))) > t
        boxes, scores, classes = random_candidates(7, 1, 300)
        assert_equal_to_reference(boxes, scores, classes, nms_thresh=t)


def test_five_thousand_candidates():
    boxes, scores, classes = random_candidates(6, 1, 5000, num_classes=80, spread=1000)
    got = assert_equal_to_reference(boxes, scores, classes, d=100)
    assert int(got[0][0]) == 100


def test_graph_export_equals_candidates_plus_reference_nms(artifacts, images):
    """The demo model: nms="graph" gives exactly what its own candidates (nms="none", same
    ONNX Runtime network) give through the reference NMS on the host."""
    graph = export_onnx(DEMO_MODEL, artifacts / "demo_nms_graph.onnx", nms="graph")
    none = export_onnx(DEMO_MODEL, artifacts / "demo_nms_none.onnx", nms="none")
    with Detector(graph) as a, Detector(none) as b:
        for image in images:
            x, y = a(image), b(image)
            assert len(x.scores) > 0
            np.testing.assert_array_equal(x.boxes_xyxy, y.boxes_xyxy)
            np.testing.assert_array_equal(x.scores, y.scores)
            np.testing.assert_array_equal(x.class_ids, y.class_ids)


def test_tensorrt_rtx_builds_the_nms_at_five_thousand_candidates(tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is installed by `make`")
    from retina_trt.bench.graph_nms import rtx_build_seconds

    path = tmp_path / "nms.onnx"
    path.write_bytes(graph_nms_model(TINY_SPEC).SerializeToString())
    assert rtx_build_seconds(path, 5000, max_batch=8) is not None  # parsed and built, batch 1..8
