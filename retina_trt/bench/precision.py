"""FP32 vs FP16 vs INT8 on the CPU: COCO AP and speed through ONNX Runtime and OpenVINO.

  python -m retina_trt.bench.precision --out bench-output/precision      (make precision)

Exports the demo model, prepares FP16 and INT8 (entropy, 512 synthetic calibration images by
default) exactly as ``retina-trt build-engine --dry-run`` does, evaluates all three on the
held-out split recorded in ``samples/models/shapes_r18.json``, and times each in ONNX Runtime's
CPU provider side by side in one run. With OpenVINO installed it adds the CPU routes: OpenVINO
FP32 (and whether its detections equal ONNX Runtime FP32's), BF16 (where the CPU has it) and the
same INT8 Q/DQ graph. Writes ``precision.json`` and ``precision.md``.

ONNX Runtime's CPU provider is not the engine the FP16 and Q/DQ graphs are made for (TensorRT):
it emulates much of them and is slower there; OpenVINO runs the Q/DQ graph in INT8.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from retina_trt.calibration import CalibrationConfig, prepare_precision
from retina_trt.data.synthetic import SyntheticConfig, generate_dataset
from retina_trt.evaluate import METRICS, evaluate
from retina_trt.export.onnx_export import export_onnx
from retina_trt.image import read_image
from retina_trt.runtime.cpu import cpu_isa, cpu_name
from retina_trt.runtime.detector import Detector
from retina_trt.utils import atomic_path

logger = logging.getLogger(__name__)

MODELS = Path(__file__).resolve().parents[2] / "samples" / "models"


# (row, graph precision, backend, OpenVINO precision)
ROUTES = [
    ("fp32", "fp32", "onnxruntime", None),
    ("fp16", "fp16", "onnxruntime", None),
    ("int8", "int8", "onnxruntime", None),
    ("openvino f32", "fp32", "openvino", "f32"),
    ("openvino bf16", "fp32", "openvino", "bf16"),
    ("openvino int8", "int8", "openvino", "f32"),
]


def _routes_here() -> tuple[list[tuple], dict[str, str]]:
    """The routes this machine can run, and why the others are left out."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return ROUTES[:3], {"openvino": 'not installed (pip install "retina-trt[openvino]")'}
    import openvino

    capabilities = list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" in capabilities:
        return ROUTES, {}
    return [r for r in ROUTES if r[0] != "openvino bf16"], {"openvino bf16": f"this CPU has no BF16 ({capabilities})"}


def _equal_detections(a: list, b: list, box_tol: float = 0.05, score_tol: float = 1e-3) -> dict:
    """How many images have the same detections (count, classes, scores and boxes in score order)."""
    same, worst = 0, 0.0
    for x, y in zip(a, b):
        if len(x) == len(y) and (x.class_ids == y.class_ids).all():
            diff = float(np.abs(x.boxes_xyxy - y.boxes_xyxy).max(initial=0.0))
            if diff <= box_tol and float(np.abs(x.scores - y.scores).max(initial=0.0)) <= score_tol:
                same += 1
                worst = max(worst, diff)
    return {
        "images_equal": same,
        "images": len(a),
        "max_box_diff_px": round(worst, 4),
        "box_tol_px": box_tol,
        "score_tol": score_tol,
    }


def _latency_ms(det: Detector, images: list, repeats: int) -> float:
    """Median end-to-end Detector latency (batch 1) over ``repeats`` passes of ``images``."""
    times = []
    det(images[0])  # warm-up
    for _ in range(repeats):
        for image in images:
            start = time.perf_counter()
            det(image)
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


