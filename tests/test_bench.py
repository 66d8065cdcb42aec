"""`retina-trt bench` / `retina_trt.bench.latency`: statistics, stages, comparisons, reports.

Speed targets are not asserted here (timed unit tests are noise); `make bench` measures them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from retina_trt.bench.latency import (
    PAPER_TABLE_1E,
    LatencyStats,
    _depth,
    bench_image,
    benchmark,
    time_calls,
)
from retina_trt.bench.report import write_report
from retina_trt.cli import main


def test_statistics():
    stats = LatencyStats(tuple(float(v) for v in range(1, 101)), batch=2).to_dict()
    assert stats["iterations"] == 100 and stats["min_ms"] == 1 and stats["max_ms"] == 100
    assert stats["median_ms"] == pytest.approx(50.5) and stats["mean_ms"] == pytest.approx(50.5)
    assert stats["p90_ms"] == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert stats["p99_ms"] > stats["p95_ms"] > stats["p90_ms"]
    assert stats["throughput_ips"] == pytest.approx(2000 / 50.5, rel=1e-3)


def test_time_calls_warms_up_then_times():
    calls = []
    events = []
    samples = time_calls(
        lambda: calls.append(1),
        warmup_s=0.0,
        iterations=5,
        duration_s=None,
        after_warmup=lambda: events.append(len(calls)),
    )
    assert len(samples) == 5 and len(calls) == 6 and events == [1]  # one warm-up call at least
    samples = time_calls(lambda: None, warmup_s=0.0, iterations=None, duration_s=0.05)
    assert len(samples) >= 1


def test_paper_table_and_depths():
    assert PAPER_TABLE_1E[(50, 600)] == 98 and PAPER_TABLE_1E[(101, 800)] == 198
    assert _depth("resnet50") == 50 and _depth("resnet101") == 101 and _depth("resnet18") == 18
    assert _depth("resnext101_32x8d") is None


def test_benchmark_checkpoint_per_scale_with_stages_and_report(tiny_checkpoint, tmp_path):
    image = bench_image(240, 320)
    report = benchmark(
        tiny_checkpoint,
        scales=[128, 256],
        batch_sizes=[1, 2],
        warmup_s=0.0,
        iterations=2,
        compare_paper=True,
        image=image,
        num_threads=1,
    )
    rows = report["rows"]
    assert [(r["scale"], r["batch"]) for r in rows] == [(128, 1), (128, 2), (256, 1), (256, 2)]
    assert rows[0]["input"] == [128, 256]  # 128x171 padded to 128
    assert report["median_ms"] == rows[0]["median_ms"] > 0
    for row in rows:
        assert {"preprocess", "inference", "postprocess"} <= set(row["stages_ms"])
        assert sum(row["stages_ms"].values()) <= row["mean_ms"] * 1.05
        assert 0 < row["host_pre_post_share"] < 1
        assert row["paper_ms"] is None  # no ResNet-18 row in Table 1e
    written = write_report(report, tmp_path / "out", tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text())["median_ms"] == report["median_ms"]
    text = written["markdown"].read_text()
    assert (
        f"| 128 | {rows[1]['backend']} | 2 |" in text
        and rows[1]["backend"] in ("openvino", "onnxruntime")
        and "n/a" in text
        and "Nvidia M40" in text
    )
    assert written["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_torchvision_same_weights(tmp_path):
    from retina_trt.bench.weights import make_torchvision_weights

    weights = make_torchvision_weights(tmp_path / "r50.pth")
    report = benchmark(
        weights,
        scales=[128],
        warmup_s=0.0,
        iterations=1,
        compare_paper=True,
        compare_torchvision=True,
        image=bench_image(120, 160),
        num_threads=2,
    )
    row = report["rows"][0]
    assert report["torchvision_median_ms"] == row["torchvision"]["median_ms"] > 0
    assert report["speedup_vs_torchvision"] == pytest.approx(
        row["torchvision"]["median_ms"] / row["median_ms"], rel=1e-2
    )
    assert row["paper_ms"] is None  # 128 px is not a Table 1e scale
    assert report["machine"]["cpu_cores"] >= 1 and "torch" in report["machine"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", "0"], "positive integers"),
        (["--scale", "300"], "runs at its own scale"),
        (["--compare", "torchvision"], "torchvision checkpoint"),
        (["--batch", "a"], "comma-separated integers"),
    ],
)
def test_bench_cli_user_errors(args, message, onnx_models, tmp_path, capsys):
    try:
        code = main(["bench", str(onnx_models[("onnx", False)]), "--out", str(tmp_path), *args])
    except SystemExit as err:  # argparse's own errors
        code = err.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_bench_cli_on_an_onnx(onnx_models, tmp_path, capsys):
    code = main(
        [
            "bench",
            str(onnx_models[("onnx", False)]),
            "--iterations",
            "2",
            "--warmup",
            "0",
            "--out",
            str(tmp_path / "r"),
            "--json",
            str(tmp_path / "b.json"),
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["rows"][0]["scale"] == 256 and data["rows"][0]["iterations"] == 2
    assert "| scale |" in capsys.readouterr().out


def test_gpu_check_reports_tests_and_measurements_and_what_it_skipped(tmp_path):
    """`make gpu-check` on a machine without a GPU: the gpu tests are skipped with the reason, the
    measurements say why they were skipped, the report of both is written, and it fails only
    when something failed or nothing ran."""
    import json
    import subprocess
    import sys

    from retina_trt.bench.gpu import main as measure
    from retina_trt.bench.gpu_report import main as report

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    tests = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "gpu",
            "tests/test_trt_gpu.py",
            "-k",
            "eval or zero_copy",
            f"--junitxml={tmp_path / 'tests.xml'}",
            "-p",
            "no:cacheprovider",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout[-2000:]
    assert measure(["--out", str(tmp_path), "--quick", "--only", "environment,torch_cuda_latency"]) == 0
    import torch

    measured = json.loads((tmp_path / "gpu_measurements.json").read_text())["measurements"]
    assert measured["environment"]["status"] == "done" and "torch" in measured["environment"]["result"]
    if not torch.cuda.is_available():
        assert measured["torch_cuda_latency"] == {**measured["torch_cuda_latency"], "status": "skipped"}
        assert report(["--out", str(tmp_path)]) == 0
        text = (tmp_path / "gpu_check.md").read_text()
        assert "test_engine_eval | skipped | needs an NVIDIA GPU" in text and "| torch_cuda_latency | skipped |" in text
    with pytest.raises(SystemExit) as exit_info:  # a misspelled measurement is an error, not an empty report
        measure(["--out", str(tmp_path / "x"), "--only", "enviroment"])
    assert exit_info.value.code == 2 and not (tmp_path / "x").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report(["--out", str(empty)]) == 1  # nothing ran: not a pass


def test_a_capped_cpu_isa_is_recorded_and_reported(monkeypatch):
    """A run with oneDNN held below the CPU's ISA (ONEDNN_MAX_CPU_ISA, e.g. an AMX Xeon measured
    as an AVX-512-VNNI machine) says so in bench.json and bench.md; an uncapped run says nothing."""
    from retina_trt.bench.latency import machine_info
    from retina_trt.bench.report import markdown

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert "onednn_max_cpu_isa" not in machine_info()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    machine = machine_info()
    assert machine["onednn_max_cpu_isa"] == "AVX512_CORE_VNNI"
    report = {
        "model": "m.onnx",
        "backbone": "resnet18",
        "machine": machine,
        "image": [240, 320],
        "timing": {"warmup_s": 0, "iterations": 1, "duration_s": None},
        "rows": [],
    }
    assert "oneDNN kernels capped at AVX512_CORE_VNNI" in markdown(report)


def test_route_parsing():
    from retina_trt.bench.routes import parse_route

    assert parse_route("onnxruntime").label == "onnxruntime fp32"
    assert parse_route("openvino").precision == "auto"
    assert parse_route("openvino:bf16").label == "openvino bf16"
    int8 = parse_route("openvino:int8")
    assert int8.int8 and int8.precision == "f32" and int8.label == "openvino int8"
    for bad in ("tensorrt", "openvino:fp64", "onnxruntime:bf16"):
        with pytest.raises(ValueError, match="route"):
            parse_route(bad)


def test_bad_route_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "x.pt", "--routes", "openvino:fp64"])
    assert exc.value.code == 2 and "OpenVINO precision must be one of" in capsys.readouterr().err


def test_interleaved_timing_alternates_calls():
    from retina_trt.bench.latency import time_interleaved

    order = []
    samples = time_interleaved(
        [lambda: order.append("a"), lambda: order.append("b")], warmup_s=0.0, iterations=3, duration_s=None
    )
    assert [len(s) for s in samples] == [3, 3] and order == ["a", "b"] + ["a", "b"] * 3


def test_routes_side_by_side_with_isa_and_layer_precisions(tiny_checkpoint, tmp_path):
    pytest.importorskip("openvino")
    image = bench_image(240, 320)
    report = benchmark(
        tiny_checkpoint,
        scales=[128],
        warmup_s=0.0,
        iterations=2,
        image=image,
        num_threads=1,
        routes=["onnxruntime", "openvino:f32", "openvino:int8"],
    )
    rows = report["rows"]
    assert [r["backend"] for r in rows] == ["onnxruntime fp32", "openvino f32", "openvino int8"]
    assert [r["precision"] for r in rows] == ["fp32", "f32", "int8+f32"]
    assert rows[0]["layer_precisions"] is None
    assert rows[1]["layer_precisions"]["convolutions"] == {"f32": 78}
    int8 = rows[2]["layer_precisions"]["convolutions"]  # i8 with VNNI/AMX, u8 on AVX2
    assert len(int8) == 1 and set(int8) <= {"i8", "u8"} and sum(int8.values()) == 78
    from retina_trt.runtime.cpu import cpu_isa

    assert report["machine"]["cpu_isa"] == cpu_isa() and report["machine"]["openvino"]
    text = write_report(report, tmp_path / "out")["markdown"].read_text()
    assert "| 128 | openvino int8 | 1 |" in text and f"convolutions 78 {next(iter(int8))}" in text and "ISA " in text


def test_bf16_route_runs_in_bf16_or_is_left_out_with_the_reason(tiny_checkpoint, tmp_path):
    """On a CPU with BF16 the route's convolutions run in bf16; on one without (AVX2 AMD EPYC, for
    one), the route is left out and the report says why: never an FP32 run labelled BF16."""
    pytest.importorskip("openvino")
    from retina_trt.runtime.openvino_backend import resolve_precision

    report = benchmark(
        tiny_checkpoint,
        scales=[128],
        warmup_s=0.0,
        iterations=1,
        image=bench_image(240, 320),
        num_threads=1,
        routes=["onnxruntime", "openvino:bf16"],
    )
    import openvino

    capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    try:
        resolve_precision("bf16", capabilities)
    except ValueError:
        assert [r["backend"] for r in report["rows"]] == ["onnxruntime fp32"]
        assert "no BF16 support" in report["skipped_routes"]["openvino bf16"]
        assert "left out on this CPU" in write_report(report, tmp_path / "out")["markdown"].read_text()
    else:
        assert report["skipped_routes"] == {}
        assert report["rows"][1]["layer_precisions"]["convolutions"] == {"bf16": 78}


def test_capacity_estimate_from_batch_throughput(onnx_models):
    """streams/capacity.py: the batch-1/batch-8 throughput of a real Detector, and the estimate
    of N cameras' total fps (capped by the cameras, interpolated between the batch sizes)."""
    from retina_trt import Detector
    from retina_trt.streams.capacity import batch_throughput, estimate_fps, estimate_rows

    with Detector(onnx_models[("onnx", False)]) as det:
        rates = batch_throughput(det, np.zeros((120, 160, 3), np.uint8), seconds=0.2, warmup_s=0.1)
        assert set(rates) == {1, min(8, det.max_batch)} and all(r > 0 for r in rates.values())
    rates = {1: 50.0, 8: 120.0}
    assert estimate_fps(rates, 1, 15.0) == 15.0  # the camera is the limit
    assert estimate_fps(rates, 4, 15.0) == 60.0
    assert estimate_fps(rates, 8, 30.0) == 120.0  # the model is the limit
    assert estimate_fps(rates, 4, 100.0) == pytest.approx(50 + 70 * 3 / 7)  # between batch 1 and 8
    assert estimate_fps(rates, 16, 100.0) == 120.0  # beyond batch 8: batch 8's rate
    rows = estimate_rows(rates, [1, 8], 15.0, "openvino bf16")
    assert [r["total_fps"] for r in rows] == [15.0, 120.0] and rows[0]["route"] == "estimate"


