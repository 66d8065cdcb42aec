"""Trackers and counters measured against ground truth on the scripted scenes.

For each scene of ``retina_trt.data.scenes.SCENES``: the video is written and decoded with
OpenCV, the model detects every frame once, and each tracker candidate runs on the same
detections. Tracking is scored with the ``trackers`` library's TrackEval-parity evaluation (HOTA,
MOTA, IDF1, ID switches) against the MOTChallenge ground truth; line and zone counts from
``retina_trt.analytics.counting`` are compared with the counts the script makes (and so are
supervision's ``LineZone`` counts, with its default four-corner trigger and the bottom-centre
one), and the zone's occupancy, frame by frame, with that of the ground-truth tracks through the
same counter. OC-SORT also runs with 1, 2 and 3 matches in a row before a track gets its id, on
the detections as they are and with flickering false detections added (``with_flicker``).

  python -m retina_trt.bench.tracking --model samples/models/shapes_r18.pt --out bench-output/tracking
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from retina_trt.analytics.counting import LineCounter, ZoneCounter
from retina_trt.analytics.geometry import Line, Zone
from retina_trt.analytics.tracking import TRACKERS, make_tracker
from retina_trt.data.scenes import SCENES, Scene, read_ground_truth, write_scene
from retina_trt.data.synthetic import CLASS_NAMES
from retina_trt.runtime.detections import Detections
from retina_trt.utils import atomic_path

logger = logging.getLogger(__name__)

MIN_SCORE = 0.4  # the analytics default (AnalyticsConfig.min_score, retina-trt analyze --min-score)
CONFIRM_SWEEP = (1, 2, 3)  # OC-SORT's matches in a row before a track gets its id: 1, ours (2), the library's (3)


def detect_video(det, video: Path) -> tuple[list[Detections], float]:
    """Detections of every frame of ``video`` (decoded with OpenCV), in order, and the seconds
    per frame from decode to detections (one frame at a time, as a camera delivers them)."""
    capture = cv2.VideoCapture(str(video))
    detections = []
    started = time.perf_counter()
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        detections.append(det(frame))
    capture.release()
    if not detections:
        raise RuntimeError(f"OpenCV decoded no frame from {video}")
    return detections, (time.perf_counter() - started) / len(detections)


def analytics_seconds_per_frame(detections: list[Detections], scene: Scene, events: Path) -> float:
    """Seconds per frame of the default analytics: tracker, the scene's line and zone, and
    every event (and a DeepStream frame message per frame) written to a JSONL sink."""
    from retina_trt.analytics.sinks import FileSink
    from retina_trt.analytics.source import AnalyticsConfig, SourceAnalytics

    fractions = {
        k: ";".join(f"{x / scene.width},{y / scene.height}" for x, y in pts)
        for k, pts in (("line", scene.line), ("zone", scene.zone))
    }
    config = AnalyticsConfig(
        lines=[("line", fractions["line"])],
        zones=[("zone", fractions["zone"])],
        min_score=MIN_SCORE,
        fps=scene.fps,
        frame_messages=True,
        infer="every",  # it is given the detections of every frame
    )
    analytics, sink = SourceAnalytics("scene", config), FileSink(events)
    started = time.perf_counter()
    for frame, dets in enumerate(detections):
        for event in analytics.update((scene.height, scene.width, 3), dets, frame, frame / scene.fps)[1]:
            sink.emit(event)
    sink.close()
    return (time.perf_counter() - started) / len(detections)


def run_tracker(
    name: str, detections: list[Detections], scene: Scene, confirm_frames: int | None = None
) -> list[Detections]:
    """The tracked detections of every frame (one fresh tracker for the scene)."""
    tracker = make_tracker(name, fps=scene.fps, confirm_frames=confirm_frames)
    return [tracker.update(d.filter(min_score=MIN_SCORE)) for d in detections]


def count(tracked: list[Detections], scene: Scene) -> dict:
    """Line in/out and zone enter/leave per class, and the zone's occupancy after each frame,
    from our counters."""
    line, zone = LineCounter(Line(*scene.line)), ZoneCounter(Zone(scene.zone))
    occupancy = []
    for frame, dets in enumerate(tracked):
        line.update(dets, frame)
        zone.update(dets, frame)
        occupancy.append(zone.occupancy)
    return {"line": line.counts, "zone": zone.counts, "occupancy": occupancy}


def ground_truth_tracks(folder: Path) -> list[Detections]:
    """The written scene's ground truth (``data.scenes.read_ground_truth``) as tracked detections
    per frame, each track with its shape class."""
    per_frame, track_classes = read_ground_truth(folder)
    names = list(CLASS_NAMES)
    return [
        Detections(
            np.array([b for _, b in rows], np.float32).reshape(-1, 4),
            np.ones(len(rows), np.float32),
            [names.index(track_classes[t]) for t, _ in rows],
            names,
            [t for t, _ in rows],
        )
        for rows in per_frame
    ]


def occupancy_agreement(got: list[dict], truth: list[dict]) -> dict:
    """Frames whose zone occupancy (per class) equals the ground truth's, and the frames that differ."""
    differ = [frame for frame, (g, t) in enumerate(zip(got, truth)) if g != t]
    return {"occupancy_frames_equal": 1 - len(differ) / max(len(truth), 1), "occupancy_differs_at": differ}


