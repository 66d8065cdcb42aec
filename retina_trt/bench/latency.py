"""Latency benchmark: ``retina-trt bench`` and :func:`benchmark`.

Measured the way trtexec reports it: a warm-up by time, then a fixed number of timed iterations
(or a duration); mean, median, p90/p95/p99, min, max and throughput of the end-to-end time
(preprocess + inference + postprocess, from a decoded uint8 BGR image to detections in original
pixels), and the per-stage means the backend has: ``preprocess``, ``inference`` (for TensorRT
split into ``h2d``, ``compute``, ``d2h``) and ``postprocess``. Decoding, NMS and box decoding run
inside the ONNX graph / engine, so they are part of ``inference`` there.

``compare_paper`` puts the paper's Table 1e figure (ResNet-50/101-FPN, 400-800 px, Nvidia M40,
Detectron) beside the measured one of the same depth and scale; ``compare_torchvision`` runs
torchvision's eager RetinaNet with the same weights at the same scale, on the same machine, in
the same run, from the same image (its tensor conversion included), and reports the ratio.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.contract import MAX_BATCH
from retina_trt.contract.engine_file import read_engine_header
from retina_trt.contract.onnx_metadata import read_metadata
from retina_trt.errors import ModelFormatError
from retina_trt.image import resize_scale, resized_shape
from retina_trt.utils import Timer

logger = logging.getLogger(__name__)

# Table 1e of the paper: (depth, scale) -> ms per image on an Nvidia M40 GPU (test-dev, batch 1).
PAPER_TABLE_1E = {
    (50, 400): 64,
    (50, 500): 72,
    (50, 600): 98,
    (50, 700): 121,
    (50, 800): 153,
    (101, 400): 81,
    (101, 500): 90,
    (101, 600): 122,
    (101, 700): 154,
    (101, 800): 198,
}
PAPER_HARDWARE = "Nvidia M40 GPU (paper, Table 1e)"
PAPER_MAX_SIZE_RATIO = 1333 / 800  # the paper's longer-side cap scales with the shorter side


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of per-iteration times in milliseconds."""

    samples_ms: tuple[float, ...]
    batch: int

    def _pct(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.samples_ms), q))

    def to_dict(self) -> dict[str, float]:
        s = self.samples_ms
        median = statistics.median(s)
        return {
            "iterations": len(s),
            "batch": self.batch,
            "mean_ms": round(statistics.fmean(s), 3),
            "median_ms": round(median, 3),
            "p90_ms": round(self._pct(90), 3),
            "p95_ms": round(self._pct(95), 3),
            "p99_ms": round(self._pct(99), 3),
            "min_ms": round(min(s), 3),
            "max_ms": round(max(s), 3),
            "throughput_ips": round(1000.0 * self.batch / median, 3),
        }


ONEDNN_ISA_CAP = "ONEDNN_MAX_CPU_ISA"  # read by oneDNN in OpenVINO and PyTorch: the highest ISA its kernels use


def machine_info() -> dict[str, Any]:
    """CPU, GPU and library versions of this machine."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from retina_trt.runtime.cpu import cpu_isa

    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "cpu_isa": cpu_isa(),
        "python": platform.python_version(),
        "gpu": None,
    }
    if os.environ.get(ONEDNN_ISA_CAP):  # the CPU's kernels capped below what it has (e.g. no AMX)
        info["onednn_max_cpu_isa"] = os.environ[ONEDNN_ISA_CAP]
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    for dist in ("torch", "torchvision", "onnxruntime-gpu", "onnxruntime", "openvino", "tensorrt"):
        with contextlib.suppress(PackageNotFoundError):
            info[dist] = version(dist)
    return info


def bench_image(height: int = 720, width: int = 1280, seed: int = 0) -> np.ndarray:
    """A textured 720p frame (HxWx3 uint8 BGR) with shapes: the default benchmark input."""
    import cv2

    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 3)
    for _ in range(20):
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(image, center, int(rng.integers(10, height // 4)), color, -1)
    return image


def time_calls(
    fn: Callable[[], Any],
    *,
    warmup_s: float,
    iterations: int | None,
    duration_s: float | None,
    after_warmup: Callable[[], None] | None = None,
) -> list[float]:
    """Call ``fn`` for ``warmup_s`` seconds (at least once), then ``iterations`` times (or for
    ``duration_s`` seconds); returns the timed calls' milliseconds."""
    return time_interleaved(
        [fn], warmup_s=warmup_s, iterations=iterations, duration_s=duration_s, after_warmup=after_warmup
    )[0]