def test_ov_shapes_times_static_and_dynamic_side_by_side(onnx_models, tmp_path):
    """bench/ov_shapes.py: each graph in a static and a dynamic OpenVINO backend, both timed,
    the INT8 graph made and run in INT8, the machine recorded (no speed asserted)."""
    pytest.importorskip("openvino")
    from retina_trt.bench import ov_shapes

    assert (
        ov_shapes.main(
            [
                "--model",
                str(onnx_models[("onnx", False)]),
                "--out",
                str(tmp_path),
                "--rounds",
                "2",
                "--seconds",
                "0.3",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "ov_shapes.json").read_text())
    rows = {r["graph"]: r for r in report["rows"]}
    assert {"fp32 graph, f32", "int8 graph"} <= set(rows)
    assert rows["int8 graph"]["precision"].startswith("int8+") and rows["fp32 graph, f32"]["precision"] == "f32"
    for row in rows.values():
        assert row["input"] == [256, 384]
        assert min(row["static_ms"], row["dynamic_ms"], row["static_img_s"], row["dynamic_img_s"]) > 0
        assert row["latency_ratio"] == round(row["dynamic_ms"] / row["static_ms"], 3)
    text = (tmp_path / "ov_shapes.md").read_text()
    assert report["machine"]["cpu"] in text and "| int8 graph |" in text


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("missing", "no such file"),
        ("dynamic", "dynamic height and width"),
        ("not_onnx", "not a retina_trt ONNX export"),
        ("rounds", "--rounds"),
    ],
)
def test_ov_shapes_bad_input_is_a_usage_error(model, message, onnx_models, tmp_path, capsys):
    from retina_trt.bench import ov_shapes

    paths = {
        "missing": tmp_path / "none.onnx",
        "dynamic": onnx_models[("onnx", True)],
        "not_onnx": tmp_path / "x.onnx",
        "rounds": onnx_models[("onnx", False)],
    }
    (tmp_path / "x.onnx").write_text("not a model")
    extra = ["--rounds", "0"] if model == "rounds" else []
    with pytest.raises(SystemExit) as exit_info:
        ov_shapes.main(["--model", str(paths[model]), "--out", str(tmp_path / "out"), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written, nothing half-written


def test_operations_overhead_report(demo_onnx, tmp_path):
    """bench/operations.py: one plain and one operations run of one scene (it runs, counts frames
    and writes snapshots), and the report's ratios and verdict from given runs (no timing here)."""
    from types import SimpleNamespace

    from retina_trt import Detector
    from retina_trt.bench import operations
    from retina_trt.data.scenes import SCENES, write_scene

    video = str(write_scene(SCENES[0], tmp_path / "scene") / "video.avi")
    with Detector(demo_onnx) as det:
        plain = operations.run_once(det, {"0": video}, "plain", "every", tmp_path)
        full = operations.run_once(det, {"0": video}, "operations", "every", tmp_path)
    assert plain["frames"] == full["frames"] > 0 and full["snapshots"] > 0 and plain["snapshots"] == 0
    runs = [
        {"config": c, "infer": i, "ms_per_frame": ms}
        for i in operations.SCHEDULES
        for c, ms in (("plain", 10.0), ("operations", 10.2), ("operations+clips", 11.0))
    ]
    rows = operations.summarize(runs)
    assert {(r["config"], r["ratio"]) for r in rows} == {
        ("plain", 1.0),
        ("operations", 1.02),
        ("operations+clips", 1.1),
    }
    args = SimpleNamespace(model="m.onnx", sources=1, rounds=1)
    operations.write_report(tmp_path / "out", rows, runs, args)
    report = (tmp_path / "out" / "operations.md").read_text()
    assert "within 3% of plain: met" in report and "CPU:" in report
    slow = [dict(r, ratio=1.05) if r["config"] == "operations" else r for r in rows]
    operations.write_report(tmp_path / "out", slow, runs, args)
    assert "NOT met" in (tmp_path / "out" / "operations.md").read_text()