# long function: every precision route evaluated side by side in one run
def run(
    out: Path, *, weights: Path, calib_images: int, method: str, eval_images: int | None, cache_dir: Path | None
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    recorded = json.loads(weights.with_suffix(".json").read_text())
    split = recorded["heldout"]
    size = split["size"]
    config = SyntheticConfig(min_height=size, max_height=size, min_width=size, max_width=size)
    annotations = generate_dataset(
        out / "heldout", num_images=split["images"], seed=split["seed"], split="val", config=config
    )
    fp32 = export_onnx(weights, out / "model.onnx")
    calibration = CalibrationConfig(source="synthetic", num_images=calib_images, method=method)
    models = {"fp32": fp32}
    prep_s = {}
    for precision in ("fp16", "int8"):
        start = time.perf_counter()
        result = prepare_precision(
            fp32, precision, out / f"model.{precision}.onnx", calibration=calibration, cache_dir=cache_dir
        )
        prep_s[precision] = None if result.reused else round(time.perf_counter() - start, 1)
        models[precision] = result.path
    images = [read_image(p) for p in sorted((out / "heldout" / "val").glob("*.jpg"))[:20]]
    routes, left_out = _routes_here()
    rows, outputs = {}, {}
    for name, graph, backend, cpu_precision in routes:
        with Detector(models[graph], backend=backend, precision=cpu_precision) as det:
            metrics = evaluate(det, annotations, out / "heldout" / "val", max_images=eval_images)
            outputs[name] = [det(image) for image in images]
            rows[name] = {
                **{m: round(metrics[m], 4) for m in METRICS},
                "backend": backend,
                "runs_in": det.precision,
                "cpu_median_ms": round(_latency_ms(det, images, repeats=3), 2),
                "prepare_s": prep_s.get(graph),
                "layer_precisions": det.layer_precisions(),
            }
    if "openvino f32" in rows:
        rows["openvino f32"]["equal_to_onnxruntime_fp32"] = _equal_detections(outputs["openvino f32"], outputs["fp32"])
    report = {
        "model": weights.name,
        "heldout": split,
        "calibration": {"source": "synthetic", "images": calib_images, "method": method},
        "machine": {"cpu": cpu_name(), "cpu_isa": cpu_isa(), "python": platform.python_version()},
        "results": rows,
        "left_out": left_out,
        "delta_ap_points": {p: round(100 * (rows[p]["AP"] - rows["fp32"]["AP"]), 2) for p in rows if p != "fp32"},
    }
    with atomic_path(out / "precision.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    lines = [
        f"# Precision on the CPU ({weights.name}, {split['images']} held-out images)",
        "",
        f"CPU: {cpu_name()} ({' '.join(cpu_isa()) or 'ISA unknown'}).",
        "",
        "| route | runs in | AP | AP50 | AP75 | ΔAP vs ONNX Runtime FP32 (points) | CPU median ms (batch 1) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        label = f"ONNX Runtime {name}" if row["backend"] == "onnxruntime" else name.replace("openvino", "OpenVINO")
        delta = "" if name == "fp32" else f"{report['delta_ap_points'][name]:+.2f}"
        lines.append(
            f"| {label} | {row['runs_in']} | {100 * row['AP']:.2f} | {100 * row['AP50']:.2f} | {100 * row['AP75']:.2f} "
            f"| {delta} | {row['cpu_median_ms']:.1f} |"
        )
    equal = rows.get("openvino f32", {}).get("equal_to_onnxruntime_fp32")
    if equal:
        lines += [
            "",
            f"OpenVINO FP32 vs ONNX Runtime FP32: {equal['images_equal']} of {equal['images']} images with the "
            f"same detections (boxes within {equal['box_tol_px']} px, scores within {equal['score_tol']}; "
            f"largest box difference {equal['max_box_diff_px']} px).",
        ]
    lines += [f"Left out: {k}: {v}" for k, v in left_out.items()]
    lines += ["", f"INT8: {method} calibration on {calib_images} synthetic images; timings from one run on this CPU."]
    with atomic_path(out / "precision.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-output/precision"))
    parser.add_argument("--weights", type=Path, default=MODELS / "shapes_r18.pt")
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument("--calib-method", default="entropy", choices=["entropy", "max", "percentile"])
    parser.add_argument("--eval-images", type=int, default=None, help="default: the whole held-out split")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run(
        args.out,
        weights=args.weights,
        calib_images=args.calib_images,
        method=args.calib_method,
        eval_images=args.eval_images,
        cache_dir=args.cache_dir,
    )
    print((args.out / "precision.md").read_text())
    print(f"wrote {args.out / 'precision.json'}")
    return 0 if report else 1


if __name__ == "__main__":
    sys.exit(main())
