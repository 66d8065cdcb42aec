"""Pipelined ``Detector.stream`` vs a plain read -> detect -> draw -> write loop, same model.

  python -m retina_trt.bench.stream --out bench-output/stream      (part of make bench)

Generates a 720p synthetic video, exports the demo model, and processes the video both ways in
one run (annotated output video written in both), reporting frames per second.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2

from retina_trt.data.synthetic import write_video
from retina_trt.export.onnx_export import export_onnx
from retina_trt.runtime.detector import Detector
from retina_trt.runtime.stream import VideoOutput
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
    # single-threaded loop and hurts a pipeline whose other threads need the cores.
    configs = {"spinning on": None, "spinning off": {"session.intra_op.allow_spinning": "0"}}
    results: dict[str, list[float]] = {}
    for config, session_config in configs.items():
        with Detector(onnx_path, session_config=session_config) as det:
            det(_first_frame(video))  # warm-up
            for _ in range(repeats):  # alternate the two, so drift affects both
                for name, fn in (("plain loop", plain_loop), ("Detector.stream", pipelined)):
                    start = time.perf_counter()
                    frames = fn(det, video, out / f"{name.replace(' ', '_').replace('.', '_')}.mp4")
                    results.setdefault(f"{name}, {config}", []).append(frames / (time.perf_counter() - start))
    fps = {name: round(max(values), 2) for name, values in results.items()}
    best_plain = max(v for k, v in fps.items() if k.startswith("plain"))
    best_stream = max(v for k, v in fps.items() if k.startswith("Detector.stream"))
    report = {
        "video": f"{num_frames} frames, 1280x720 MJPG, annotated mp4 written",
        "model": MODEL.name,
        "fps_best_of": repeats,
        "fps": fps,
        "best_plain_loop_fps": best_plain,
        "best_stream_fps": best_stream,
        "speedup_best_vs_best": round(best_stream / best_plain, 3),
    }
    with atomic_path(out / "stream.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return report


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
