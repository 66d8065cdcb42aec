"""The GPU measurements of ``make gpu-check``: what a GPU machine times, beside what its ``gpu``
tests check (``tests/test_trt_gpu.py``). Each measurement says done, failed (with the error) or
skipped (with the reason), and the rest go on; ``bench/gpu_report.py`` then writes one report of
both.

  python -m retina_trt.bench.gpu --out gpu-check-output [--quick] [--only NAME,...]
  PYTHONPATH=. python3 -m retina_trt.bench.gpu --out DIR --quick     (a machine without .venv)

Measurements, in order:

1. environment: torch, CUDA, GPU name and compute capability, which TensorRT flavours import;
2. the NMS plugin's Triton kernels on CUDA, timed together and each alone (rank, mask, scan: the
   cost model of plugins/README.md), beside ``torchvision.ops.batched_nms`` (B = 1 and 8, N = 1000
   and 5000); their equality with the reference is checked first (and by the ``gpu`` tests);
3. the PyTorch model on CUDA (seeded ResNet-50-FPN weights), FP32 and FP16 autocast, at the paper's
   scales 400-800, batch 1 and 8, beside the paper's M40 column: **PyTorch, not TensorRT**;
4. a short ``bench`` sweep: FP16 TensorRT engines of ResNet-50-FPN at the paper's scales, beside
   its M40 column (TensorRT 10/11 only);
5. the many-cameras table's GPU estimate: the demo model's FP16 engine at batch 1 and 8, and the
   total fps 1-8 cameras at 15 fps would get (``streams/capacity.py``: an estimate, said so).

Writes ``gpu_measurements.json`` under ``--out`` (after each measurement, so partial results survive).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODEL = Path(__file__).resolve().parents[2] / "samples" / "models" / "shapes_r18.pt"
PAPER_M40_MS = {400: 64, 500: 72, 600: 98, 700: 121, 800: 153}  # Table 1e, ResNet-50-FPN


class Skip(Exception):
    """A check that cannot run on this machine (the message says why)."""


def _cuda():
    import torch

    if not torch.cuda.is_available():
        raise Skip("no GPU: skipped")
    return torch


def _timed(fn: Callable[[], Any], *, iterations: int, sync: Callable[[], None]) -> float:
    """Median milliseconds of ``fn`` after a warm-up."""
    import statistics

    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 3)


def check_environment(quick: bool) -> dict:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    from retina_trt.errors import BackendUnavailableError
    from retina_trt.trt.compat import FLAVOURS, import_tensorrt

    for flavour in FLAVOURS:
        try:
            info[flavour] = import_tensorrt(flavour).__version__
        except BackendUnavailableError as err:
            info[flavour] = f"unavailable ({str(err)[:120]})"
    return info


def _plugin_stage_ms(boxes, scores, classes, *, iterations: int, sync) -> dict[str, float]:
    """Each plugin's kernel alone (the per-kernel rows of the cost model in plugins/README.md)."""
    from retina_trt.plugins.nms import nms_from_mask, rank_candidates, suppression_mask

    order = rank_candidates(scores, score_thresh=0.05)
    mask = suppression_mask(boxes, classes, order, nms_thresh=0.5)
    return {
        "rank": _timed(lambda: rank_candidates(scores, score_thresh=0.05, out=order), iterations=iterations, sync=sync),
        "mask": _timed(
            lambda: suppression_mask(boxes, classes, order, nms_thresh=0.5, out=mask), iterations=iterations, sync=sync
        ),
        "scan": _timed(
            lambda: nms_from_mask(boxes, scores, classes, order, mask, detections_per_img=100),
            iterations=iterations,
            sync=sync,
        ),
    }


