"""Soak benchmark of the multi-source stream: N cameras faster than the model, for minutes.

``python -m retina_trt.bench.soak --model M.onnx --minutes 10 --out DIR`` serves ``--cameras``
MJPEG cameras at ``--fps`` on localhost (``data/camera.py``), runs them through one
``Detector.streams`` and records, per window of ``--window`` seconds: the process RSS, the p50 /
p99 latency from decode to result, processed and dropped frames per second. It writes
``soak.json``, ``soak.md`` (the table) and ``soak.png`` (RSS and p99 over time) and says whether
memory stayed flat (last window's RSS within ``--rss-slack-mb`` of the first after warm-up) and
latency bounded (every window's p99 under ``--p99-bound-s``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from retina_trt.data.camera import Camera
from retina_trt.runtime.cpu import cpu_isa, cpu_name
from retina_trt.utils import atomic_path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _window(latencies: list[float], processed: int, dropped: int, seconds: float, elapsed: float) -> dict:
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {
        "t_s": round(elapsed, 1),
        "rss_mb": round(rss_mb(), 1),
        "p50_ms": round(1000 * float(np.percentile(lat, 50)), 1),
        "p99_ms": round(1000 * float(np.percentile(lat, 99)), 1),
        "processed_fps": round(processed / seconds, 1),
        "dropped_fps": round(dropped / seconds, 1),
    }


def soak(model: Path, *, minutes: float, cameras: int, fps: float, window_s: float, backend: str = "auto") -> dict:
    from retina_trt import Detector

    cams = [Camera(fps=fps, size=(240, 320)) for _ in range(cameras)]
    windows, latencies = [], []
    try:
        with Detector(model, backend=backend) as det, det.streams([c.url for c in cams], push_timeout_ms=20) as stream:
            start = last = time.monotonic()
            dropped_before = 0
            processed = 0
            for result in stream:
                latencies.append(result.latency_s)
                processed += 1
                now = time.monotonic()
                if now - last >= window_s:
                    dropped = sum(s["dropped"] for s in stream.stats().values())
                    windows.append(_window(latencies, processed, dropped - dropped_before, now - last, now - start))
                    print(" ".join(f"{k} {v}" for k, v in windows[-1].items()), flush=True)
                    latencies, processed, dropped_before, last = [], 0, dropped, now
                if now - start >= 60 * minutes:
                    break
            stats = stream.close()
            backend_name, precision = det.backend, det.precision
    finally:
        for cam in cams:
            cam.stop()
    return {
        "model": str(model),
        "backend": backend_name,
        "precision": precision,
        "cameras": cameras,
        "fps": fps,
        "minutes": minutes,
        "cpu": cpu_name(),
        "cpu_isa": cpu_isa(),
        "windows": windows,
        "sources": stats,
    }


def verdict(result: dict, rss_slack_mb: float, p99_bound_s: float) -> dict:
    windows = result["windows"]
    settled = windows[1:] or windows  # the first window holds the warm-up
    growth = settled[-1]["rss_mb"] - settled[0]["rss_mb"]
    worst = max(w["p99_ms"] for w in windows)
    return {
        "rss_growth_mb": round(growth, 1),
        "memory_flat": growth <= rss_slack_mb,
        "worst_p99_ms": worst,
        "latency_bounded": worst <= 1000 * p99_bound_s,
    }


def write_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "soak.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    header = "| t (s) | RSS (MB) | p50 ms | p99 ms | processed fps | dropped fps |\n|---|---|---|---|---|---|\n"
    rows = "".join(
        f"| {w['t_s']} | {w['rss_mb']} | {w['p50_ms']} | {w['p99_ms']} | {w['processed_fps']} | {w['dropped_fps']} |\n"
        for w in result["windows"]
    )
    with atomic_path(out / "soak.md") as tmp:
        tmp.write_text(header + rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [w["t_s"] / 60 for w in result["windows"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.plot(t, [w["rss_mb"] for w in result["windows"]], marker=".")
    top.set_ylabel("RSS (MB)")
    bottom.plot(t, [w["p99_ms"] for w in result["windows"]], marker=".", label="p99")
    bottom.plot(t, [w["p50_ms"] for w in result["windows"]], marker=".", label="p50")
    bottom.set_ylabel("decode to result (ms)")
    bottom.set_xlabel("minutes")
    bottom.legend()
    fig.suptitle(
        f"{result['cameras']} cameras at {result['fps']:g} fps, {result['backend']} {result['precision']}, "
        f"{result['cpu']}",
        fontsize=9,
    )
    fig.tight_layout()
    with atomic_path(out / "soak.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("bench-output/soak"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=30.0, help="seconds per row")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--rss-slack-mb", type=float, default=50.0)
    parser.add_argument("--p99-bound-s", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = soak(
        args.model, minutes=args.minutes, cameras=args.cameras, fps=args.fps, window_s=args.window, backend=args.backend
    )
    result["verdict"] = verdict(result, args.rss_slack_mb, args.p99_bound_s)
    write_report(result, args.out)
    print(json.dumps(result["verdict"]))
    return 0 if result["verdict"]["memory_flat"] and result["verdict"]["latency_bounded"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
