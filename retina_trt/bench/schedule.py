"""What skipping inference costs and buys, against ground truth: ``every``, every N-th frame and
``adaptive`` side by side on the scripted scenes (the three busy ones and the six mostly quiet
ones), and how many 15 fps cameras one machine keeps up with on each.

  python -m retina_trt.bench.schedule --model M.onnx --out DIR [--scenes quiet_empty,...]

Per scene and schedule, each through ``det.streams(..., infer=...)`` and the analytics of
``retina-trt analyze`` (OC-SORT, the scene's line and zone): HOTA, MOTA and IDF1 of the tracks a
consumer sees on every frame (a skipped frame shows the tracks' last boxes) with the ``trackers``
library's evaluation; whether the line and zone counts equal the script's; the share of frames
the model ran on (and why, for adaptive); wall time per frame. The quiet scenes' share of frames
with motion is computed from their scripts.

The motion gate's own cost on a 1280x720 frame, one core, is measured too. How many cameras one
machine serves on each schedule is ``bench/multisource.py``'s second table.

Writes ``schedule.json`` and ``schedule.md``, with the CPU and its ISA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from retina_trt.analytics.source import AnalyticsConfig, SourceAnalytics
from retina_trt.bench.tracking import MIN_SCORE, mot_metrics, write_mot
from retina_trt.data.scenes import QUIET_SCENES, SCENES, Scene, write_scene
from retina_trt.runtime.cpu import cpu_isa, cpu_name
from retina_trt.runtime.detections import Detections
from retina_trt.streams.schedule import AdaptiveOptions
from retina_trt.utils import atomic_path

SCHEDULES = ("every", "2", "3", "5", "adaptive")
CAMERA_FPS = 15.0


def motion_share(scene: Scene) -> float:
    """Share of the scene's frames in which some actor moves or appears (from its script)."""
    moving = 0
    for frame in range(scene.num_frames):
        for actor in scene.actors:
            now, before = actor.box_at(frame), actor.box_at(frame - 1)
            if now is not None and (before is None or not np.allclose(now, before)):
                moving += 1
                break
    return moving / scene.num_frames


def _config(scene: Scene, infer: str) -> AnalyticsConfig:
    fractions = {
        k: ";".join(f"{x / scene.width},{y / scene.height}" for x, y in pts)
        for k, pts in (("line", scene.line), ("zone", scene.zone))
    }
    return AnalyticsConfig(
        lines=[("line", fractions["line"])],
        zones=[("zone", fractions["zone"])],
        min_score=MIN_SCORE,
        fps=scene.fps,
        infer=infer,
    )


def run_schedule(det, scene: Scene, video: Path, infer: str) -> dict:
    """One scene through ``det.streams`` on one schedule, with the analytics; the tracks seen on
    every frame, the counts, the inferred share and the wall time per frame."""
    config = _config(scene, infer)
    analytics = SourceAnalytics("scene", config)
    seen: list[Detections] = []
    started = time.perf_counter()
    with det.streams([str(video)], infer=config.infer) as stream:
        for result in stream:
            tracked, _ = analytics.update(
                result.frame.shape, result.detections, result.index, result.timestamp_s, inferred=result.inferred
            )
            seen.append(tracked)
        stats = stream.close()["0"]
    seconds = time.perf_counter() - started
    return {
        "seen": seen,
        "line": analytics.lines[0].counts,
        "zone": analytics.zones[0].counts,
        "inferred_share": stats["inferred"] / max(1, stats["frames"]),
        "infer_reasons": stats["infer_reasons"],
        "ms_per_frame": 1000 * seconds / max(1, stats["frames"]),
    }


