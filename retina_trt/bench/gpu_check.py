"""``make gpu-check``: the one command for the first GPU machine. Every check that can run here
runs; each says pass, fail (with the error) or skipped (with the reason), and the rest go on.

  python -m retina_trt.bench.gpu_check --out gpu-check-output [--quick]
  PYTHONPATH=. python3 -m retina_trt.bench.gpu_check --out DIR     (a machine without .venv)

Checks, in order:

1. environment: torch, CUDA, GPU name and compute capability, which TensorRT flavours import;
2. ``nms="graph"`` equals the reference NMS (ONNX Runtime on the CPU; any machine);
3. the NMS plugin's Triton kernels on CUDA: equal to the reference, timed together and each alone
   (rank, mask, scan: the cost model of plugins/README.md), beside
   ``torchvision.ops.batched_nms`` (B = 1 and 8, N = 1000 and 5000);
4. the PyTorch model on CUDA (seeded ResNet-50-FPN weights), FP32 and FP16 autocast, at the paper's
   scales 400-800, batch 1 and 8, beside the paper's M40 column: **PyTorch, not TensorRT**;
5. TensorRT engines of the demo model for every NMS route the installed TensorRT builds, FP32 /
   FP16 / INT8: build, detections against ONNX Runtime on the same prepared ONNX (match rate), CUDA
   graphs on and off, 8 threads on one Detector, two batches in flight on two execution contexts
   (``submit``, as ``det.streams`` runs them), a batch beyond the profile, ``run_torch``; a
   version-compatible engine (TensorRT 10/11);
6. a short ``bench`` sweep: FP16 TensorRT engines of ResNet-50-FPN at the paper's scales, beside
   its M40 column (TensorRT 10/11 only);
7. the many-cameras table's GPU estimate: the demo model's FP16 engine at batch 1 and 8, and the
   total fps 1-8 cameras at 15 fps would get (``streams/capacity.py``: an estimate, said so).

Writes ``gpu_check.json`` and ``gpu_check.md`` under ``--out``.
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


def check_graph_nms(quick: bool) -> dict:
    import dataclasses

    import numpy as np
    import onnxruntime as ort
    import torch

    from retina_trt.export.postprocess_graph import graph_nms_model
    from retina_trt.model.postprocess import nms_per_image
    from retina_trt.spec import ModelSpec

    spec = dataclasses.replace(ModelSpec(num_classes=80), detections_per_img=100)
    session = ort.InferenceSession(graph_nms_model(spec).SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    cases = 0
    for n in (300, 1000) if quick else (300, 1000, 3000):
        xy = rng.uniform(0, 1000, (1, n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(8, 200, (1, n, 2)).astype(np.float32)], -1)
        scores = rng.choice(np.linspace(0.0, 1.0, 50).astype(np.float32), (1, n))  # many exact ties
        labels = rng.integers(0, 80, (1, n)).astype(np.int64)
        num, out_boxes, out_scores, out_classes = session.run(
            None, {"boxes": boxes, "scores": scores, "labels": labels}
        )
        keep = scores[0] > spec.score_thresh
        ref = nms_per_image(
            *(torch.from_numpy(a[0][keep]) for a in (boxes, scores, labels)), nms_thresh=0.5, detections_per_img=100
        )
        k = int(num[0, 0])
        if k != len(ref["scores"]) or not (
            np.array_equal(out_boxes[0, :k], ref["boxes"].numpy())
            and np.array_equal(out_scores[0, :k], ref["scores"].numpy())
            and np.array_equal(out_classes[0, :k], ref["labels"].numpy())
        ):
            raise AssertionError(f"graph NMS differs from the reference at N={n}")
        cases += 1
    return {"cases_equal_to_reference": cases, "runtime": "ONNX Runtime CPU (the GPU's TensorRT run is check 5)"}


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


# long function: one GPU session's checks in order on the same engines (built once)
def check_tensorrt_engines(quick: bool) -> dict:
    _cuda()
    import numpy as np

    from retina_trt import Detector, export_onnx
    from retina_trt.calibration import CalibrationConfig, prepare_precision
    from retina_trt.contract import NMS_BY_FLAVOUR
    from retina_trt.data.synthetic import SyntheticConfig, generate_dataset
    from retina_trt.errors import BackendUnavailableError
    from retina_trt.trt import BuildOptions, build_engine
    from retina_trt.trt.compat import flavour_of, import_tensorrt

    try:
        flavour = flavour_of(import_tensorrt())
    except BackendUnavailableError as err:
        raise Skip(f"no TensorRT here: {err}") from err
    if flavour == "tensorrt_rtx":
        import torch

        from retina_trt.trt.compat import RTX_TARGETS

        cc = tuple(torch.cuda.get_device_capability(0))
        if cc not in RTX_TARGETS:
            raise Skip(
                f"only TensorRT-RTX is installed, and it does not target this GPU (compute capability {cc[0]}.{cc[1]})"
            )
    results: dict[str, Any] = {"flavour": flavour, "engines": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_dataset(
            tmp / "data",
            num_images=8,
            seed=1,
            split="val",
            config=SyntheticConfig(min_height=256, max_height=256, min_width=256, max_width=256),
        )
        images = sorted((tmp / "data" / "val").glob("*.jpg"))
        calibration = CalibrationConfig(source="synthetic", num_images=16 if quick else 64)
        for nms in [n for n in ("graph", "onnx", "plugin", "efficient") if n in NMS_BY_FLAVOUR[flavour]]:
            source = export_onnx(MODEL, tmp / f"{nms}.onnx", nms=nms, batch=(1, 4, 8))
            for precision in ("fp32", "fp16", "int8"):
                row: dict[str, Any] = {"nms": nms, "precision": precision}
                try:
                    prepared = prepare_precision(
                        source, precision, tmp / f"{nms}.{precision}.onnx", calibration=calibration
                    ).path
                    start = time.perf_counter()
                    engine = build_engine(prepared, tmp / f"{nms}.{precision}.engine", BuildOptions(batch=(1, 4, 8)))
                    row["build_s"] = round(time.perf_counter() - start, 1)
                    with Detector(engine) as trt_det:
                        got = trt_det.predict_batch([str(p) for p in images])
                        row["latency_ms"] = {k: round(v, 3) for k, v in trt_det.timer.mean_ms().items()}
                        row["batch_beyond_profile"] = len(trt_det.predict_batch([str(images[0])] * 10)) == 10
                        import concurrent.futures

                        with concurrent.futures.ThreadPoolExecutor(8) as pool:
                            threaded = list(pool.map(lambda p: trt_det(str(p)), images))
                        row["threads_equal"] = all(np.array_equal(a.scores, b.scores) for a, b in zip(threaded, got))
                        row["submit_in_flight_equal"] = _submit_equal(trt_det, images, got)
                    row["run_torch_equal"] = _run_torch_equal(engine, images[0])
                    with Detector(engine, cuda_graph=True) as graph_det:
                        graphed = graph_det.predict_batch([str(p) for p in images])
                        row["cuda_graph_equal"] = all(np.array_equal(a.scores, b.scores) for a, b in zip(graphed, got))
                    reference = prepared if nms in ("graph", "onnx") else None
                    if reference is not None:
                        with Detector(reference) as ort_det:
                            want = ort_det.predict_batch([str(p) for p in images])
                        same = sum(
                            int(len(a.scores) == len(b.scores) and np.allclose(a.scores, b.scores, atol=2e-2))
                            for a, b in zip(got, want)
                        )
                        row["images_matching_onnxruntime"] = f"{same}/{len(images)}"
                    row["status"] = "pass"
                except Exception as err:
                    row["status"] = "fail"
                    row["error"] = f"{type(err).__name__}: {err}"[:2000]
                results["engines"].append(row)
        if flavour == "tensorrt":  # version-compatible plans carry host code the runtime must allow
            row = {"nms": "default", "precision": "fp16", "version_compatible": True}
            try:
                source = export_onnx(MODEL, tmp / "vc.onnx", batch=(1, 1, 1))
                prepared = prepare_precision(source, "fp16", tmp / "vc.fp16.onnx").path
                engine = build_engine(prepared, tmp / "vc.engine", BuildOptions(version_compatible=True))
                with Detector(engine) as det:
                    row["detections"] = len(det(str(images[0])).scores)
                row["status"] = "pass" if row["detections"] > 0 else "fail"
            except Exception as err:
                row.update(status="fail", error=f"{type(err).__name__}: {err}"[:2000])
            results["engines"].append(row)
    if any(row["status"] == "fail" for row in results["engines"]):
        raise AssertionError(json.dumps(results))
    return results


def _submit_equal(det, images: list[Path], want: list) -> bool:
    """Two batches in flight at once (``submit``: one per execution context, as ``det.streams``
    keeps them) give the detections of one batch of them all (FP16 kernels may differ slightly)."""
    import numpy as np

    from retina_trt.image import read_image

    frames = [read_image(p) for p in images]
    half = len(frames) // 2
    futures = [det.submit(frames[:half]), det.submit(frames[half:])]
    got = [d for future in futures for d in future.result()]
    return det.parallel_requests >= 2 and all(
        len(a.scores) == len(b.scores) and np.allclose(a.scores, b.scores, atol=2e-2) for a, b in zip(got, want)
    )


def _run_torch_equal(engine: Path, image_path: Path) -> bool:
    """``TensorRTBackend.run_torch`` (CUDA tensors bound directly) gives ``run``'s detections."""
    import numpy as np
    import torch

    from retina_trt.image import preprocess_batch, read_image
    from retina_trt.trt.runtime import TensorRTBackend

    with TensorRTBackend(engine) as backend:
        spec, size = backend.spec, backend.input_size
        batch = preprocess_batch(
            [read_image(image_path)],
            min_size=spec.min_size,
            max_size=spec.max_size,
            size_divisible=spec.size_divisible,
            input_size=size,
        )
        host = backend.run(batch)[0]
        device = backend.run_torch(torch.from_numpy(batch.pixels).cuda(), torch.from_numpy(batch.image_sizes).cuda())[0]
    return bool(np.array_equal(host.class_ids, device.class_ids) and np.allclose(host.scores, device.scores, atol=1e-6))


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


