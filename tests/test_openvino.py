"""The OpenVINO backend against the ONNX Runtime reference: every CPU-runnable export, the INT8
Q/DQ graph, the precision each layer really ran in, routing and fallback, the compiled-model
cache, threads and asynchronous requests."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import scene
from helpers import assert_same_detections

from retina_trt import Detector, export_onnx
from retina_trt.errors import ModelFormatError
from retina_trt.runtime.cpu import cpu_flags, cpu_isa

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (make installs it)")

from retina_trt.runtime.openvino_backend import INT8_KINDS, OpenVinoBackend, resolve_precision  # noqa: E402
from retina_trt.runtime.openvino_cache import usable_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAPABILITIES = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
HAS_BF16 = "BF16" in CAPABILITIES
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason=f"this CPU has no BF16 (OpenVINO capabilities {CAPABILITIES})")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test compiles into its own cache, so cache hits are the test's own."""
    monkeypatch.setenv("RETINA_TRT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def demo_int8(demo_onnx, tmp_path_factory) -> Path:
    """The demo model's INT8 Q/DQ graph (what build-engine --precision int8 makes; 16 synthetic images)."""
    from retina_trt.calibration import CalibrationConfig, prepare_precision

    root = tmp_path_factory.mktemp("ov_int8")
    calibration = CalibrationConfig(source="synthetic", num_images=16, batch_size=4)
    return prepare_precision(
        demo_onnx, "int8", root / "demo.int8.onnx", calibration=calibration, cache_dir=root / "cache"
    ).path


@pytest.fixture(scope="module")
def more_exports(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """nms='graph' (fixed) and a batch range of 2..4 (dynamic H x W) of the tiny model."""
    root = tmp_path_factory.mktemp("ov_exports")
    return {
        "graph": export_onnx(tiny_model, root / "graph.onnx", nms="graph", input_size=(256, 384)),
        "batch2to4": export_onnx(tiny_model, root / "b24.onnx", nms="onnx", dynamic_shapes=True, batch=(2, 2, 4)),
    }


def _pair(path: Path, **options):
    return Detector(path, backend="openvino", precision="f32", **options), Detector(path, backend="onnxruntime")


@pytest.mark.parametrize(("nms", "dynamic"), [("onnx", False), ("onnx", True), ("none", False), ("none", True)])
def test_f32_equals_onnxruntime_on_every_cpu_export(onnx_models, images, nms, dynamic):
    ov_det, ort_det = _pair(onnx_models[(nms, dynamic)])
    with ov_det, ort_det:
        assert ov_det.backend == "openvino" and ov_det.precision == "f32"
        for image in images:
            assert_same_detections(ov_det(image), ort_det(image), box_tol=0.05, score_tol=2e-4)
        # a batch of differently sized images, as one padded batch
        for got, want in zip(ov_det.predict_batch(images), ort_det.predict_batch(images)):
            assert_same_detections(got, want, box_tol=0.05, score_tol=2e-4)


def test_graph_nms_and_batch_ranges(more_exports, images):
    for name in ("graph", "batch2to4"):
        ov_det, ort_det = _pair(more_exports[name])
        with ov_det, ort_det:
            batch = images[:2]  # within 2..4
            for got, want in zip(ov_det.predict_batch(batch), ort_det.predict_batch(batch)):
                assert_same_detections(got, want, box_tol=0.05, score_tol=2e-4)


def test_trained_model_f32_detections_equal(demo_onnx):
    frames = [scene(256, 256, s) for s in range(4)]
    ov_det, ort_det = _pair(demo_onnx)
    with ov_det, ort_det:
        total = 0
        for frame in frames:
            want = ort_det(frame)
            assert_same_detections(ov_det(frame), want, box_tol=0.05, score_tol=2e-4, min_count=0)
            total += len(want)
        assert total > 0


def test_int8_graph_runs_every_convolution_in_int8_and_postprocess_in_fp32(demo_int8):
    with Detector(demo_int8, backend="openvino", precision="f32") as det:
        assert det.precision == "int8+f32"
        report = det.layer_precisions()
        assert _all_int8(report["convolutions"])
        _assert_fp32_postprocess(report)
        dets = det(scene(256, 256, 5))
        assert np.isfinite(dets.boxes_xyxy).all()


@needs_bf16
def test_bf16_hint_runs_convolutions_in_bf16_and_keeps_postprocess_fp32(demo_onnx):
    with Detector(demo_onnx, backend="openvino", precision="bf16") as det:
        report = det.layer_precisions()
        assert report["convolutions"] == {"bf16": 78}
        _assert_fp32_postprocess(report)


def _all_int8(convolutions: dict) -> bool:
    """Every one of the 78 convolutions in one 8-bit integer kind (i8 with VNNI/AMX, u8 on AVX2)."""
    return len(convolutions) == 1 and set(convolutions) <= set(INT8_KINDS) and sum(convolutions.values()) == 78


def _assert_fp32_postprocess(report):
    post = report["postprocess"]
    assert post.get("f32", 0) > 50, post  # decode, sigmoid, top-k, NMS: dozens of layers
    reduced = set(post) & {"bf16", "f16", "i8"}
    assert not reduced, f"reduced precision after the network: {post}"


def test_auto_precision_is_the_fastest_this_cpu_has(demo_onnx):
    expected = "bf16" if HAS_BF16 and "amx_bf16" in cpu_flags() else "f32"
    with Detector(demo_onnx) as det:
        assert det.backend == "openvino" and det.precision == expected, cpu_isa()


def test_resolve_precision_rules():
    amx = frozenset({"avx512f", "amx_bf16"})
    vnni = frozenset({"avx512f", "avx512_vnni", "avx512_bf16"})
    assert resolve_precision("auto", ["FP32", "BF16", "INT8"], amx) == "bf16"
    assert resolve_precision("auto", ["FP32", "BF16", "INT8"], vnni) == "f32"  # BF16 without AMX: not faster
    assert resolve_precision("auto", ["FP32", "INT8"], amx) == "f32"
    assert resolve_precision("f32", ["FP32"], amx) == "f32"
    with pytest.raises(ValueError, match="no BF16 support.*precision='f32'"):
        resolve_precision("bf16", ["FP32", "INT8"], vnni)
    with pytest.raises(ValueError, match="must be one of"):
        resolve_precision("fp16", ["FP32"], amx)


def test_auto_routing_and_onnxruntime_options(demo_onnx, caplog):
    with caplog.at_level(logging.INFO, logger="retina_trt"):
        with Detector(demo_onnx) as det:
            assert det.backend == "openvino"
    assert any("backend=openvino" in r.getMessage() and "runs in" in r.getMessage() for r in caplog.records)
    with Detector(demo_onnx, session_config={"session.intra_op.allow_spinning": "0"}) as det:
        assert det.backend == "onnxruntime"  # ONNX Runtime options ask for ONNX Runtime
    with Detector(demo_onnx, backend="onnxruntime") as det:
        assert det.backend == "onnxruntime" and det.layer_precisions() is None


def test_model_openvino_cannot_run_falls_back_or_names_the_node(tiny_model, tmp_path, caplog):
    plugin = export_onnx(tiny_model, tmp_path / "plugin.onnx", nms="plugin", input_size=(256, 384))
    with pytest.raises(
        ModelFormatError,
        match="OpenVINO cannot read .*No conversion rule found for operations: ai.onnx.contrib.RetinaNMS",
    ):
        OpenVinoBackend(plugin)
    with caplog.at_level(logging.INFO, logger="retina_trt"):
        with Detector(plugin) as det:
            assert det.backend == "onnxruntime"
    assert any("OpenVINO cannot run plugin.onnx" in r.getMessage() for r in caplog.records)


def test_without_openvino_auto_falls_back_and_explicit_names_the_extra(demo_onnx):
    code = f"""
import sys, logging
sys.modules["openvino"] = None  # as if not installed
import importlib.util
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "openvino" else real(name, *a)
logging.basicConfig(level=logging.INFO, format="%(message)s")
from retina_trt import Detector
from retina_trt.errors import BackendUnavailableError
det = Detector({str(demo_onnx)!r})
print("auto:", det.backend)
try:
    Detector({str(demo_onnx)!r}, backend="openvino")
except BackendUnavailableError as err:
    print("explicit:", err)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "auto: onnxruntime" in result.stdout, result.stderr
    assert 'explicit: OpenVINO is not installed: pip install "retina-trt[openvino]"' in result.stdout
    assert "OpenVINO is not installed, so ONNX Runtime runs" in result.stderr


def test_cache_second_start_hits_and_changes_never_reuse(demo_onnx, demo_int8, tmp_path):
    cache = tmp_path / "ovcache"
    first = OpenVinoBackend(demo_onnx, precision="f32", cache_dir=cache)
    assert not first.loaded_from_cache and len(list(cache.glob("*.blob"))) == 1
    again = OpenVinoBackend(demo_onnx, precision="f32", cache_dir=cache)
    assert again.loaded_from_cache
    if HAS_BF16:  # another hint: a new blob
        assert not OpenVinoBackend(demo_onnx, precision="bf16", cache_dir=cache).loaded_from_cache
    assert not OpenVinoBackend(demo_onnx, precision="f32", num_threads=1, cache_dir=cache).loaded_from_cache
    # the key is the content: the same model under another path reuses its entry ...
    swapped = tmp_path / "model.onnx"
    shutil.copy(demo_onnx, swapped)
    assert OpenVinoBackend(swapped, precision="f32", cache_dir=cache).loaded_from_cache
    # ... another model under that path never does
    shutil.copy(demo_int8, swapped)
    changed = OpenVinoBackend(swapped, precision="f32", cache_dir=cache)
    assert not changed.loaded_from_cache and changed.precision == "int8+f32"
    assert _all_int8(changed.layer_precisions()["convolutions"])


def test_corrupt_cache_entry_recompiles(demo_onnx, tmp_path, images):
    cache = tmp_path / "ovcache"
    want = OpenVinoBackend(demo_onnx, precision="f32", cache_dir=cache)
    (blob,) = cache.glob("*.blob")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = os.urandom(4096)  # weights overwritten mid-file
    blob.write_bytes(bytes(data))
    rebuilt = OpenVinoBackend(demo_onnx, precision="f32", cache_dir=cache)
    assert not rebuilt.loaded_from_cache
    assert OpenVinoBackend(demo_onnx, precision="f32", cache_dir=cache).loaded_from_cache  # rewritten whole
    blob.write_bytes(b"\0" * 100)  # truncated
    truncated = OpenVinoBackend(demo_onnx, precision="f32", cache_dir=cache)
    assert not truncated.loaded_from_cache
    # an entry whose digest matches but that OpenVINO refuses: recompiled too
    (digest,) = cache.glob("*.sha256")
    blob.write_bytes(b"garbage")
    digest.write_text(hashlib.sha256(b"garbage").hexdigest())
    refused = OpenVinoBackend(demo_onnx, precision="f32", cache_dir=cache)
    assert not refused.loaded_from_cache
    from retina_trt.image import preprocess_batch

    batch = preprocess_batch(
        [scene(256, 256, 9)], min_size=256, max_size=256, size_divisible=128, input_size=(256, 256)
    )
    for a, b in zip(truncated.run(batch), want.run(batch)):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_unwritable_cache_folder_runs_without_cache_and_warns_once(demo_onnx, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="retina_trt"):
        for _ in range(2):
            backend = OpenVinoBackend(demo_onnx, precision="f32", cache_dir=blocker / "cache")
            assert not backend.loaded_from_cache
    warnings = [r for r in caplog.records if "not writable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert not usable_folder(Path("/dev/null/cache"))


def test_thread_count_is_respected(demo_onnx):
    backend = OpenVinoBackend(demo_onnx, precision="f32", num_threads=1)
    assert backend._compiled.get_property("INFERENCE_NUM_THREADS") == 1
    with Detector(demo_onnx, backend="openvino", num_threads=2) as det:
        assert det._backend._compiled.get_property("INFERENCE_NUM_THREADS") == 2


def test_one_compiled_model_serves_many_threads(demo_onnx):
    frames = [scene(256, 256, s) for s in range(6)]
    with Detector(demo_onnx, backend="openvino", precision="f32") as det:
        want = [det(f) for f in frames]
        got: dict[int, object] = {}

        def work(i):
            for _ in range(3):
                got[i] = det(frames[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(frames))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for i in range(len(frames)):
            assert_same_detections(got[i], want[i], box_tol=1e-4, score_tol=1e-6, min_count=0)


def test_async_requests_keep_order_and_equal_sync(demo_onnx):
    frames = [scene(256, 256, s) for s in range(10)]
    with Detector(demo_onnx, backend="openvino", precision="f32") as det:
        assert det.parallel_requests >= 2  # one CPU stream per core
        want = [det(f) for f in frames]
        for got, expected in zip(det.predict_batch(frames), want):  # split across the streams
            assert_same_detections(got, expected, box_tol=0.05, score_tol=2e-4, min_count=0)
        futures = [det.submit([f]) for f in frames]
        for future, expected in zip(futures, want):
            assert_same_detections(future.result(timeout=60)[0], expected, box_tol=0.05, score_tol=2e-4, min_count=0)


def test_stream_on_openvino_equals_per_frame_results(demo_onnx, video_file):
    with Detector(demo_onnx, backend="openvino", precision="f32") as det:
        with det.stream(video_file) as frames:
            results = list(frames)
        assert [r.index for r in results] == list(range(12))
        for r in results[::3]:
            assert_same_detections(r.detections, det(r.frame), box_tol=0.05, score_tol=2e-4, min_count=0)


def test_cli_detect_says_which_backend_and_precision(demo_onnx, image_dir, tmp_path):
    from retina_trt.cli import main

    exe = Path(sys.executable).with_name("retina-trt")
    result = subprocess.run(
        [str(exe), "detect", str(demo_onnx), str(image_dir), "--output", str(tmp_path / "o"), "--cpu-precision", "f32"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "backend: openvino (f32)" in result.stdout
    assert (
        main(["detect", str(demo_onnx), str(image_dir), "--output", str(tmp_path / "p"), "--backend", "onnxruntime"])
        == 0
    )


def test_cli_info_reports_per_layer_precision(demo_int8, capsys):
    from retina_trt.cli import main

    assert main(["info", str(demo_int8), "--cpu-precision", "f32"]) == 0
    out = capsys.readouterr().out
    assert "OpenVINO" in out and "on this CPU" in out
    assert "precision int8+f32: convolutions 78 i8" in out or "precision int8+f32: convolutions 78 u8" in out


def test_bf16_request_on_a_cpu_without_it_is_one_line(demo_onnx, monkeypatch):
    import retina_trt.runtime.openvino_backend as module

    real = module.resolve_precision
    monkeypatch.setattr(module, "resolve_precision", lambda p, caps, flags=None: real(p, ["FP32", "INT8"], flags))
    with pytest.raises(ValueError, match="no BF16 support"):
        Detector(demo_onnx, backend="openvino", precision="bf16")
    from retina_trt.cli import main

    # the CLI turns it into one line and exit code 2
    assert (
        main(
            [
                "detect",
                str(demo_onnx),
                str(ROOT / "README.md"),
                "--output",
                "/tmp/unused-ov",
                "--backend",
                "openvino",
                "--cpu-precision",
                "bf16",
            ]
        )
        == 2
    )


def test_missing_model_and_unknown_precision(tmp_path, demo_onnx):
    with pytest.raises(ModelFormatError, match="not found"):
        OpenVinoBackend(tmp_path / "none.onnx")
    with pytest.raises(ValueError, match="must be one of"):
        Detector(demo_onnx, backend="openvino", precision="int4")


def test_precision_on_a_backend_that_has_none_is_refused(demo_onnx, tmp_path, capsys):
    from retina_trt.cli import main
    from retina_trt.data.synthetic import SyntheticConfig, generate_dataset

    with pytest.raises(ValueError, match="is OpenVINO's option"):
        Detector(demo_onnx, backend="onnxruntime", precision="bf16")
    config = SyntheticConfig(min_height=256, max_height=256, min_width=256, max_width=256)
    annotations = generate_dataset(tmp_path / "ds", num_images=1, seed=1, split="val", config=config)
    assert (
        main(
            [
                "eval",
                str(demo_onnx),
                "--annotations",
                str(annotations),
                "--images",
                str(tmp_path / "ds" / "val"),
                "--backend",
                "onnxruntime",
                "--cpu-precision",
                "f32",
            ]
        )
        == 2
    )
    assert "is OpenVINO's option" in capsys.readouterr().err


def _is_static(compiled) -> bool:
    return all(port.get_partial_shape().is_static for port in compiled.inputs)


def test_single_images_run_on_a_static_shape_model_and_batches_on_the_dynamic_one(onnx_models, images, tmp_path):
    fixed = OpenVinoBackend(onnx_models[("onnx", False)], precision="f32", cache_dir=tmp_path / "c")
    assert _is_static(fixed._compiled)  # batch 1 of a fixed-size export: compiled for [1, 256, 384, 3]
    assert [p.get_partial_shape().to_shape()[0] for p in fixed._compiled.inputs] == [1, 1]
    with Detector(onnx_models[("onnx", False)], backend="openvino", precision="f32") as det:
        batch = det.predict_batch(images)  # 3 images: one request on the dynamic model
        assert {static for _, static in det._backend._models} == {True, False}
        for got, image in zip(batch, images):
            assert_same_detections(got, det(image), box_tol=0.05, score_tol=2e-4, min_count=0)
    again = OpenVinoBackend(onnx_models[("onnx", False)], precision="f32", cache_dir=tmp_path / "c")
    assert again.loaded_from_cache and _is_static(again._compiled)  # the static entry, not the dynamic one
    dynamic = OpenVinoBackend(onnx_models[("onnx", True)], precision="f32", cache_dir=tmp_path / "c")
    assert dynamic._static is None and not _is_static(dynamic._compiled)  # any H x W: one dynamic model
    with Detector(onnx_models[("onnx", False)], backend="openvino", precision="f32", static_shapes=False) as det:
        assert det._backend._static is None and not _is_static(det._backend._compiled)  # the user's choice


def test_submitted_batches_never_exceed_the_parallel_requests_in_all(demo_onnx, monkeypatch):
    backend = OpenVinoBackend(demo_onnx, precision="f32")
    jobs, started, done, most = backend.parallel_requests, [0], [0], [0]
    lock = threading.Lock()
    feeds, outputs = backend._feeds, backend._outputs

    def counted_feeds(batch):
        with lock:
            started[0] += 1
            most[0] = max(most[0], started[0] - done[0])
        return feeds(batch)

    def counted_outputs(request):
        result = outputs(request)
        with lock:
            done[0] += 1
        return result

    monkeypatch.setattr(backend, "_feeds", counted_feeds)
    monkeypatch.setattr(backend, "_outputs", counted_outputs)
    from retina_trt.image import preprocess_batch

    frames = [scene(256, 256, s) for s in range(3)]
    batches = [
        preprocess_batch(frames[: 1 + i % 3], min_size=256, max_size=256, size_divisible=128, input_size=(256, 256))
        for i in range(12)
    ]
    futures = [backend.submit(b) for b in batches]  # batch sizes 1, 2, 3: the static and the dynamic queue
    results = [f.result(timeout=120) for f in futures]
    assert [len(r) for r in results] == [1 + i % 3 for i in range(12)]
    assert {static for hint, static in backend._models if hint == "THROUGHPUT"} == {True, False}
    assert 1 <= most[0] <= jobs, (most[0], jobs)
    backend.close()
