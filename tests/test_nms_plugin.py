"""The NMS plugin's Triton kernels (under the Triton interpreter here) against the reference
postprocess and torchvision's batched_nms, on random inputs and the hard cases; and their
ahead-of-time compilation to PTX and cubin for every target GPU (no GPU needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from retina_trt.plugins import retina_nms
from torchvision.ops import batched_nms

from retina_trt.model.postprocess import nms_per_image

THRESH = 0.05


def reference(boxes, scores, classes, nms_thresh, d):
    """The reference postprocess's NMS, padded to the output contract."""
    b, _ = scores.shape
    num = torch.zeros((b, 1), dtype=torch.int32)
    out_boxes, out_scores = torch.zeros((b, d, 4)), torch.zeros((b, d))
    out_classes = torch.zeros((b, d), dtype=torch.int32)
    for i in range(b):
        keep = scores[i].float() > THRESH
        r = nms_per_image(
            boxes[i][keep].float(),
            scores[i][keep].float(),
            classes[i][keep].long(),
            nms_thresh=nms_thresh,
            detections_per_img=d,
        )
        n = len(r["scores"])
        num[i, 0] = n
        out_boxes[i, :n], out_scores[i, :n], out_classes[i, :n] = r["boxes"], r["scores"], r["labels"].int()
    return num, out_boxes, out_scores, out_classes


def assert_equal_to_reference(boxes, scores, classes, *, nms_thresh=0.5, d=100):
    got = retina_nms(boxes, scores, classes, nms_thresh=nms_thresh, detections_per_img=d, score_thresh=THRESH)
    want = reference(boxes, scores, classes, nms_thresh, d)
    for g, w, name in zip(got, want, ("num", "boxes", "scores", "classes")):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        assert torch.equal(g, w), f"{name} differs"
    if boxes.shape[1] <= 1500:  # also the GPU's tiling of the mask kernel (64 rows a program)
        from retina_trt.plugins.nms import MASK_ROWS, nms_from_order, rank_candidates

        order = rank_candidates(scores, score_thresh=THRESH)
        tiled = nms_from_order(
            boxes, scores, classes.to(torch.int32), order, nms_thresh=nms_thresh, detections_per_img=d, rows=MASK_ROWS
        )
        assert all(torch.equal(a, b) for a, b in zip(tiled, want))
    return got


def random_candidates(seed, b, n, num_classes=4, spread=200.0, ties=False):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, n, 2, generator=g) * spread
    boxes = torch.cat([xy, xy + torch.rand(b, n, 2, generator=g) * 60 + 1], -1)
    scores = torch.randint(0, 8, (b, n), generator=g).float() / 8 if ties else torch.rand(b, n, generator=g)
    classes = torch.randint(0, num_classes, (b, n), generator=g).int()
    return boxes, scores, classes


@pytest.mark.parametrize("seed", [0, 1])
def test_random_inputs_equal_reference_and_torchvision(seed):
    boxes, scores, classes = random_candidates(seed, 2, 300)
    num, out_boxes, out_scores, _ = assert_equal_to_reference(boxes, scores, classes, d=1000)
    for i in range(2):  # distinct scores: also torchvision's batched_nms itself
        keep = scores[i] > THRESH
        tv = batched_nms(boxes[i][keep], scores[i][keep], classes[i][keep].long(), 0.5)
        assert torch.equal(out_scores[i, : int(num[i, 0])], scores[i][keep][tv])


def test_hard_cases():
    box = torch.tensor([10.0, 10.0, 50.0, 60.0])
    # no candidates at all, and only padding
    assert_equal_to_reference(torch.zeros((1, 0, 4)), torch.zeros((1, 0)), torch.zeros((1, 0), dtype=torch.int32))
    num = assert_equal_to_reference(
        box.repeat(1, 5, 1), torch.full((1, 5), 0.01), torch.zeros((1, 5), dtype=torch.int32)
    )[0]
    assert int(num) == 0
    # one candidate
    assert_equal_to_reference(box.view(1, 1, 4), torch.tensor([[0.9]]), torch.tensor([[2]], dtype=torch.int32))
    # all boxes identical, exact score ties: the lowest index survives
    got = assert_equal_to_reference(
        box.repeat(1, 50, 1), torch.full((1, 50), 0.5), torch.zeros((1, 50), dtype=torch.int32)
    )
    assert int(got[0]) == 1
    # several classes with identical boxes: one per class
    classes = torch.arange(6, dtype=torch.int32).repeat_interleave(5).view(1, 30)
    got = assert_equal_to_reference(box.repeat(1, 30, 1), torch.rand(1, 30), classes)
    assert int(got[0]) == 6
    # exact score ties between separate boxes keep the index order in the output
    boxes, scores, classes = random_candidates(3, 2, 400, ties=True)
    assert_equal_to_reference(boxes, scores, classes, d=300)
    # more survivors than D
    boxes, scores, classes = random_candidates(4, 1, 200, spread=5000)
    got = assert_equal_to_reference(boxes, scores, classes, d=5)
    assert int(got[0]) == 5
    # degenerate (zero-area) and huge boxes
    degenerate = torch.tensor([[[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 0.0]]])
    assert_equal_to_reference(degenerate, torch.tensor([[0.9, 0.8, 0.7]]), torch.zeros((1, 3), dtype=torch.int32))
    huge = torch.tensor([[[0.0, 0.0, 1e6, 1e6], [1.0, 1.0, 1e6, 1e6], [-1e6, -1e6, 0.0, 0.0]]])
    assert_equal_to_reference(huge, torch.tensor([[0.9, 0.8, 0.7]]), torch.zeros((1, 3), dtype=torch.int32))


