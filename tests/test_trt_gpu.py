"""TensorRT on a GPU (marked ``gpu``: skipped without CUDA and TensorRT, as on our CI machines).

Builds FP32, FP16 and INT8 engines of the demo model with `retina-trt build-engine`, runs them
through the Detector, compares them with ONNX Runtime on the same prepared ONNX, evaluates them,
and checks thread safety and CUDA graphs.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np
import pytest
from helpers import count_matched

from retina_trt import Detector
from retina_trt.cli import main
from retina_trt.data.synthetic import SyntheticConfig, generate_dataset, generate_image
from retina_trt.evaluate import evaluate

pytestmark = pytest.mark.gpu

DEMO = Path(__file__).parent.parent / "samples" / "models" / "shapes_r18.pt"
CONFIG = SyntheticConfig(min_height=256, max_height=256, min_width=256, max_width=256)
# Matched fraction of ONNX Runtime's detections above 0.4 (same prepared ONNX): TensorRT may use
# TF32 for FP32 and other kernels and accumulation orders, so scores drift slightly.
MIN_MATCHED = {"fp32": 0.97, "fp16": 0.95, "int8": 0.9}


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    built = {}
    for precision in ("fp32", "fp16", "int8"):
        output = root / f"demo_{precision}.engine"
        code = main(
            [
                "build-engine",
                "--weights",
                str(DEMO),
                "--precision",
                precision,
                "--calib-data",
                "synthetic",
                "--calib-images",
                "128",
                "--batch",
                "1:4:8",
                "--output",
                str(output),
                "--cache-dir",
                str(root / "cache"),
            ]
        )
        assert code == 0
        built[precision] = (output, root / f"demo_{precision}.{precision}.onnx")
    return built


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnxruntime(precision, engines):
    engine, onnx_path = engines[precision]
    matched = total = 0
    with Detector(engine) as trt_det, Detector(onnx_path) as ort_det:
        assert trt_det.backend == "tensorrt"
        for index in range(24):
            image = generate_image(1, index, CONFIG)[0]
            m, n = count_matched(ort_det(image), trt_det(image), min_score=0.4)
            matched, total = matched + m, total + n
    assert total >= 30 and matched >= MIN_MATCHED[precision] * total, (matched, total)


def test_engine_eval(engines, tmp_path):
    annotations = generate_dataset(tmp_path, num_images=100, seed=1, split="val", config=CONFIG)
    results = {p: evaluate(engines[p][0], annotations, tmp_path / "val")["AP"] for p in engines}
    reference = evaluate(engines["fp32"][1], annotations, tmp_path / "val")["AP"]
    assert abs(results["fp32"] - reference) < 0.005
    assert abs(results["fp16"] - reference) < 0.005
    assert abs(results["int8"] - reference) < 0.01


def test_batches_beyond_the_profile_are_split(engines):
    with Detector(engines["fp16"][0]) as det:
        images = [generate_image(1, i, CONFIG)[0] for i in range(11)]  # max batch 8
        batched = det.predict_batch(images)
        single = [det(image) for image in images]
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)


def test_thread_safety_under_8_threads(engines):
    images = [generate_image(1, i, CONFIG)[0] for i in range(16)]
    with Detector(engines["fp16"][0]) as det:
        expected = [det(image) for image in images]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(det, images * 4))
    for i, result in enumerate(got):
        np.testing.assert_allclose(result.scores, expected[i % 16].scores, atol=1e-5)
        np.testing.assert_allclose(result.boxes_xyxy, expected[i % 16].boxes_xyxy, atol=1e-3)


def test_streams_keep_two_contexts_busy_and_equal_single_calls(engines, tmp_path):
    """det.streams on an engine: batches across sources go through ``submit``, two at once (one
    per execution context), and every frame's detections equal a single call's."""
    import cv2

    from retina_trt.data.synthetic import write_video

    videos = [write_video(tmp_path / f"v{i}.avi", num_frames=24, seed=i, frame_size=(256, 256)) for i in range(3)]
    with Detector(engines["fp16"][0]) as det:
        assert det.parallel_requests == 2
        stream = det.streams({f"s{i}": v for i, v in enumerate(videos)}, push_timeout_ms=50)
        with stream:
            got = {(r.source_id, r.index): r for r in stream}
        assert len(got) == 72 and max(stream.batch_sizes) > 1
        matched = total = 0
        for i, video in enumerate(videos):
            capture = cv2.VideoCapture(str(video))
            for index in range(24):
                ok, frame = capture.read()
                assert ok and np.array_equal(frame, got[(f"s{i}", index)].frame)
                m, n = count_matched(det(frame), got[(f"s{i}", index)].detections, min_score=0.4)
                matched, total = matched + m, total + n
            capture.release()
    assert total >= 30 and matched >= 0.97 * total, (matched, total)  # batched FP16 kernels may differ slightly


def test_cuda_graph_on_off_equal(engines):
    images = [generate_image(1, i, CONFIG)[0] for i in range(6)]
    with Detector(engines["fp16"][0]) as plain, Detector(engines["fp16"][0], cuda_graph=True) as graph:
        for image in images + images:  # second pass replays the captured graphs
            a, b = plain(image), graph(image)
            np.testing.assert_array_equal(a.class_ids, b.class_ids)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


@pytest.mark.parametrize("nms", ["efficient", "plugin"])
def test_cuda_graphs_follow_shape_changes(nms, tmp_path):
    """Static-shape NMS engines are captured, one graph per input shape: alternating batch
    sizes replay the right graph (a graph captured for batch 4 replayed for batch 1 would read
    stale shapes)."""
    engine = tmp_path / f"{nms}.engine"
    assert (
        main(
            [
                "build-engine",
                "--weights",
                str(DEMO),
                "--precision",
                "fp16",
                "--nms",
                nms,
                "--batch",
                "1:4:8",
                "--output",
                str(engine),
            ]
        )
        == 0
    )
    images = [generate_image(1, i, CONFIG)[0] for i in range(8)]
    with Detector(engine) as plain, Detector(engine, cuda_graph=True) as graph:
        for size in (1, 4, 1, 4, 2, 8, 1):
            want, got = plain.predict_batch(images[:size]), graph.predict_batch(images[:size])
            for a, b in zip(want, got):
                np.testing.assert_array_equal(a.class_ids, b.class_ids)
                np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


def test_version_compatible_engine_loads_and_runs(tmp_path):
    """A --version-compat engine carries host code: the runtime allows it and runs the engine."""
    engine = tmp_path / "vc.engine"
    assert (
        main(
            ["build-engine", "--weights", str(DEMO), "--precision", "fp16", "--version-compat", "--output", str(engine)]
        )
        == 0
    )
    image = generate_image(1, 0, CONFIG)[0]
    with Detector(engine) as det:
        assert len(det(image).scores) > 0


def test_zero_copy_torch_input(engines):
    import torch

    from retina_trt.image import preprocess_batch

    image = generate_image(1, 0, CONFIG)[0]
    batch = preprocess_batch([image], min_size=256, max_size=256, size_divisible=128, input_size=(256, 256))
    from retina_trt.trt.runtime import TensorRTBackend

    with TensorRTBackend(engines["fp16"][0]) as backend:
        host = backend.run(batch)[0]
        device = backend.run_torch(torch.from_numpy(batch.pixels).cuda(), torch.from_numpy(batch.image_sizes).cuda())[0]
    np.testing.assert_allclose(host.scores, device.scores, atol=1e-6)


def test_table_1e_sweep_on_the_gpu(tmp_path):
    """A short version of `make bench-gpu`: R50 FP16 engines at two scales beside the paper."""
    from retina_trt.bench.latency import benchmark
    from retina_trt.bench.weights import make_torchvision_weights

    weights = make_torchvision_weights(tmp_path / "r50.pth")
    report = benchmark(
        weights,
        backend="tensorrt",
        scales=[400, 600],
        warmup_s=1.0,
        iterations=20,
        compare_paper=True,
        compare_torchvision=True,
    )
    assert [r["scale"] for r in report["rows"]] == [400, 600]
    assert all(r["backend"] == "tensorrt" and r["paper_ms"] for r in report["rows"])
    assert {"h2d", "compute", "d2h"} <= set(report["rows"][0]["stages_ms"])


@pytest.mark.parametrize("nms", ["graph", "onnx", "plugin", "efficient"])
def test_every_nms_route_the_installed_tensorrt_builds(nms, tmp_path):
    """FP16 engines of the demo model for each NMS kind this TensorRT builds: they run, and the
    graph and onnx routes match ONNX Runtime on the same prepared ONNX."""
    from retina_trt.calibration import prepare_precision

    from retina_trt import export_onnx
    from retina_trt.contract import NMS_BY_FLAVOUR
    from retina_trt.trt import BuildOptions, build_engine
    from retina_trt.trt.compat import flavour_of, import_tensorrt

    if nms not in NMS_BY_FLAVOUR[flavour_of(import_tensorrt())]:
        pytest.skip(f"the installed TensorRT does not build nms={nms}")
    source = export_onnx(DEMO, tmp_path / f"{nms}.onnx", nms=nms, batch=(1, 4, 8))
    prepared = prepare_precision(source, "fp16", tmp_path / f"{nms}.fp16.onnx").path
    engine = build_engine(prepared, tmp_path / f"{nms}.engine", BuildOptions(batch=(1, 4, 8)))
    images = [generate_image(1, index, CONFIG)[0] for index in range(8)]
    with Detector(engine) as det:
        got = det.predict_batch(images)
    assert sum(len(d) for d in got) > 0
    if nms in ("graph", "onnx"):
        with Detector(prepared, backend="onnxruntime") as ort_det:
            want = ort_det.predict_batch(images)
        counts = [count_matched(w, g, min_score=0.4) for w, g in zip(want, got)]
        matched, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
        assert total > 0 and matched >= MIN_MATCHED["fp16"] * total, (matched, total)


def test_plugin_kernels_on_cuda_equal_the_reference():
    """The NMS plugin's Triton kernels compiled for this GPU give the reference NMS's detections
    (B = 1 and 8, N = 1000 and 5000); bench.gpu times them."""
    import torch
    from retina_trt.plugins import retina_nms

    from retina_trt.model.postprocess import nms_per_image

    for b, n in ((1, 1000), (8, 5000)):
        g = torch.Generator().manual_seed(n + b)
        xy = torch.rand(b, n, 2, generator=g) * 1000
        boxes = torch.cat([xy, xy + torch.rand(b, n, 2, generator=g) * 200 + 8], -1)
        scores, classes = torch.rand(b, n, generator=g), torch.randint(0, 80, (b, n), generator=g).int()
        num, out_boxes = (
            t.cpu()
            for t in retina_nms(boxes.cuda(), scores.cuda(), classes.cuda(), nms_thresh=0.5, detections_per_img=100)[:2]
        )
        for i in range(b):
            keep = scores[i] > 0.05
            ref = nms_per_image(
                boxes[i][keep], scores[i][keep], classes[i][keep].long(), nms_thresh=0.5, detections_per_img=100
            )
            k = int(num[i, 0])
            assert k == len(ref["scores"]) and torch.equal(out_boxes[i, :k], ref["boxes"]), (b, n, i)
