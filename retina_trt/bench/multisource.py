"""What batching across sources buys: N cameras through one model, routes side by side.

``python -m retina_trt.bench.multisource --model M.onnx [--sources 1,2,4,8] [--fps 15]
[--seconds 20] [--triton grpc://host:8001/retina] --out DIR`` serves N MJPEG cameras on
localhost (``data/camera.py``) and runs them, for each N, through:

* ``batched``: one ``det.streams`` (frames of all sources batched into one model call);
* ``threads``: one ``Detector.stream`` thread per source on one shared Detector (what
  ``samples/video_analytics.py`` did before ``det.streams``);
* ``triton`` (with ``--triton``): ``det.streams`` on a Detector that is a Triton client;
* ``estimate``: the total fps estimated from the model's batch-1 and batch-8 throughput alone
  (``streams/capacity.py``), the figure a GPU machine gives without the cameras, checked here
  against the measured ``batched`` rows.

Per route and N: total processed fps, min/max per-source fps (fairness), p50/p99 latency from
decode to result (live sources: time since the source opened minus the frame's timestamp), and
frames dropped. A second table (``--schedule-cameras N``) says how many cameras one machine keeps
up with on a mostly quiet scripted scene (``quiet_bursts``), inference on every frame against
``adaptive`` (``streams/schedule.py``): N copies of the scene's video decoded as fast as they can
be through one ``det.streams``, total fps over the camera rate, with decoding alone beside it
(once inference is skipped, decoding is what is left). Writes ``multisource.json`` and
``multisource.md``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from retina_trt.data.camera import Camera
from retina_trt.runtime.cpu import cpu_isa, cpu_name
from retina_trt.streams.capacity import batch_throughput, estimate_rows
from retina_trt.utils import atomic_path


def _batched(det, urls: list[str], seconds: float) -> tuple[dict[str, int], list[float], int]:
    counts: dict[str, int] = {}
    latencies: list[float] = []
    with det.streams(urls, push_timeout_ms=20, timeout_s=5) as stream:
        start = time.monotonic()
        for result in stream:
            counts[result.source_id] = counts.get(result.source_id, 0) + 1
            latencies.append(result.latency_s)
            if time.monotonic() - start >= seconds:
                break
        stats = stream.close()
    return counts, latencies, sum(s["dropped"] for s in stats.values())


def _threads(det, urls: list[str], seconds: float) -> tuple[dict[str, int], list[float], int]:
    counts = {str(i): 0 for i in range(len(urls))}
    latencies: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    dropped = [0]

    def one(i: int, url: str) -> None:
        with det.stream(url) as frames:
            for result in frames:
                now = time.perf_counter() - frames.source._start  # the live timestamp's clock
                with lock:
                    counts[str(i)] += 1
                    latencies.append(now - result.timestamp_s)
                if stop.is_set():
                    break
            dropped[0] += frames.stats.frames_dropped

    threads = [threading.Thread(target=one, args=(i, u), daemon=True) for i, u in enumerate(urls)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    return counts, latencies, dropped[0]


def _row(route: str, n: int, counts: dict[str, int], latencies: list[float], dropped: int, seconds: float) -> dict:
    per_source = [counts.get(str(i), 0) / seconds for i in range(n)]
    lat = np.asarray(latencies or [np.nan])
    return {
        "route": route,
        "sources": n,
        "total_fps": round(sum(per_source), 1),
        "min_source_fps": round(min(per_source), 1),
        "max_source_fps": round(max(per_source), 1),
        "p50_ms": round(1000 * float(np.percentile(lat, 50)), 1),
        "p99_ms": round(1000 * float(np.percentile(lat, 99)), 1),
        "dropped": int(dropped),
    }


def run(model: Path, sources: list[int], fps: float, seconds: float, triton: str | None) -> list[dict]:
    from retina_trt import Detector

    rows = []
    routes = [("batched", model, _batched), ("threads", model, _threads)]
    if triton:
        routes.append(("triton", triton, _batched))
    for n in sources:
        for route, target, method in routes:
            cams = [Camera(fps=fps, size=(240, 320)) for _ in range(n)]
            try:
                with Detector(str(target) if route == "triton" else target) as det:
                    det(np.zeros((240, 320, 3), np.uint8))  # warm-up outside the timing
                    counts, latencies, dropped = method(det, [c.url for c in cams], seconds)
                    backend = f"{det.backend} {det.precision}"
            finally:
                for cam in cams:
                    cam.stop()
            rows.append({**_row(route, n, counts, latencies, dropped, seconds), "backend": backend})
            print(json.dumps(rows[-1]), flush=True)
    with Detector(model) as det:
        rates = batch_throughput(det, np.zeros((240, 320, 3), np.uint8))
        rows += estimate_rows(rates, sources, fps, f"{det.backend} {det.precision}")
    print(json.dumps(rows[-1]), flush=True)
    return rows


def _decode_fps(videos: list[Path]) -> float:
    """Frames per second of decoding alone: the same files, one thread each, as the stream reads them."""
    import threading

    counts = [0] * len(videos)

    def read(i: int, video: Path) -> None:
        capture = cv2.VideoCapture(str(video))
        while capture.read()[0]:
            counts[i] += 1
        capture.release()

    threads = [threading.Thread(target=read, args=(i, v)) for i, v in enumerate(videos)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def cameras_per_machine(det, video: Path, cameras: int, fps: float) -> list[dict]:
    """``cameras`` copies of ``video`` decoded as fast as they can be, through one ``det.streams``,
    every frame against adaptive: total fps, the cameras at ``fps`` that is, the share of frames
    the model ran on, and decoding's share of the time (decoding alone: the same files, the same
    threads)."""
    videos = [video] * cameras
    decode = _decode_fps(videos)
    rows = []
    for infer in ("every", "adaptive"):
        started = time.perf_counter()
        with det.streams([str(v) for v in videos], infer=infer) as stream:
            frames = sum(1 for _ in stream)
            stats = stream.close()
        total = frames / (time.perf_counter() - started)
        inferred = sum(s["inferred"] for s in stats.values()) / max(1, frames)
        rows.append(
            {
                "schedule": infer,
                "sources": cameras,
                "total_fps": round(total, 1),
                "cameras": round(total / fps, 1),
                "inferred_share": round(inferred, 3),
                "decode_only_fps": round(decode, 1),
                "decode_share": round(total / decode, 3),
            }
        )
    return rows


def capacity_markdown(rows: list[dict], scene: str, motion: float, fps: float) -> list[str]:
    lines = [
        "",
        f"Cameras per machine on the `{scene}` scene ({100 * motion:.0f}% of frames with motion), decoded as fast as "
        f"they can be, every frame against adaptive; cameras = total fps / {fps:g}.",
        "",
        "| schedule | sources | total fps | cameras | frames inferred | decode-only fps | decoding's share |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['schedule']} | {r['sources']} | {r['total_fps']} | {r['cameras']} | {100 * r['inferred_share']:.1f}% "
        f"| {r['decode_only_fps']} | {100 * r['decode_share']:.0f}% |"
        for r in rows
    ]
    return lines


def write(rows: list[dict], out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "multisource.json") as tmp:
        tmp.write_text(json.dumps({**meta, "rows": rows}, indent=1))
    lines = [
        "| sources | route | backend | total fps | per-source fps min / max | p50 ms | p99 ms | dropped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['sources']} | {r['route']} | {r['backend']} | {r['total_fps']} | {r.get('min_source_fps', '-')} / "
        f"{r.get('max_source_fps', '-')} | {r.get('p50_ms', '-')} | {r.get('p99_ms', '-')} | {r.get('dropped', '-')} |"
        for r in rows
    ]
    capacity = meta.get("schedule_capacity")
    if capacity:
        lines += capacity_markdown(
            capacity["rows"], capacity["scene"], capacity["motion_share"], meta["fps_per_camera"]
        )
    with atomic_path(out / "multisource.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def schedule_capacity(model: Path, out: Path, cameras: int, fps: float, scene_name: str = "quiet_bursts") -> dict:
    """The cameras-per-machine table on one mostly quiet scripted scene."""
    from retina_trt import Detector
    from retina_trt.bench.schedule import motion_share
    from retina_trt.data.scenes import QUIET_SCENES, write_scene

    scene = next(s for s in QUIET_SCENES if s.name == scene_name)
    video = write_scene(scene, out / "scenes") / "video.avi"
    with Detector(model) as det:
        rows = cameras_per_machine(det, video, cameras, fps)
        backend = f"{det.backend} {det.precision}"
    return {"scene": scene_name, "motion_share": motion_share(scene), "backend": backend, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--sources", default="1,2,4,8")
    parser.add_argument("--fps", type=float, default=15.0, help="frames per second of each camera")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per route and N")
    parser.add_argument("--triton", default=None, help="grpc://host:port/model: add the Triton client route")
    parser.add_argument("--out", type=Path, default=Path("bench-output/multisource"))
    parser.add_argument(
        "--schedule-cameras", type=int, default=8, help="sources of the every-against-adaptive run (0: leave it out)"
    )
    args = parser.parse_args(argv)
    sources = [int(s) for s in args.sources.split(",")]
    rows = run(args.model, sources, args.fps, args.seconds, args.triton)
    meta = {"cpu": cpu_name(), "cpu_isa": cpu_isa(), "fps_per_camera": args.fps, "seconds": args.seconds}
    if args.schedule_cameras > 0:
        meta["schedule_capacity"] = schedule_capacity(args.model, args.out, args.schedule_cameras, args.fps)
    write(rows, args.out, meta)
    print((args.out / "multisource.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
