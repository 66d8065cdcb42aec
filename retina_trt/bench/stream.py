"""Pipelined ``Detector.stream`` vs a plain read -> detect -> draw -> write loop, same model.

  python -m retina_trt.bench.stream --out bench-output/stream      (part of make bench)

Generates a 720p synthetic video, exports the demo model, and processes the video both ways in
one run (annotated output video written in both), reporting frames per second, on ONNX Runtime
and, where installed, on OpenVINO (the FP32 export in the CPU's fastest precision, and the INT8
Q/DQ graph).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import cv2

from retina_trt.data.synthetic import write_video
from retina_trt.export.onnx_export import export_onnx
from retina_trt.io.writers import VideoOutput
from retina_trt.runtime.cpu import cpu_isa, cpu_name
from retina_trt.runtime.detector import Detector
from retina_trt.utils import atomic_path

MODEL = Path(__file__).resolve().parents[2] / "samples" / "models" / "shapes_r18.pt"


def plain_loop(det: Detector, video: Path, output: Path) -> int:
    """The baseline: one thread reads, detects, draws and encodes each frame in turn."""
    capture = cv2.VideoCapture(str(video))
    writer = VideoOutput(output, capture.get(cv2.CAP_PROP_FPS) or 25.0)
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(det(frame).draw(frame))
        frames += 1
    capture.release()
    writer.close()
    return frames


def pipelined(det: Detector, video: Path, output: Path, batch_size: int = 1) -> int:
    with det.stream(video, output=output, batch_size=batch_size) as frames:
        return sum(1 for _ in frames)


def run(out: Path, *, num_frames: int = 90, repeats: int = 2) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    video = write_video(out / "720p.avi", num_frames=num_frames, seed=11, frame_size=(720, 1280), step=8)
    onnx_path = export_onnx(MODEL, out / "shapes_r18.onnx", input_size=(256, 256))
    # Both ways with ONNX Runtime's thread spinning on (its default) and off: spinning helps a
    # single-threaded loop and hurts a pipeline whose other threads need the cores. Then the
    # OpenVINO routes (asynchronous requests, one per CPU stream) where OpenVINO is installed.
    configs = {
        "ONNX Runtime FP32, spinning on": (onnx_path, {"session_config": {}, "backend": "onnxruntime"}),
        "ONNX Runtime FP32, spinning off": (onnx_path, {"session_config": {"session.intra_op.allow_spinning": "0"}}),
    }
    if importlib.util.find_spec("openvino") is not None:
        configs["OpenVINO auto precision"] = (onnx_path, {"backend": "openvino"})
        configs["OpenVINO INT8"] = (_int8(onnx_path, out), {"backend": "openvino"})
    results: dict[str, list[float]] = {}
    used: dict[str, str] = {}
    for config, (model, options) in configs.items():
        with Detector(model, **options) as det:
            used[config] = f"{det.backend} {det.precision}"
            det(_first_frame(video))  # warm-up
            for _ in range(repeats):  # alternate the two, so drift affects both
                for name, fn in (("plain loop", plain_loop), ("Detector.stream", pipelined)):
                    start = time.perf_counter()
                    frames = fn(det, video, out / f"{name.replace(' ', '_').replace('.', '_')}.mp4")
                    results.setdefault(f"{name}, {config}", []).append(frames / (time.perf_counter() - start))
    fps = {name: round(max(values), 2) for name, values in results.items()}
    best_plain = max(v for k, v in fps.items() if k.startswith("plain") and "ONNX Runtime" in k)
    best_stream = max(v for k, v in fps.items() if k.startswith("Detector.stream"))
    ort_stream = max(v for k, v in fps.items() if k.startswith("Detector.stream") and "ONNX Runtime" in k)
    report = {
        "video": f"{num_frames} frames, 1280x720 MJPG, annotated mp4 written",
        "model": MODEL.name,
        "fps_best_of": repeats,
        "fps": fps,
        "best_plain_loop_fps": best_plain,
        "best_stream_fps": best_stream,
        "speedup_best_vs_best": round(best_stream / best_plain, 3),
        "routes": used,
        "best_stream_vs_onnxruntime_stream": round(best_stream / ort_stream, 3),
        "machine": {"cpu": cpu_name(), "cpu_isa": cpu_isa()},
    }
    with atomic_path(out / "stream.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return report


def _int8(onnx_path: Path, out: Path) -> Path:
    from retina_trt.calibration import CalibrationConfig, prepare_precision

    calibration = CalibrationConfig(source="synthetic", num_images=64)
    return prepare_precision(
        onnx_path, "int8", out / "shapes_r18.int8.onnx", calibration=calibration, cache_dir=out / "precision-cache"
    ).path


def _first_frame(video: Path):
    capture = cv2.VideoCapture(str(video))
    ok, frame = capture.read()
    capture.release()
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-output/stream"))
    parser.add_argument("--frames", type=int, default=90)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = run(args.out, num_frames=args.frames)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
