"""FP32 vs FP16 vs INT8 on the CPU: COCO AP through ONNX Runtime, and ONNX Runtime's speed.

  python -m retina_trt.bench.precision --out bench-output/precision      (make precision)

Exports the demo model, prepares FP16 and INT8 (entropy, 512 synthetic calibration images by
default) exactly as ``retina-trt build-engine --dry-run`` does, evaluates all three on the
held-out split recorded in ``samples/models/shapes_r18.json``, and times each in ONNX Runtime's
CPU provider side by side in one run. Writes ``precision.json`` and ``precision.md``.

The speed column is ONNX Runtime on this CPU only: Q/DQ and FP16 graphs are made for TensorRT;
the CPU provider emulates much of them and is not expected to be faster (no TensorRT figure here).
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

from retina_trt.calibration import CalibrationConfig, prepare_precision
from retina_trt.data.synthetic import SyntheticConfig, generate_dataset
from retina_trt.evaluate import METRICS, evaluate
from retina_trt.export.onnx_export import export_onnx
from retina_trt.image import read_image
from retina_trt.runtime.detector import Detector
from retina_trt.utils import atomic_path

logger = logging.getLogger(__name__)

MODELS = Path(__file__).resolve().parents[2] / "samples" / "models"


def _latency_ms(model: Path, images: list, repeats: int) -> float:
    """Median end-to-end Detector latency (batch 1) over ``repeats`` passes of ``images``."""
    times = []
    with Detector(model) as det:
        det(images[0])  # warm-up
        for _ in range(repeats):
            for image in images:
                start = time.perf_counter()
                det(image)
                times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def run(out: Path, *, weights: Path, calib_images: int, method: str, eval_images: int | None, cache_dir: Path | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    recorded = json.loads(weights.with_suffix(".json").read_text())
    split = recorded["heldout"]
    size = split["size"]
    config = SyntheticConfig(min_height=size, max_height=size, min_width=size, max_width=size)
    annotations = generate_dataset(out / "heldout", num_images=split["images"], seed=split["seed"], split="val", config=config)
    fp32 = export_onnx(weights, out / "model.onnx")
    calibration = CalibrationConfig(source="synthetic", num_images=calib_images, method=method)
    models = {"fp32": fp32}
    prep_s = {}
    for precision in ("fp16", "int8"):
        start = time.perf_counter()
        result = prepare_precision(fp32, precision, out / f"model.{precision}.onnx", calibration=calibration, cache_dir=cache_dir)
        prep_s[precision] = None if result.reused else round(time.perf_counter() - start, 1)
        models[precision] = result.path
    images = [read_image(p) for p in sorted((out / "heldout" / "val").glob("*.jpg"))[:20]]
    rows = {}
    for precision, path in models.items():
        metrics = evaluate(path, annotations, out / "heldout" / "val", max_images=eval_images)
        rows[precision] = {
            **{m: round(metrics[m], 4) for m in METRICS},
            "ort_cpu_median_ms": round(_latency_ms(path, images, repeats=3), 2),
            "prepare_s": prep_s.get(precision),
        }
    report = {
        "model": weights.name,
        "heldout": split,
        "calibration": {"source": "synthetic", "images": calib_images, "method": method},
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "results": rows,
        "delta_ap_points": {p: round(100 * (rows[p]["AP"] - rows["fp32"]["AP"]), 2) for p in ("fp16", "int8")},
    }
    with atomic_path(out / "precision.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    lines = [
        f"# Precision on the CPU ({weights.name}, {split['images']} held-out images)",
        "",
        "| precision | AP | AP50 | AP75 | ΔAP (points) | ONNX Runtime CPU median ms (batch 1) |",
        "|---|---|---|---|---|---|",
    ]
    for precision, row in rows.items():
        delta = "" if precision == "fp32" else f"{report['delta_ap_points'][precision]:+.2f}"
        lines.append(
            f"| {precision} | {100 * row['AP']:.2f} | {100 * row['AP50']:.2f} | {100 * row['AP75']:.2f} | {delta} "
            f"| {row['ort_cpu_median_ms']:.1f} |"
        )
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
    report = run(args.out, weights=args.weights, calib_images=args.calib_images, method=args.calib_method,
                 eval_images=args.eval_images, cache_dir=args.cache_dir)  # fmt: skip
    print((args.out / "precision.md").read_text())
    print(f"wrote {args.out / 'precision.json'}")
    return 0 if report else 1


if __name__ == "__main__":
    sys.exit(main())
