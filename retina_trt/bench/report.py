"""The benchmark report: JSON, Markdown and a PNG plot (latency by scale: ours, torchvision, paper)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from retina_trt.utils import atomic_path


def _isa_cap(machine: dict[str, Any]) -> str:
    cap = machine.get("onednn_max_cpu_isa")
    return f", **oneDNN kernels capped at {cap}** (ONEDNN_MAX_CPU_ISA; ONNX Runtime is not)" if cap else ""


# long function: the report's tables in order, one line each
def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    here = m["gpu"] or m["cpu"]
    lines = [
        f"# retina-trt bench: {Path(report['model']).name} ({report.get('backbone')})",
        "",
        f"Measured on: {here} ({m['cpu_cores']} cores, ISA {' '.join(m.get('cpu_isa') or []) or 'unknown'}"
        f"{_isa_cap(m)}; "
        f"torch {m.get('torch')}, onnxruntime {m.get('onnxruntime-gpu') or m.get('onnxruntime')}, openvino "
        f"{m.get('openvino', 'not installed')}, tensorrt {m.get('tensorrt', 'not installed')}); "
        f"input: one {report['image'][1]}x{report['image'][0]} frame; warm-up {report['timing']['warmup_s']} s, "
        f"{report['timing']['iterations'] or str(report['timing']['duration_s']) + ' s'} timed iterations; "
        f"threads: {report.get('num_threads') or 'default'}.",
        "",
    ]
    has_tv = any("torchvision" in r for r in report["rows"])
    has_paper = "paper_hardware" in report
    header = ["scale", "backend", "batch", "median ms", "mean", "p90", "p99", "img/s"]
    if has_tv:
        header += ["torchvision eager median ms", "speedup"]
    if has_paper:
        header += ["paper ms (M40 GPU)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in report["rows"]:
        cells = [
            r["scale"],
            r["backend"],
            r["batch"],
            r["median_ms"],
            r["mean_ms"],
            r["p90_ms"],
            r["p99_ms"],
            r["throughput_ips"],
        ]
        if has_tv:
            tv = r.get("torchvision")
            cells += [tv["median_ms"] if tv else "", f"{r['speedup_vs_torchvision']:.2f}x" if tv else ""]
        if has_paper:
            cells += [r.get("paper_ms") if r.get("paper_ms") is not None else "n/a"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    routed = [r for r in report["rows"] if r.get("layer_precisions")]
    if routed:
        lines += ["", "What each OpenVINO route ran in (OpenVINO's runtime model, per layer):", ""]
        for r in routed:
            lp = r["layer_precisions"]
            parts = "; ".join(f"{g} " + ", ".join(f"{n} {p}" for p, n in c.items()) for g, c in lp.items())
            lines.append(f"- {r['scale']} px, {r['backend']} ({r['precision']}): {parts}")
    for label, why in (report.get("skipped_routes") or {}).items():
        lines += ["", f"Route {label} left out on this CPU: {why}"]
    lines += ["", "Per-stage means (ms per iteration) and the host pre+postprocess share of end to end:", ""]
    for r in report["rows"]:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages_ms"].items())
        share = r.get("host_pre_post_share")
        lines.append(
            f"- {r['scale']} px, batch {r['batch']}: {stages}; host pre+post {100 * share:.2f}%"
            if share is not None
            else ""
        )
    if has_paper:
        lines += [
            "",
            f"The paper's column is {report['paper_hardware']}: a different machine (a 2015 datacenter GPU, "
            "Detectron/Caffe2), shown for orientation, not as a like-for-like comparison.",
        ]
    lines += ["", "Decoding and NMS run inside the ONNX graph / engine, so they are part of `inference`."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path | None:
    """Latency (median ms, batch 1) by scale: ours, torchvision eager, the paper. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = sorted((r for r in report["rows"] if r["batch"] == 1), key=lambda r: r["scale"])
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 5.0), dpi=110)
    here = report["machine"]["gpu"] or report["machine"]["cpu"]
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == backend]
        ax.plot([r["scale"] for r in mine], [r["median_ms"] for r in mine], "o-", label=f"retina-trt {backend}")
    tv = sorted({r["scale"]: r["torchvision"]["median_ms"] for r in rows if "torchvision" in r}.items())
    if tv:
        ax.plot(*zip(*tv), "s--", label="torchvision eager (same machine)")
    paper = sorted({r["scale"]: r["paper_ms"] for r in rows if r.get("paper_ms") is not None}.items())
    if paper:
        ax.plot(*zip(*paper), "d:", label=report["paper_hardware"])
    ax.set_xlabel("scale (shorter image side, px)")
    ax.set_ylabel("median latency, batch 1 (ms, log scale)")
    ax.set_yscale("log")
    ax.set_title(
        f"{Path(report['model']).name}: latency by scale ({here[:40]}, {report['machine'].get('cpu_cores')} cores)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_report(
    report: dict[str, Any], out_dir: str | os.PathLike, json_path: str | os.PathLike | None = None
) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and ``bench.png`` under ``out_dir`` (and ``json_path``)."""
    out = Path(out_dir)
    written = {}
    for target in [out / "bench.json", *([Path(json_path)] if json_path else [])]:
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(report, indent=1))
        written.setdefault("json", target)
    with atomic_path(out / "bench.md") as tmp:
        tmp.write_text(markdown(report))
    written["markdown"] = out / "bench.md"
    png = plot(report, out / "bench.png")
    if png is not None:
        written["plot"] = png
    return written