def count_supervision(tracked: list[Detections], scene: Scene, anchors: str) -> dict[str, int]:
    """Line crossings per class (both directions together) from supervision's LineZone."""
    import supervision as sv

    positions = {
        "corners": (sv.Position.TOP_LEFT, sv.Position.TOP_RIGHT, sv.Position.BOTTOM_LEFT, sv.Position.BOTTOM_RIGHT),
        "bottom_centre": (sv.Position.BOTTOM_CENTER,),
    }[anchors]
    (ax, ay), (bx, by) = scene.line
    zone = sv.LineZone(start=sv.Point(ax, ay), end=sv.Point(bx, by), triggering_anchors=positions)
    totals: dict[str, int] = {}
    for dets in tracked:
        crossed_in, crossed_out = zone.trigger(dets.to_supervision())
        for name, crossed in zip(dets.class_names, crossed_in | crossed_out):
            if crossed:
                totals[name] = totals.get(name, 0) + 1
    return totals


def _totals(line_counts: dict) -> dict[str, int]:
    totals: dict[str, int] = {}
    for per_class in line_counts.values():
        for name, n in per_class.items():
            totals[name] = totals.get(name, 0) + n
    return totals


def write_mot(tracked: list[Detections], path: Path) -> None:
    """MOTChallenge tracker output: frame (from 1), id, x, y, w, h, score, -1, -1, -1."""
    rows = []
    for frame, dets in enumerate(tracked):
        for box, score, track_id in zip(dets.boxes_xyxy, dets.scores, dets.tracker_ids):
            x1, y1, x2, y2 = (float(v) for v in box)
            rows.append(
                f"{frame + 1},{int(track_id)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{float(score):.4f},-1,-1,-1"
            )
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(rows) + ("\n" if rows else ""))


def mot_metrics(gt: Path, result: Path) -> dict[str, float]:
    from trackers.eval import evaluate_mot_sequence

    r = evaluate_mot_sequence(str(gt), str(result), metrics=["CLEAR", "HOTA", "Identity"])
    return {
        "HOTA": float(r.HOTA.HOTA),
        "MOTA": float(r.CLEAR.MOTA),
        "IDF1": float(r.Identity.IDF1),
        "IDSW": int(r.CLEAR.IDSW),
    }


def evaluate_scene(det, scene: Scene, out: Path, trackers=TRACKERS, confirm_sweep=CONFIRM_SWEEP) -> dict:
    """Every tracker on one scene: metrics, our counts, supervision's, and whether each is exact;
    and OC-SORT with each of ``confirm_sweep`` matches in a row before a track gets its id (``_confirm``)."""
    folder = write_scene(scene, out / "scenes")
    detections, detect_s = detect_video(det, folder / "video.avi")
    analytics_s = analytics_seconds_per_frame(detections, scene, out / "events" / f"{scene.name}.jsonl")
    rows = {
        "_cost": {
            "detect_ms": 1000 * detect_s,
            "analytics_ms": 1000 * analytics_s,
            "analytics_share": analytics_s / (detect_s + analytics_s),
        },
        "_confirm": {},
    }
    truth_occupancy = count(ground_truth_tracks(folder), scene)["occupancy"]
    for name in trackers:
        started = time.perf_counter()
        tracked = run_tracker(name, detections, scene)
        track_ms = 1000 * (time.perf_counter() - started) / len(detections)
        sv_counts = {a: count_supervision(tracked, scene, a) for a in ("corners", "bottom_centre")}
        rows[name] = {
            **score(tracked, scene, folder, out / "results" / scene.name / f"{name}.txt", truth_occupancy),
            "track_ms": track_ms,
            "supervision_line_exact": {a: c == _totals(scene.expected_line) for a, c in sv_counts.items()},
        }
        logger.info("%s %s: %s", scene.name, name, rows[name])
    flickered = with_flicker(detections, scene)
    for frames in confirm_sweep:
        tracked = run_tracker("ocsort", detections, scene, confirm_frames=frames)
        result = out / "results" / scene.name / f"ocsort_confirm{frames}.txt"
        rows["_confirm"][str(frames)] = score(tracked, scene, folder, result, truth_occupancy)
        tracked = run_tracker("ocsort", flickered, scene, confirm_frames=frames)
        result = out / "results" / scene.name / f"ocsort_confirm{frames}_flicker.txt"
        rows["_confirm"][str(frames)]["flicker"] = score(tracked, scene, folder, result, truth_occupancy)
    return rows