def evaluate_scene(det, scene: Scene, out: Path, schedules=SCHEDULES) -> dict:
    """Every schedule on one scene: metrics, counts, exactness, inferred share, time."""
    folder = write_scene(scene, out / "scenes")
    rows = {"_motion_share": motion_share(scene)}
    want_line = {k: scene.expected_line.get(k, {}) for k in ("in", "out")}
    want_zone = {k: scene.expected_zone.get(k, {}) for k in ("enter", "leave")}
    for infer in schedules:
        run = run_schedule(det, scene, folder / "video.avi", infer)
        result = out / "results" / scene.name / f"{infer}.txt"
        write_mot(run.pop("seen"), result)
        rows[infer] = {
            **_metrics(folder / "gt" / "gt.txt", result),
            **run,
            "line_exact": run["line"] == want_line,
            "zone_exact": run["zone"] == want_zone,
        }
    return rows


def _metrics(gt: Path, result: Path) -> dict:
    """MOT metrics; a schedule whose tracker confirmed no track at all scores 0 (the library
    refuses an empty result file)."""
    if not result.read_text().strip():
        return {"HOTA": 0.0, "MOTA": 0.0, "IDF1": 0.0, "IDSW": 0}
    return mot_metrics(gt, result)


def gate_ms(iterations: int = 300) -> float:
    """The motion gate's milliseconds per 1280x720 frame on one core (OpenCV on one thread)."""
    from retina_trt.streams.motion import MotionGate

    options = AdaptiveOptions()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        gate = MotionGate(
            gate_width_px=options.gate_width_px,
            pixel_threshold=options.pixel_threshold,
            background_s=options.background_s,
            fps=CAMERA_FPS,
        )
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8) for _ in range(4)]
        for frame in frames:
            gate.update(frame)
        started = time.perf_counter()
        for i in range(iterations):
            gate.update(frames[i % len(frames)])
        return 1000 * (time.perf_counter() - started) / iterations
    finally:
        cv2.setNumThreads(threads)


def markdown(report: dict) -> str:
    lines = [
        f"Inference schedules on the scripted scenes ({report['machine']}; detections >= {MIN_SCORE}, OC-SORT).",
        "",
        "| scene | frames with motion | schedule | HOTA | MOTA | IDF1 | line counts exact | zone counts exact "
        "| frames inferred | why (adaptive) | ms per frame |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scene, rows in report["scenes"].items():
        for infer in SCHEDULES:
            r = rows[infer]
            why = ", ".join(f"{k} {v}" for k, v in (r["infer_reasons"] or {}).items() if v) or "-"
            lines.append(
                f"| {scene} | {100 * rows['_motion_share']:.0f}% | {infer} | {r['HOTA']:.3f} | {r['MOTA']:.3f} "
                f"| {r['IDF1']:.3f} | {'yes' if r['line_exact'] else 'no'} | {'yes' if r['zone_exact'] else 'no'} "
                f"| {100 * r['inferred_share']:.1f}% | {why} | {r['ms_per_frame']:.2f} |"
            )
    lines += ["", f"Motion gate: {report['gate_ms']:.3f} ms per 1280x720 frame on one core."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from retina_trt import Detector

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="a retina_trt .onnx (the demo model's export)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--scenes", default=None, help="comma-separated scene names (default: all nine)")
    args = parser.parse_args(argv)
    scenes = {s.name: s for s in SCENES + QUIET_SCENES}
    names = args.scenes.split(",") if args.scenes else list(scenes)
    unknown = sorted(set(names) - set(scenes))
    if unknown:
        parser.error(f"unknown scenes {unknown}; they are {', '.join(scenes)}")
    if not args.model.is_file():
        parser.error(f"--model {args.model} not found")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": f"{cpu_name()}, {cpu_isa()}", "scenes": {}}
    with Detector(args.model) as det:
        report["detector"] = f"{det.backend} {det.precision}"
        for name in names:
            report["scenes"][name] = evaluate_scene(det, scenes[name], args.out)
            print(f"{name}: done", flush=True)
        report["gate_ms"] = gate_ms()
    text = markdown(report)
    with atomic_path(args.out / "schedule.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=str))
    with atomic_path(args.out / "schedule.md") as tmp:
        tmp.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