def time_interleaved(
    calls: Sequence[Callable[[], Any]],
    *,
    warmup_s: float,
    iterations: int | None,
    duration_s: float | None,
    after_warmup: Callable[[], None] | None = None,
) -> list[list[float]]:
    """Warm each call up for ``warmup_s`` (at least once), then time one call of each per round,
    ``iterations`` rounds (or rounds for ``duration_s``); milliseconds per call, per call."""
    for call in calls:
        start = time.perf_counter()
        call()
        while time.perf_counter() - start < warmup_s:
            call()
    if after_warmup is not None:
        after_warmup()
    samples: list[list[float]] = [[] for _ in calls]
    begin = time.perf_counter()
    while True:
        for call, times in zip(calls, samples):
            t0 = time.perf_counter()
            call()
            times.append(1000.0 * (time.perf_counter() - t0))
        rounds = len(samples[0])
        if iterations is not None and rounds >= iterations:
            break
        if iterations is None and time.perf_counter() - begin >= (duration_s or 0.0):
            break
    return samples


def _depth(backbone: str) -> int | None:
    digits = "".join(ch for ch in backbone.removeprefix("resnext") if ch.isdigit())
    return int(digits[:3]) if backbone.startswith("resnet") and digits else None


def _scaled_spec(spec, scale: int):
    return spec.replace(min_size=scale, max_size=max(scale, round(scale * PAPER_MAX_SIZE_RATIO)))


def _input_size(spec, image: np.ndarray) -> tuple[int, int]:
    h, w = image.shape[:2]
    rh, rw = resized_shape(h, w, resize_scale(h, w, min_size=spec.min_size, max_size=spec.max_size))
    d = spec.size_divisible
    return math.ceil(rh / d) * d, math.ceil(rw / d) * d


def _torchvision_model(weights: Path, spec):
    """torchvision's RetinaNet with the checkpoint's weights and ``spec``'s resize/thresholds."""
    import torch
    from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

    from retina_trt.model.checkpoint import read_checkpoint_file

    state = read_checkpoint_file(weights)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if isinstance(state, dict) and "state_dict" in state and "spec" not in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or "spec" in state or not any(k.startswith("head.") for k in state):
        raise ModelFormatError(
            f"--compare torchvision needs a torchvision RetinaNet checkpoint (state dict of "
            f"retinanet_resnet50_fpn or _v2); {weights} is not one"
        )
    state = {k.removeprefix("module."): v for k, v in state.items()}
    builder = retinanet_resnet50_fpn_v2 if spec.head_norm == "group_norm" else retinanet_resnet50_fpn
    num_classes = spec.num_classes
    model = builder(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes,
        min_size=spec.min_size,
        max_size=spec.max_size,
        score_thresh=spec.score_thresh,
        nms_thresh=spec.nms_thresh,
        detections_per_img=spec.detections_per_img,
        topk_candidates=spec.topk_candidates,
    )
    model.load_state_dict(state)
    return model.eval(), torch


@dataclass(frozen=True)
class _Runnable:
    path: Path
    spec: Any
    scale: int


def _prepare(
    model: Path, backend: str, scale: int | None, image: np.ndarray, workdir: Path, batch_max: int, precision: str
) -> _Runnable:
    """A model file the Detector can run at ``scale`` (exporting a checkpoint when needed, and
    building a ``precision`` engine from it for ``backend="tensorrt"``)."""
    suffix = model.suffix.lower()
    if suffix in (".pt", ".pth"):
        from retina_trt.model.checkpoint import load_checkpoint, save_checkpoint

        net = load_checkpoint(model)
        spec = _scaled_spec(net.spec, scale) if scale else net.spec
        net = load_checkpoint(model, spec=spec)
        if backend == "torch":
            path = save_checkpoint(net, workdir / f"model_{spec.min_size}.pt")
        else:
            from retina_trt.export.onnx_export import export_onnx

            path = export_onnx(
                net,
                workdir / f"model_{spec.min_size}.onnx",
                input_size=_input_size(spec, image),
                batch=(1, 1, max(1, batch_max)),
            )
            if backend == "tensorrt":  # the one build pipeline, as `retina-trt build-engine --onnx` runs it
                from retina_trt.calibration import CalibrationConfig
                from retina_trt.pipeline import BuildRequest, run_build

                calibration = CalibrationConfig(source="synthetic", num_images=64) if precision == "int8" else None
                request = BuildRequest(
                    output=workdir / f"model_{spec.min_size}.engine",
                    onnx=path,
                    precision=precision,
                    calibration=calibration,
                    save_onnx=path.with_suffix(f".{precision}.onnx"),
                )
                path = run_build(request, say=logger.info).engine
        return _Runnable(path, spec, spec.min_size)
    if suffix == ".onnx":
        spec = read_metadata(model).spec
    elif suffix == ".engine":
        spec = read_engine_header(model).spec
    else:
        raise ModelFormatError(f"cannot benchmark {model}: expected .pt/.pth, .onnx or .engine")
    if scale and scale != spec.min_size:
        raise ValueError(
            f"{model} runs at its own scale ({spec.min_size} px); benchmark other scales from the checkpoint (.pt/.pth)"
        )
    return _Runnable(model, spec, spec.min_size)


