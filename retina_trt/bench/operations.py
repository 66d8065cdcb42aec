"""What running it unattended costs: ``retina-trt analyze``'s per-frame wall time with and without
the operations parts (Prometheus metrics scraped every second, camera health, event snapshots),
side by side in one run, and with clips on top (reported apart: clips encode every frame).

  python -m retina_trt.bench.operations --model M.onnx --out DIR [--rounds 3] [--sources 4]

Each configuration runs ``run_analyze`` over the same scripted scenes (the three busy ones, as
many sources as ``--sources``, the crossing scene's line and zone), under the default adaptive
schedule and under every frame; the rounds alternate the configurations so that drift of the
machine hits them alike, and the median per round is reported. The goal (issue: operations) is
metrics + health + snapshots within 3% of the plain per-frame cost.

Writes ``operations.json`` and ``operations.md``, with the CPU and its ISA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from retina_trt.analytics.app import RunOptions, run_analyze
from retina_trt.analytics.clips import Clips
from retina_trt.analytics.health import HealthOptions
from retina_trt.analytics.metrics import AnalyticsMetrics
from retina_trt.analytics.snapshots import Snapshots
from retina_trt.analytics.source import AnalyticsConfig
from retina_trt.data.scenes import SCENES, write_scene
from retina_trt.runtime.cpu import cpu_isa, cpu_name
from retina_trt.utils import atomic_path

CONFIGS = ("plain", "operations", "operations+clips")
SCHEDULES = ("adaptive", "every")
GOAL = 0.03


class _NullSink:
    def emit(self, event: dict) -> None:
        pass

    def stats(self) -> dict:
        return {"sink": "null", "delivered": 0, "dropped": 0, "buffered": 0}

    def close(self, timeout_s: float = 0.0) -> dict:
        return self.stats()


def _config(infer: str, health: bool) -> AnalyticsConfig:
    scene = SCENES[0]
    line = ";".join(f"{x / scene.width},{y / scene.height}" for x, y in scene.line)
    zone = ";".join(f"{x / scene.width},{y / scene.height}" for x, y in scene.zone)
    return AnalyticsConfig(
        lines=(("mid", line),), zones=(("right", zone),), infer=infer, health=HealthOptions() if health else None
    )


def _scraper(metrics: AnalyticsMetrics, stop: threading.Event) -> threading.Thread:
    """Prometheus' side: the registry rendered once a second while the run lasts."""
    from prometheus_client import generate_latest

    def scrape() -> None:
        while not stop.wait(1.0):
            generate_latest(metrics.registry)

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    return thread


def run_once(det, sources: dict, config_name: str, infer: str, work: Path) -> dict:
    """One ``run_analyze`` of ``config_name``; its wall time per analysed frame."""
    operations = config_name != "plain"
    parts, stop = {}, threading.Event()
    if operations:
        parts["metrics"] = AnalyticsMetrics(model="bench")
        parts["snapshots"] = Snapshots(tempfile.mkdtemp(dir=work), budget_mb=200)
        _scraper(parts["metrics"], stop)
    if config_name.endswith("clips"):
        parts["clips"] = Clips(tempfile.mkdtemp(dir=work), pre_s=2.0, post_s=2.0)
    start = time.perf_counter()
    final = run_analyze(det, sources, _config(infer, operations), [_NullSink()], options=RunOptions(), **parts)
    wall = time.perf_counter() - start
    stop.set()
    frames = sum(s["frames"] for s in final["sources"].values())
    snaps = parts["snapshots"].written if "snapshots" in parts else 0
    return {
        "config": config_name,
        "infer": infer,
        "wall_s": wall,
        "frames": frames,
        "ms_per_frame": 1000 * wall / frames,
        "snapshots": snaps,
    }


def measure(model: str, rounds: int, n_sources: int, work: Path) -> list[dict]:
    from retina_trt import Detector

    videos = [str(write_scene(s, work / s.name) / "video.avi") for s in SCENES[:3]]
    sources = {str(i): videos[i % len(videos)] for i in range(n_sources)}
    runs = []
    with Detector(model) as det:
        run_once(det, sources, "plain", "every", work)  # warm-up: caches, the first compile
        for r in range(rounds):
            for infer in SCHEDULES:
                order = CONFIGS if r % 2 == 0 else tuple(reversed(CONFIGS))
                for name in order:
                    runs.append(run_once(det, sources, name, infer, work))
                    print(
                        f"round {r + 1}/{rounds} {infer:8s} {name:17s} {runs[-1]['ms_per_frame']:.2f} ms/frame",
                        flush=True,
                    )
    return runs


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    for infer in SCHEDULES:
        base = statistics.median(r["ms_per_frame"] for r in runs if r["infer"] == infer and r["config"] == "plain")
        for name in CONFIGS:
            ms = statistics.median(r["ms_per_frame"] for r in runs if r["infer"] == infer and r["config"] == name)
            rows.append({"infer": infer, "config": name, "ms_per_frame": round(ms, 3), "ratio": round(ms / base, 4)})
    return rows


def write_report(out: Path, rows: list[dict], runs: list[dict], args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": cpu_name(), "isa": cpu_isa(), "model": str(args.model), "sources": args.sources}
    with atomic_path(out / "operations.json") as tmp:
        tmp.write_text(json.dumps({"machine": machine, "rows": rows, "runs": runs}, indent=2))
    lines = [
        f"# Operations overhead ({time.strftime('%Y-%m-%d')})",
        "",
        f"CPU: {machine['cpu']} ({', '.join(machine['isa'])}); {args.sources} sources of the scripted scenes; "
        f"median of {args.rounds} rounds, configurations alternated.",
        "",
        "| schedule | configuration | ms per frame | vs plain |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['infer']} | {row['config']} | {row['ms_per_frame']:.2f} | {row['ratio']:.3f} |")
    ops = [r for r in rows if r["config"] == "operations"]
    verdict = all(r["ratio"] <= 1 + GOAL for r in ops)
    lines += ["", f"Goal: metrics + health + snapshots within {GOAL:.0%} of plain: {'met' if verdict else 'NOT met'}."]
    with atomic_path(out / "operations.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", default="bench-output/operations")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sources", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="retina-trt-operations-") as tmp:
        runs = measure(args.model, args.rounds, args.sources, Path(tmp))
    write_report(Path(args.out), summarize(runs), runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