def check_nms_kernels(quick: bool) -> dict:
    torch = _cuda()
    from torchvision.ops import batched_nms

    from retina_trt.model.postprocess import nms_per_image
    from retina_trt.plugins import retina_nms

    rows = []
    for b in (1, 8):
        for n in (1000, 5000):
            g = torch.Generator().manual_seed(n + b)
            xy = torch.rand(b, n, 2, generator=g) * 1000
            boxes = torch.cat([xy, xy + torch.rand(b, n, 2, generator=g) * 200 + 8], -1).cuda()
            scores = torch.rand(b, n, generator=g).cuda()
            classes = torch.randint(0, 80, (b, n), generator=g).int().cuda()
            out = retina_nms(boxes, scores, classes, nms_thresh=0.5, detections_per_img=100)
            num, out_boxes = out[0].cpu(), out[1].cpu()
            for i in range(b):
                keep = scores[i].cpu() > 0.05
                ref = nms_per_image(
                    boxes[i].cpu()[keep],
                    scores[i].cpu()[keep],
                    classes[i].cpu()[keep].long(),
                    nms_thresh=0.5,
                    detections_per_img=100,
                )
                k = int(num[i, 0])
                if k != len(ref["scores"]) or not torch.equal(out_boxes[i, :k], ref["boxes"]):
                    raise AssertionError(f"plugin kernels differ from the reference at B={b}, N={n}, image {i}")
            sync = torch.cuda.synchronize
            iters = 20 if quick else 100

            def kernels(boxes=boxes, scores=scores, classes=classes):
                return retina_nms(boxes, scores, classes, nms_thresh=0.5, detections_per_img=100)

            kernel_ms = _timed(kernels, iterations=iters, sync=sync)
            stage_ms = _plugin_stage_ms(boxes, scores, classes, iterations=iters, sync=sync)
            flat = (
                boxes.view(-1, 4),
                scores.view(-1),
                (classes.long() + 80 * torch.arange(b, device="cuda").view(-1, 1)).view(-1),
            )
            tv_ms = _timed(lambda flat=flat: batched_nms(*flat, 0.5), iterations=iters, sync=sync)
            rows.append(
                {
                    "batch": b,
                    "candidates": n,
                    "plugin_kernels_ms": kernel_ms,
                    "rank_ms": stage_ms["rank"],
                    "mask_ms": stage_ms["mask"],
                    "scan_ms": stage_ms["scan"],
                    "torchvision_batched_nms_ms": tv_ms,
                }
            )
    return {"rows": rows, "note": "Triton kernels through retina_nms (the plugin's kernels, not inside TensorRT)"}


