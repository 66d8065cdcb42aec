"""`make demo`: the main job end to end on this machine.

The shipped demo model (samples/models/shapes_r18.pt, a ResNet-18 RetinaNet trained by this
project on its synthetic shapes dataset) is exported to ONNX and prepared in FP16 for TensorRT.

* TensorRT 10/11 and a GPU: an FP16 engine is built and runs everything.
* TensorRT-RTX (installed by `make`), no GPU (as on our CI machines): a real FP16 engine is built
  (TensorRT-RTX builds without a GPU; the graph NMS, as TensorRT-RTX has no NMS layer or plugins)
  and described (size, build time, per-layer precisions); it cannot run without a GPU, so the
  Detector runs the FP32 ONNX with ONNX Runtime on the CPU.
* Neither: the build stops after the prepared ONNX (`--dry-run`); ONNX Runtime runs the ONNX.

On the CPU the fastest route runs: OpenVINO (installed by `make`) on the INT8 Q/DQ graph, the same
graph an INT8 TensorRT engine is built from (calibrated on synthetic images here). The summary
gives its per-stage latency beside ONNX Runtime FP32's, timed side by side on the same images.

It runs over freshly generated held-out images and a generated video. Annotated outputs, JSON and a
summary go under one folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

from retina_trt import Detector, export_onnx
from retina_trt.cli import main as cli_main
from retina_trt.data.synthetic import SyntheticConfig, generate_dataset, write_video
from retina_trt.evaluate import evaluate, format_table

MODEL = Path(__file__).parent / "models" / "shapes_r18.pt"
# The held-out split of the README's AP figure: seed 1, 256x256 images.
EVAL_SEED = 1
IMAGE_SIZE = 256


def _tensorrt_route() -> str:
    """``gpu``: TensorRT 10/11 and a GPU; ``rtx``: TensorRT-RTX (builds without a GPU); ``none``."""
    import torch

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        return "gpu"
    if importlib.util.find_spec("tensorrt_rtx") is not None:
        return "rtx"
    return "none"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo-output", help="folder for every output")
    parser.add_argument("--eval-images", type=int, default=100, help="held-out images for the AP check")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    print(f"retina-trt demo: {MODEL.name}, a ResNet-18 RetinaNet trained on synthetic shapes")

    onnx_path, engine_info, route = _build(out, stages)
    if route is None:
        return 1
    if route == "gpu":
        model_path, runtime = out / "shapes_r18.engine", "tensorrt"
        print(f"  runtime: TensorRT engine {model_path}")
    else:
        start = time.perf_counter()
        model_path, runtime = _cpu_route(onnx_path, out)
        stages["CPU route (INT8 preparation, OpenVINO compile)"] = time.perf_counter() - start
        why = (
            f"TensorRT-RTX built {out / 'shapes_r18.engine'}, but running an engine needs a GPU and there is none here"
            if route == "rtx"
            else "no TensorRT here (no engine built)"
        )
        print(f"  runtime: {why}, so the fastest CPU route runs: {runtime}")

    start = time.perf_counter()
    config = SyntheticConfig(min_height=IMAGE_SIZE, max_height=IMAGE_SIZE, min_width=IMAGE_SIZE, max_width=IMAGE_SIZE)
    annotations = generate_dataset(
        out / "heldout", num_images=args.eval_images, seed=EVAL_SEED, split="val", config=config
    )
    video = write_video(out / "heldout" / "pan.avi", num_frames=60, seed=7, frame_size=(IMAGE_SIZE, IMAGE_SIZE))
    stages["generate held-out images + video"] = time.perf_counter() - start

    images = sorted((out / "heldout" / "val").glob("*.jpg"))[:4]
    start = time.perf_counter()
    code = cli_main(
        [
            "detect",
            str(model_path),
            *map(str, images),
            str(video),
            "--output",
            str(out / "detections"),
            "--min-score",
            "0.4",
        ]
    )
    stages["detect (4 images + 60 frames)"] = time.perf_counter() - start
    if code != 0:
        print("demo: detect failed", file=sys.stderr)
        return code

    sheet = contact_sheet([out / "detections" / p.name for p in images], out / "contact_sheet.png")

    start = time.perf_counter()
    with Detector(model_path) as det:
        metrics = evaluate(det, annotations, out / "heldout" / "val")
        latency = det.timer.mean_ms()
    cpu_latency = _side_by_side(model_path, onnx_path, images) if model_path != onnx_path else None
    # detections of the 4 images, as `retina-trt detect` wrote them (already at score >= 0.4)
    records = [json.loads(line) for line in (out / "detections" / "detections.jsonl").read_text().splitlines()]
    counts = {Path(r["source"]).name: len(r["scores"]) for r in records}
    stages[f"COCO eval ({metrics['images']} images)"] = time.perf_counter() - start

    summary = {
        "model": str(MODEL),
        "runtime": runtime,
        "engine": engine_info,
        "detections_at_0.4": counts,
        "heldout_coco": {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
        "latency_ms_per_image_during_eval": {
            k: round(v, 2) for k, v in latency.items()
        },  # mean, cold first call included
        "cpu_routes_side_by_side_ms": cpu_latency,
        "stages_s": {k: round(v, 2) for k, v in stages.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _print_summary(summary, metrics, latency, cpu_latency, out, sheet)
    return 0


def _build(out: Path, stages: dict[str, float]):
    """Export, then the FP16 engine build (or dry run): (onnx, engine facts or None, route), route
    None when build-engine failed."""
    start = time.perf_counter()
    onnx_path = export_onnx(
        MODEL, out / "shapes_r18.onnx", nms="onnx", input_size=(IMAGE_SIZE, IMAGE_SIZE), batch=(1, 1, 8)
    )
    stages["export to ONNX"] = time.perf_counter() - start
    start = time.perf_counter()
    engine = out / "shapes_r18.engine"
    route = _tensorrt_route()
    engine_source = onnx_path
    if route == "rtx":  # TensorRT-RTX carries NMS as plain layers (nms="graph")
        engine_source = export_onnx(
            MODEL, out / "shapes_r18.graph.onnx", nms="graph", input_size=(IMAGE_SIZE, IMAGE_SIZE), batch=(1, 1, 8)
        )
    build = [
        "build-engine",
        "--onnx",
        str(engine_source),
        "--precision",
        "fp16",
        "--batch",
        "1:1:8",
        "--output",
        str(engine),
        "--cache-dir",
        str(out / "precision-cache"),
    ]
    if route == "rtx":
        build += ["--tensorrt", "tensorrt_rtx"]
    if cli_main(build if route != "none" else [*build, "--dry-run"]) != 0:
        print("demo: build-engine failed", file=sys.stderr)
        return onnx_path, None, None
    label = {"gpu": "TensorRT engine build", "rtx": "TensorRT-RTX engine build (no GPU)", "none": "dry run"}[route]
    stages[f"FP16 preparation + {label}"] = time.perf_counter() - start
    return onnx_path, (_engine_facts(engine) if route != "none" else None), route


def _engine_facts(engine: Path) -> dict:
    from retina_trt.trt import read_engine_header

    header = read_engine_header(engine)
    return {
        "file": str(engine),
        "megabytes": round(engine.stat().st_size / 1e6, 1),
        "tensorrt": f"{header.tensorrt_flavour} {header.tensorrt_version}",
        "build_seconds": header.build.get("build_seconds"),
        "targets": [f"{a}.{b}" for a, b in header.targets],
        "layer_precisions": header.layer_precisions,
    }


def _print_summary(summary: dict, metrics, latency, cpu_latency, out: Path, sheet: Path) -> None:
    engine_info, runtime = summary["engine"], summary["runtime"]
    print()
    print("summary")
    for name, count in summary["detections_at_0.4"].items():
        print(f"  {name}: {count} detections (score >= 0.4)")
    if engine_info is not None:
        precisions = engine_info["layer_precisions"] or {}
        convs = ", ".join(f"{n} {t}" for t, n in precisions.get("convolutions", {}).items())
        print(
            f"  engine: {engine_info['file']} ({engine_info['megabytes']} MB, {engine_info['tensorrt']}, built in "
            f"{engine_info['build_seconds']} s for compute capability {', '.join(engine_info['targets'])}; "
            f"convolutions {convs or '?'})"
        )
    print(f"  held-out COCO metrics ({metrics['images']} images, {runtime}):")
    print("    " + format_table(metrics).replace("\n", "\n    "))
    _print_latency(latency, cpu_latency)
    for name, seconds in summary["stages_s"].items():
        print(f"  {name}: {seconds:.1f} s")
    print(f"  outputs: {out.resolve()}")
    print(
        f"    {sheet.name}: the annotated images side by side; detections/: annotated images, pan.mp4, JSONL; "
        "heldout/: generated inputs; summary.json"
    )


SIDE_BY_SIDE_ROUNDS = 5


def _print_latency(eval_latency: dict[str, float], side_by_side: dict[str, dict[str, float]] | None) -> None:
    """One latency figure per stage: the warm, side-by-side medians where the CPU routes were timed
    (the evaluation's means include its first, cold call and stay in summary.json), else the
    evaluation's means, labelled as such."""
    if not side_by_side:
        print(
            "  latency per image, mean over the evaluation, first (cold) call included (ms): "
            + ", ".join(f"{k} {v:.1f}" for k, v in eval_latency.items())
        )
        return
    for name, per_stage in side_by_side.items():
        print(
            f"  latency, {name} (ms per image on decoded frames, warm, median of {SIDE_BY_SIDE_ROUNDS} rounds): "
            + ", ".join(f"{k} {v:.1f}" for k, v in per_stage.items())
        )


def _cpu_route(onnx_path: Path, out: Path) -> tuple[Path, str]:
    """(model, description) of the fastest CPU route: OpenVINO on the INT8 Q/DQ graph where
    OpenVINO is installed, else ONNX Runtime on the FP32 export."""
    if importlib.util.find_spec("openvino") is None:
        return onnx_path, 'ONNX Runtime FP32 (OpenVINO is not installed: pip install "retina-trt[openvino]")'
    from retina_trt.calibration import CalibrationConfig, prepare_precision

    calibration = CalibrationConfig(source="synthetic", num_images=128)
    int8 = prepare_precision(
        onnx_path, "int8", out / "shapes_r18.int8.onnx", calibration=calibration, cache_dir=out / "precision-cache"
    ).path
    with Detector(int8) as det:
        convs = ", ".join(f"{n} {p}" for p, n in det.layer_precisions()["convolutions"].items())
        return int8, f"OpenVINO {det.precision} ({int8.name}: convolutions {convs})"


def _side_by_side(model_path: Path, onnx_path: Path, images: list[Path]) -> dict[str, dict[str, float]]:
    """Per-stage median ms per image of the chosen CPU route and ONNX Runtime FP32, interleaved."""
    import statistics

    from retina_trt.image import read_image
    from retina_trt.utils import Timer

    frames = [read_image(p) for p in images]
    detectors = {"chosen route": Detector(model_path), "ONNX Runtime FP32": Detector(onnx_path, backend="onnxruntime")}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in detectors}
    for det in detectors.values():
        det(frames[0])  # warm-up
    for _ in range(SIDE_BY_SIDE_ROUNDS):
        for name, det in detectors.items():
            det.timer = Timer()
            start = time.perf_counter()
            for frame in frames:
                det(frame)
            total = 1000 * (time.perf_counter() - start) / len(frames)
            for stage, ms in {**det.timer.mean_ms(), "end to end": total}.items():
                samples[name].setdefault(stage, []).append(ms)
    names = {"chosen route": f"{detectors['chosen route'].backend} {detectors['chosen route'].precision}"}
    for det in detectors.values():
        det.close()
    return {names.get(n, n): {k: round(statistics.median(v), 2) for k, v in s.items()} for n, s in samples.items()}


def contact_sheet(paths: list[Path], output: Path, *, gap: int = 8) -> Path:
    """One PNG with the annotated images side by side, each titled with its file name."""
    import cv2
    import numpy as np

    from retina_trt.utils import atomic_path

    tiles = []
    for path in paths:
        image = cv2.imread(str(path))
        if image is None:
            continue
        title = np.full((22, image.shape[1], 3), 255, np.uint8)
        cv2.putText(title, path.name, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.vstack([title, image]))
    height = max(t.shape[0] for t in tiles)
    row = []
    for tile in tiles:
        padded = np.full((height, tile.shape[1], 3), 255, np.uint8)
        padded[: tile.shape[0]] = tile
        row += [padded, np.full((height, gap, 3), 255, np.uint8)]
    with atomic_path(output) as tmp:  # (the temporary name keeps .png: imwrite picks the format from it)
        if not cv2.imwrite(str(tmp), np.hstack(row[:-1])):
            raise OSError(f"cannot write {output}")
    return output


if __name__ == "__main__":
    sys.exit(main())