def _stage_means(det, iterations: int) -> dict[str, float]:
    """Mean ms per iteration of each Detector stage (TensorRT: its last H2D/compute/D2H)."""
    stages = {k: 1000.0 * v / iterations for k, v in det.timer.totals_s.items()}
    trt_ms = getattr(det.backend_instance, "last_ms", None)  # TensorRT only: the engine alone
    if trt_ms:
        stages.update({k: float(v) for k, v in trt_ms.items()})
    return {k: round(v, 3) for k, v in stages.items()}


def _row(runnable: _Runnable, det, samples: list[float], batch: int) -> dict[str, Any]:
    stats = LatencyStats(tuple(samples), int(batch)).to_dict()
    stages = _stage_means(det, len(samples))
    row = {"scale": runnable.scale, "backend": det.backend, "input": list(det.input_size or []), **stats}
    row["stages_ms"] = stages
    host = stages.get("preprocess", 0.0) + stages.get("postprocess", 0.0)
    row["host_pre_post_share"] = round(host / stats["mean_ms"], 5) if stats["mean_ms"] else None
    return row


def _backend_rows(runnable: _Runnable, backend: str, batch_sizes, image, num_threads, cuda_graph, timing) -> list[dict]:
    from retina_trt.runtime.detector import Detector

    rows = []
    with Detector(runnable.path, backend=backend, num_threads=num_threads, cuda_graph=cuda_graph) as det:
        too_big = [b for b in batch_sizes if b > det.max_batch]
        if too_big:
            raise ValueError(
                f"batch {too_big[0]} is larger than {runnable.path.name}'s maximum batch {det.max_batch}; "
                "benchmark batches within it, or export with a larger --batch"
            )
        for batch in batch_sizes:
            images = [image] * int(batch)
            run = (lambda: det(image)) if batch == 1 else (lambda images=images: det.predict_batch(images))
            logger.info("timing %s at %d px, batch %d", det.backend, runnable.scale, batch)
            samples = time_calls(run, **timing, after_warmup=lambda det=det: setattr(det, "timer", Timer()))
            rows.append(_row(runnable, det, samples, batch))
    return rows


def _route_rows(
    runnable: _Runnable, routes: Sequence[str], image, workdir: Path, num_threads, timing
) -> tuple[list, dict]:
    """(one row per route at this scale, the routes timed interleaved (``bench/routes.py``);
    {route: why not} for the routes this CPU cannot run)."""
    from retina_trt.bench.routes import open_routes, parse_route

    parsed = [parse_route(r) for r in routes]
    detectors, skipped = open_routes(parsed, runnable.path, workdir, num_threads)
    parsed = [r for r in parsed if r.label not in skipped]
    try:
        logger.info("timing %s at %d px, interleaved", ", ".join(r.label for r in parsed), runnable.scale)
        calls = [lambda det=det: det(image) for det in detectors]
        reset = lambda: [setattr(det, "timer", Timer()) for det in detectors]  # noqa: E731
        samples = time_interleaved(calls, **timing, after_warmup=reset)
        rows = []
        for route, det, times in zip(parsed, detectors, samples):
            row = _row(runnable, det, times, 1)
            row.update(
                backend=route.label,
                route=f"{route.backend}:{'int8' if route.int8 else route.precision or 'fp32'}",
                precision=det.precision,
                layer_precisions=det.layer_precisions(),
            )
            rows.append(row)
        return rows, skipped
    finally:
        for det in detectors:
            det.close()