CHECKS = {
    "environment": check_environment,
    "graph_nms_equals_reference": check_graph_nms,
    "nms_plugin_kernels_cuda": check_nms_kernels,
    "torch_cuda_latency": check_torch_cuda,
    "tensorrt_engines": check_tensorrt_engines,
    "tensorrt_latency_sweep": check_tensorrt_latency,
    "multisource_estimate": check_multisource_estimate,
}


def run(out: Path, *, quick: bool = False, only: list[str] | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "checks": {}}
    for name, check in CHECKS.items():
        if only and name not in only:
            continue
        start = time.perf_counter()
        try:
            result = {"status": "pass", "result": check(quick)}
        except Skip as reason:
            result = {"status": "skipped", "reason": str(reason)}
        except Exception as err:
            result = {
                "status": "fail",
                "error": f"{type(err).__name__}: {err}"[:4000],
                "traceback": traceback.format_exc()[-4000:],
            }
        result["seconds"] = round(time.perf_counter() - start, 1)
        report["checks"][name] = result
        print(
            f"gpu-check {name}: {result['status']}"
            + (f" ({result.get('reason') or result.get('error')})" if result["status"] != "pass" else ""),
            flush=True,
        )
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))  # partial results survive
    (out / "gpu_check.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [
        "# retina-trt gpu-check",
        "",
        f"started {report['started']}",
        "",
        "| check | status | seconds | detail |",
        "|---|---|---|---|",
    ]
    for name, result in report["checks"].items():
        detail = result.get("reason") or result.get("error") or ""
        lines.append(f"| {name} | {result['status']} | {result['seconds']} | {detail[:200]} |")
    for name, result in report["checks"].items():
        rows = (result.get("result") or {}).get("rows") if isinstance(result.get("result"), dict) else None
        if rows:
            lines += ["", f"## {name}", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
            lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and iterations (a few minutes on a GPU)")
    parser.add_argument("--only", default=None, help="comma-separated check names")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    unknown = sorted(set(only or ()) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown}; the checks are {', '.join(CHECKS)}")
    report = run(Path(args.out), quick=args.quick, only=only)
    failed = [name for name, r in report["checks"].items() if r["status"] == "fail"]
    print(
        f"wrote {Path(args.out) / 'gpu_check.json'} and gpu_check.md; "
        + (f"FAILED: {', '.join(failed)}" if failed else "no failures")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