def test_fp16_inputs():
    boxes, scores, classes = random_candidates(5, 2, 200)
    boxes16, scores16 = boxes.half(), scores.half()
    assert_equal_to_reference(boxes16, scores16, classes)


def test_five_thousand_candidates_batch_of_two():
    boxes, scores, classes = random_candidates(6, 2, 5000, num_classes=80, spread=1000)
    got = assert_equal_to_reference(boxes, scores, classes, d=100)
    assert (got[0] == 100).all()


@pytest.mark.slow
def test_five_thousand_candidates_batch_of_eight():
    """The issue's size: B = 8, N = 5000 (about 3 minutes under the interpreter: make test-all)."""
    boxes, scores, classes = random_candidates(7, 8, 5000, num_classes=80, spread=1000)
    got = assert_equal_to_reference(boxes, scores, classes, d=100)
    assert (got[0] == 100).all()


def test_bad_shapes():
    with pytest.raises(ValueError, match="expected boxes"):
        retina_nms(torch.zeros(1, 5, 3), torch.zeros(1, 5), torch.zeros(1, 5), nms_thresh=0.5, detections_per_img=10)


AOT = """
import sys, triton
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
from retina_trt.plugins.kernels import mask_kernel, scan_kernel, sort_kernel
from retina_trt.plugins.registration import compile_mask, compile_nms, compile_sort
for cc in (75, 80, 86, 89, 90):
    a = compile_sort(score_thresh=0.05, cc=cc)
    m = compile_mask(nms_thresh=0.5, cc=cc)
    b = compile_nms(detections_per_img=100, block=8192, cc=cc)
    for k in (a, m, b):
        assert f".target sm_{cc}" in k.asm["ptx"], cc
        assert len(k.asm["cubin"]) > 1000
    print(cc, a.name, m.name, b.name, len(a.asm["ptx"]), len(m.asm["ptx"]), len(b.asm["ptx"]))
"""


def test_kernels_compile_ahead_of_time_for_every_target_gpu():
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    result = subprocess.run(
        [sys.executable, "-c", AOT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.split("\n")
    assert [line.split()[0] for line in lines if line] == ["75", "80", "86", "89", "90"]


def test_plugin_export_runs_in_onnxruntime_like_the_onnx_nms(tiny_model, onnx_models, images, tmp_path):
    """nms="plugin": the two plugin nodes (plugin_namespace/plugin_version/aot=1 for TensorRT)
    run in ONNX Runtime as Python custom operators calling the same kernels."""
    import onnx

    from retina_trt import Detector, export_onnx

    path = export_onnx(tiny_model, tmp_path / "plugin.onnx", nms="plugin", input_size=(256, 384))
    nodes = [n for n in onnx.load(str(path)).graph.node if n.domain == "ai.onnx.contrib"]
    assert [n.op_type for n in nodes] == ["RetinaNMSSort", "RetinaNMSMask", "RetinaNMS"]
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_namespace"] == b"retina_trt" and attrs["plugin_version"] == b"1" and attrs["aot"] == 1
    with Detector(path) as plugin, Detector(onnx_models[("onnx", False)], backend="onnxruntime") as reference:
        for image in images[:2]:
            got, want = plugin(image), reference(image)
            assert len(got) == len(want) > 0
            np.testing.assert_array_equal(got.class_ids, want.class_ids)
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
            np.testing.assert_allclose(got.boxes_xyxy, want.boxes_xyxy, atol=1e-4)


def test_efficient_nms_export_wiring(tiny_model, onnx_models, images, tmp_path):
    """nms="efficient": one EfficientNMS_TRT node (TensorRT only) fed with the candidates as
    per-class scores. The node cannot run here; its inputs are checked instead: the graph up to
    it runs in ONNX Runtime, and a class-aware NMS over those inputs gives the reference result."""
    import onnx
    import onnxruntime as ort

    from retina_trt import BackendUnavailableError, Detector, export_onnx
    from retina_trt.image import preprocess_batch

    path = export_onnx(tiny_model, tmp_path / "efficient.onnx", nms="efficient", input_size=(256, 384))
    model = onnx.load(str(path))
    (node,) = [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["max_output_boxes"] == 100 and attrs["class_agnostic"] == 0 and attrs["box_coding"] == 0
    assert attrs["score_threshold"] == pytest.approx(0.05) and attrs["iou_threshold"] == pytest.approx(0.5)
    assert [o.name for o in model.graph.output] == [
        "num_detections",
        "detection_boxes",
        "detection_scores",
        "detection_classes",
    ]
    with pytest.raises(BackendUnavailableError, match="only TensorRT runs"):
        Detector(path)

    # cut the graph at the plugin's inputs and run it
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in node.input)
    model.graph.node.remove(node)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    spec = tiny_model.spec
    batch = preprocess_batch(
        images[:1],
        min_size=spec.min_size,
        max_size=spec.max_size,
        size_divisible=spec.size_divisible,
        input_size=(256, 384),
    )
    boxes, class_scores = (
        torch.from_numpy(a) for a in session.run(None, {"images": batch.pixels, "image_sizes": batch.image_sizes})
    )
    scores, labels = class_scores[0].max(dim=1)
    keep = scores > spec.score_thresh
    got = nms_per_image(boxes[0][keep], scores[keep], labels[keep], nms_thresh=0.5, detections_per_img=100)
    with Detector(onnx_models[("onnx", False)], backend="onnxruntime") as det:
        want = det._backend.run(batch)[0]
    np.testing.assert_allclose(got["scores"].numpy(), want.scores, atol=1e-6)
    np.testing.assert_allclose(got["boxes"].numpy(), want.boxes, atol=1e-4)


def test_package_exports_what_it_lists():
    import retina_trt.plugins as plugins

    assert all(hasattr(plugins, name) for name in plugins.__all__), plugins.__all__