def with_flicker(detections: list[Detections], scene: Scene, every: int = 10, seed: int = 0) -> list[Detections]:
    """The detections with false ones added: about every ``every`` frames, a box of a random class
    at score 0.8 whose counting point (bottom centre) lies inside the zone, clear of its dead band,
    for 1 or 2 frames in a row (a detector's flicker; the scripted scenes have none of their own).
    Seeded."""
    rng = np.random.default_rng(seed)
    names, zone = detections[0].all_class_names, Zone(scene.zone)
    (x0, y0), (x1, y1) = np.min(scene.zone, axis=0), np.max(scene.zone, axis=0)
    points = [p for p in zip(rng.uniform(x0, x1, 1000), rng.uniform(y0, y1, 1000)) if zone.distance(p) > 4]
    if not points:  # counting points inside the zone, clear of its border's dead band
        raise ValueError(
            f"scene {scene.name!r}: its zone has no point 4 px inside its border to place a false detection"
        )
    out = list(detections)
    frame = int(rng.integers(0, every))
    while frame < len(out):
        w, h = rng.uniform(20, 50, 2)
        bx, by = points[int(rng.integers(len(points)))]  # the counting point
        box, cls = [bx - w / 2, by - h, bx + w / 2, by], int(rng.integers(len(names)))
        for f in range(frame, min(frame + int(rng.integers(1, 3)), len(out))):
            d = out[f]
            out[f] = Detections(
                np.vstack([d.boxes_xyxy, [box]]).astype(np.float32),
                np.append(d.scores, 0.8),
                np.append(d.class_ids, cls),
                names,
            )
        frame += int(rng.integers(every // 2, every * 3 // 2 + 1))
    return out


def score(tracked: list[Detections], scene: Scene, folder: Path, result: Path, truth_occupancy: list) -> dict:
    """MOT metrics of ``tracked`` (written to ``result``), its counts and whether they are exact,
    and its zone occupancy against the ground truth's, frame by frame."""
    write_mot(tracked, result)
    counts = count(tracked, scene)
    return {
        **mot_metrics(folder / "gt" / "gt.txt", result),
        "line": counts["line"],
        "zone": counts["zone"],
        "line_exact": counts["line"] == _normalised(scene.expected_line, ("in", "out")),
        "zone_exact": counts["zone"] == _normalised(scene.expected_zone, ("enter", "leave")),
        **occupancy_agreement(counts["occupancy"], truth_occupancy),
    }


def _normalised(counts: dict, keys: tuple[str, str]) -> dict:
    return {k: dict(counts.get(k, {})) for k in keys}


def markdown(results: dict, machine: str) -> str:
    lines = [
        f"Tracking and counting on the scripted scenes ({machine}; detections >= {MIN_SCORE}).",
        "",
        "| scene | tracker | HOTA | MOTA | IDF1 | ID switches | line counts exact | zone counts exact "
        "| frames with the zone's occupancy exact | supervision LineZone exact (corners / bottom centre) "
        "| tracker ms per frame |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scene, rows in results.items():
        for name, r in _trackers(rows).items():
            sv_exact = r["supervision_line_exact"]
            lines.append(
                f"| {scene} | {name} | {r['HOTA']:.3f} | {r['MOTA']:.3f} | {r['IDF1']:.3f} | {r['IDSW']} | "
                f"{_yes(r['line_exact'])} | {_yes(r['zone_exact'])} | {100 * r['occupancy_frames_equal']:.1f}% | "
                f"{_yes(sv_exact['corners'])} / {_yes(sv_exact['bottom_centre'])} | {r['track_ms']:.2f} |"
            )
    lines += [
        "",
        "| tracker | mean HOTA | mean MOTA | mean IDF1 | ID switches | scenes with exact line and zone counts |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summary(results).items():
        lines.append(
            f"| {name} | {s['HOTA']:.3f} | {s['MOTA']:.3f} | {s['IDF1']:.3f} | {s['IDSW']} | "
            f"{s['exact']} of {s['scenes']} |"
        )
    lines += [
        "",
        "| OC-SORT, matches in a row before a track gets its id | mean HOTA | mean MOTA | mean IDF1 "
        "| scenes with exact line and zone counts | frames with the zone's occupancy exact (worst scene) "
        "| with 1-2-frame false detections added: mean MOTA | and scenes with exact counts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for frames, s in confirm_summary(results).items():
        lines.append(
            f"| {frames} | {s['HOTA']:.3f} | {s['MOTA']:.3f} | {s['IDF1']:.3f} | {s['exact']} of {s['scenes']} | "
            f"{100 * s['worst_occupancy']:.1f}% | "
            f"{s['flicker_MOTA']:.3f} | {s['flicker_exact']} of {s['scenes']} |"
        )
    lines += [
        "",
        "| scene | detection, ms per frame (decode + model) | analytics + events, ms per frame | analytics share |",
        "|---|---|---|---|",
    ]
    for scene, rows in results.items():
        c = rows["_cost"]
        lines.append(
            f"| {scene} | {c['detect_ms']:.1f} | {c['analytics_ms']:.2f} | {100 * c['analytics_share']:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def _trackers(rows: dict) -> dict:
    return {k: v for k, v in rows.items() if not k.startswith("_")}


def summary(results: dict) -> dict:
    """Per tracker: mean HOTA/MOTA/IDF1 over the scenes, total ID switches, scenes counted exactly."""
    names = _trackers(next(iter(results.values()))).keys()
    out = {}
    for name in names:
        rows = [rows[name] for rows in results.values()]
        out[name] = {
            **{m: float(np.mean([r[m] for r in rows])) for m in ("HOTA", "MOTA", "IDF1")},
            "IDSW": int(sum(r["IDSW"] for r in rows)),
            "scenes": len(rows),
            "exact": sum(bool(r["line_exact"] and r["zone_exact"]) for r in rows),
        }
    return out


def confirm_summary(results: dict) -> dict:
    """Per OC-SORT confirm setting: mean metrics, scenes counted exactly, the worst occupancy."""
    out = {}
    for frames in next(iter(results.values()))["_confirm"]:
        rows = [rows["_confirm"][frames] for rows in results.values()]
        flicker = [r["flicker"] for r in rows]
        out[frames] = {
            **{m: float(np.mean([r[m] for r in rows])) for m in ("HOTA", "MOTA", "IDF1")},
            "scenes": len(rows),
            "exact": sum(bool(r["line_exact"] and r["zone_exact"]) for r in rows),
            "worst_occupancy": min(r["occupancy_frames_equal"] for r in rows),
            "flicker_MOTA": float(np.mean([r["MOTA"] for r in flicker])),
            "flicker_exact": sum(bool(r["line_exact"] and r["zone_exact"]) for r in flicker),
        }
    return out


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def main(argv: list[str] | None = None) -> int:
    from retina_trt import Detector
    from retina_trt.runtime.cpu import cpu_isa, cpu_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="samples/models/shapes_r18.pt")
    parser.add_argument("--out", type=Path, default=Path("bench-output/tracking"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with Detector(args.model) as det:
        results = {scene.name: evaluate_scene(det, scene, args.out) for scene in SCENES}
        route = f"{det.backend} {det.precision}"
    machine = f"{cpu_name()} ({', '.join(cpu_isa())}), {route}"
    with atomic_path(args.out / "tracking.json") as tmp:
        tmp.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "results": results,
                    "summary": summary(results),
                    "ocsort_confirm": confirm_summary(results),
                },
                indent=1,
            )
        )
    with atomic_path(args.out / "tracking.md") as tmp:
        tmp.write_text(markdown(results, machine))
    print(markdown(results, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