# long function: every route of one scale timed side by side in one interleaved loop
def benchmark(
    model: str | os.PathLike,
    *,
    backend: str = "auto",
    scales: Sequence[int] | None = None,
    batch_sizes: Sequence[int] = (1,),
    warmup_s: float = 2.0,
    iterations: int | None = 20,
    duration_s: float | None = None,
    compare_paper: bool = False,
    compare_torchvision: bool = False,
    num_threads: int | None = None,
    image: np.ndarray | None = None,
    cuda_graph: bool = False,
    precision: str = "fp16",
    routes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Benchmark ``model`` (``.pt``/``.pth`` checkpoints are exported per scale; ``.onnx`` and
    ``.engine`` run at their own scale; with ``backend="tensorrt"`` a checkpoint becomes a
    ``precision`` engine per scale, INT8 calibrated on 64 synthetic images, for latency only).
    Returns the report (see :func:`~retina_trt.bench.report.write_report`).

    ``routes`` (``bench/routes.py``, e.g. ``["onnxruntime", "openvino:bf16", "openvino:int8"]``)
    times several CPU routes of the same FP32 export side by side instead of one backend (batch 1).

    The first row (first scale, first batch size) gives the headline ``median_ms``; with
    ``compare_torchvision`` also ``torchvision_median_ms`` and ``speedup_vs_torchvision``.
    """

    model = Path(model)
    if not model.exists():
        raise ModelFormatError(f"model not found: {model}")
    if iterations is None and not duration_s:
        raise ValueError("give iterations or duration_s")
    if iterations is not None and iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if any(not 1 <= int(b) <= MAX_BATCH for b in batch_sizes):
        raise ValueError(f"batch sizes must be in [1, {MAX_BATCH}], got {list(batch_sizes)}")
    if compare_torchvision and model.suffix.lower() not in (".pt", ".pth"):
        raise ValueError("--compare torchvision needs the torchvision checkpoint (.pth) the model came from")
    image = bench_image() if image is None else image
    rows: list[dict[str, Any]] = []
    timing = {"warmup_s": warmup_s, "iterations": iterations, "duration_s": duration_s}
    if routes and backend not in ("auto", "onnxruntime", "openvino"):
        raise ValueError("--route compares CPU routes (ONNX Runtime, OpenVINO); leave --backend at auto")
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="retina_trt_bench_") as tmp:
        for scale in scales or [None]:
            if routes:
                runnable = _prepare(model, "onnxruntime", scale, image, Path(tmp), 1, precision)
                route_rows, not_here = _route_rows(runnable, routes, image, Path(tmp), num_threads, timing)
                rows += route_rows
                skipped.update(not_here)
            else:
                runnable = _prepare(model, backend, scale, image, Path(tmp), max(batch_sizes), precision)
                rows += _backend_rows(runnable, backend, batch_sizes, image, num_threads, cuda_graph, timing)
            spec = runnable.spec
            if compare_torchvision:
                tv, torch = _torchvision_model(model, spec)
                if num_threads:
                    torch.set_num_threads(num_threads)

                def tv_run(tv=tv, torch=torch):
                    tensor = (
                        torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1).float().div_(255)
                    )
                    with torch.inference_mode():
                        return tv([tensor])

                logger.info("timing torchvision eager at %d px", runnable.scale)
                tv_samples = time_calls(tv_run, warmup_s=warmup_s, iterations=iterations, duration_s=duration_s)
                tv_stats = LatencyStats(tuple(tv_samples), 1).to_dict()
                for row in rows:
                    if row["scale"] == runnable.scale and row["batch"] == 1 and "torchvision" not in row:
                        row["torchvision"] = tv_stats
                        row["speedup_vs_torchvision"] = round(tv_stats["median_ms"] / row["median_ms"], 3)
    depth = _depth(spec.backbone)
    for row in rows:
        if compare_paper:
            row["paper_ms"] = PAPER_TABLE_1E.get((depth, row["scale"])) if depth else None
    first = rows[0]
    report: dict[str, Any] = {
        "model": str(model),
        "backbone": spec.backbone,
        "image": list(image.shape),
        "machine": machine_info(),
        "timing": timing,
        "num_threads": num_threads,
        "precision": precision if backend == "tensorrt" and not routes else None,
        "routes": list(routes) if routes else None,
        "skipped_routes": skipped,
        "median_ms": first["median_ms"],
        "rows": rows,
    }
    if compare_torchvision and "torchvision" in first:
        report["torchvision_median_ms"] = first["torchvision"]["median_ms"]
        report["speedup_vs_torchvision"] = first["speedup_vs_torchvision"]
    if compare_paper:
        report["paper_hardware"] = PAPER_HARDWARE
    return report