def check_torch_cuda(quick: bool) -> dict:
    torch = _cuda()
    from retina_trt.bench.weights import make_torchvision_weights
    from retina_trt.model.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        model = load_checkpoint(make_torchvision_weights(Path(tmp) / "r50.pth")).cuda().eval()
    rows = []
    for scale in (400, 600, 800) if quick else (400, 500, 600, 700, 800):
        width = -(-round(scale * 1333 / 800) // 128) * 128
        height = -(-scale // 128) * 128
        for batch in (1, 8):
            images = torch.randn(batch, 3, height, width, device="cuda")
            for precision in ("fp32", "fp16"):

                def run(images=images, precision=precision):
                    with torch.autocast("cuda", dtype=torch.float16, enabled=precision == "fp16"):
                        return model.detect(images)

                ms = _timed(run, iterations=5 if quick else 20, sync=torch.cuda.synchronize)
                rows.append(
                    {
                        "scale": scale,
                        "batch": batch,
                        "precision": precision,
                        "ms_per_batch": ms,
                        "ms_per_image": round(ms / batch, 3),
                        "paper_m40_ms_per_image": PAPER_M40_MS.get(scale),
                    }
                )
    return {"rows": rows, "what": "PyTorch eager on CUDA (seeded ResNet-50-FPN, full postprocess), NOT TensorRT"}


def check_tensorrt_latency(quick: bool) -> dict:
    """A short ``bench`` sweep: ResNet-50-FPN FP16 TensorRT engines at the paper's scales."""
    _cuda()
    from retina_trt.bench.latency import benchmark
    from retina_trt.bench.weights import make_torchvision_weights
    from retina_trt.errors import BackendUnavailableError
    from retina_trt.trt.compat import import_tensorrt

    try:
        import_tensorrt("tensorrt")
    except BackendUnavailableError as err:
        raise Skip(f"no TensorRT 10/11 here (the sweep builds for this GPU): {err}") from err
    with tempfile.TemporaryDirectory() as tmp:
        weights = make_torchvision_weights(Path(tmp) / "r50.pth")
        report = benchmark(
            weights,
            backend="tensorrt",
            scales=[400, 600, 800] if quick else [400, 500, 600, 700, 800],
            warmup_s=1.0,
            iterations=20 if quick else 100,
            compare_paper=True,
        )
    return {"rows": report["rows"]}


def check_multisource_estimate(quick: bool) -> dict:
    """The many-cameras table's GPU figure, as an estimate: an FP16 engine of the demo model
    (batch 1:4:8), its batch-1 and batch-8 throughput, and the total fps 1, 2, 4 and 8 cameras at
    15 fps would get through ``det.streams`` (``streams/capacity.py``; not measured with cameras)."""
    _cuda()
    import numpy as np

    from retina_trt import Detector, export_onnx
    from retina_trt.calibration import prepare_precision
    from retina_trt.errors import BackendUnavailableError
    from retina_trt.streams.capacity import batch_throughput, estimate_rows
    from retina_trt.trt import BuildOptions, build_engine
    from retina_trt.trt.compat import import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailableError as err:
        raise Skip(f"no TensorRT here: {err}") from err
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = export_onnx(MODEL, tmp / "demo.onnx", nms="graph", batch=(1, 4, 8))  # every flavour builds it
        prepared = prepare_precision(source, "fp16", tmp / "demo.fp16.onnx").path
        engine = build_engine(prepared, tmp / "demo.fp16.engine", BuildOptions(batch=(1, 4, 8)))
        with Detector(engine) as det:
            rates = batch_throughput(det, np.zeros((240, 320, 3), np.uint8), seconds=1.0 if quick else 3.0)
            rows = estimate_rows(rates, [1, 2, 4, 8], 15.0, f"{det.backend} {det.precision}")
    return {"estimate": True, "rows": rows}


MEASUREMENTS = {
    "environment": check_environment,
    "nms_plugin_kernels_cuda": check_nms_kernels,
    "torch_cuda_latency": check_torch_cuda,
    "tensorrt_latency_sweep": check_tensorrt_latency,
    "multisource_estimate": check_multisource_estimate,
}


def run(out: Path, *, quick: bool = False, only: list[str] | None = None) -> dict:
    """Every measurement (or those in ``only``); returns and writes the report."""
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "measurements": {}}
    for name, measure in MEASUREMENTS.items():
        if only and name not in only:
            continue
        start = time.perf_counter()
        try:
            result = {"status": "done", "result": measure(quick)}
        except Skip as reason:
            result = {"status": "skipped", "reason": str(reason)}
        except Exception as err:
            result = {
                "status": "fail",
                "error": f"{type(err).__name__}: {err}"[:4000],
                "traceback": traceback.format_exc()[-4000:],
            }
        result["seconds"] = round(time.perf_counter() - start, 1)
        report["measurements"][name] = result
        (out / "gpu_measurements.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_measurements.json")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and iterations (a few minutes on a GPU)")
    parser.add_argument("--only", default=None, help="comma-separated measurement names")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    unknown = sorted(set(only or ()) - set(MEASUREMENTS))
    if unknown:
        parser.error(f"unknown measurements {unknown}; they are {', '.join(MEASUREMENTS)}")
    report = run(Path(args.out), quick=args.quick, only=only)
    for name, result in report["measurements"].items():
        detail = result.get("reason") or result.get("error") or ""
        print(f"gpu measurement {name}: {result['status']}" + (f" ({detail})" if detail else ""), flush=True)
    return 1 if any(r["status"] == "fail" for r in report["measurements"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
