"""ONNX Runtime (nms="onnx" and nms="none" + host postprocess, fixed and dynamic shapes) gives the
reference detections of RetinaNet.detect; Detector on .pt and .onnx agree in original pixels."""

import cv2
import onnxruntime as ort
import pytest
import torch
from helpers import TINY_SPEC, assert_same_detections

from retina_trt import Detector
from retina_trt.image import preprocess_batch
from retina_trt.model.normalize import PixelNormalizer
from retina_trt.model.postprocess import postprocess_candidates


def _run_onnx(path, nms, batch):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = sess.run(None, {"images": batch.pixels, "image_sizes": batch.image_sizes})
    if nms == "none":
        return postprocess_candidates(*(torch.from_numpy(o) for o in outputs), TINY_SPEC)
    num, boxes, scores, classes = outputs
    return [
        {
            "boxes": torch.from_numpy(boxes[i, : num[i, 0]]),
            "scores": torch.from_numpy(scores[i, : num[i, 0]]),
            "labels": torch.from_numpy(classes[i, : num[i, 0]]).long(),
        }
        for i in range(len(num))
    ]


@pytest.mark.parametrize("nms", ["onnx", "none"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed", "dynamic"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_onnx_matches_reference(tiny_model, onnx_models, images, nms, dynamic, batch_size):
    batch = preprocess_batch(
        images[:batch_size],
        min_size=TINY_SPEC.min_size,
        max_size=TINY_SPEC.max_size,
        size_divisible=TINY_SPEC.size_divisible,
        input_size=None if dynamic else (256, 384),
    )
    if batch_size == 3:
        assert len({tuple(s) for s in batch.image_sizes}) == 3, "images of different sizes"
    expected = tiny_model.detect(
        PixelNormalizer(TINY_SPEC)(torch.from_numpy(batch.pixels)),
        [tuple(int(v) for v in s) for s in batch.image_sizes],
    )
    got = _run_onnx(onnx_models[(nms, dynamic)], nms, batch)
    assert len(got) == batch_size
    for g, e in zip(got, expected):
        assert_same_detections(g, e, min_count=50)


@pytest.mark.parametrize("nms", ["onnx", "none"])
def test_detector_pt_and_onnx_agree_in_original_pixels(tiny_checkpoint, onnx_models, images, nms):
    with Detector(tiny_checkpoint) as pt, Detector(onnx_models[(nms, True)], backend="onnxruntime") as onnx_det:
        assert pt.backend == "torch" and onnx_det.backend == "onnxruntime"
        for a, b in zip(pt.predict_batch(images), onnx_det.predict_batch(images)):
            assert_same_detections(b, a, box_tol=2e-3, min_count=50)
        single = onnx_det(images[1])
        assert_same_detections(single, pt(images[1]), box_tol=2e-3)


def test_fixed_size_detector_matches_pt_when_image_fits(tiny_checkpoint, onnx_models, images):
    """A 240x320 image resized as trained (256x341) fits the 256x384 export: same results."""
    with Detector(tiny_checkpoint) as pt, Detector(onnx_models[("onnx", False)], backend="onnxruntime") as fixed:
        assert fixed.input_size == (256, 384)
        assert_same_detections(fixed(images[0]), pt(images[0]), box_tol=2e-3, min_count=50)
        wide = cv2.resize(images[0], (4000, 1000))  # letterboxed: shrunk to fit 256x384
        dets = fixed(wide)
        assert len(dets) > 0 and dets.boxes_xyxy.min() >= 0
        assert dets.boxes_xyxy[:, 0::2].max() <= 4000 and dets.boxes_xyxy[:, 1::2].max() <= 1000
