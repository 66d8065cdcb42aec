"""Startup cost of the runtime: from ``import retina_trt`` to the first detection on an ONNX model,
beside ONNX Runtime's own (import, session creation, one run of the same model), each in a fresh
Python process, measured side by side in one run.

  python -m retina_trt.bench.startup --model demo.onnx --out bench-output/startup [--repeats 5]

The goal (README, "Runtime without torch") is at most 0.5 s beyond ONNX Runtime's own, for
retina_trt on ONNX Runtime and on OpenVINO with a warm compiled-model cache.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

from retina_trt.utils import atomic_path

_ORT = """
import time
t0 = time.perf_counter()
import numpy as np
import onnxruntime as ort
options = ort.SessionOptions()
options.log_severity_level = 3
session = ort.InferenceSession({model!r}, sess_options=options, providers=["CPUExecutionProvider"])
t1 = time.perf_counter()
shape = [d if isinstance(d, int) else 256 for d in session.get_inputs()[0].shape]
feeds = {{"images": np.zeros([1, *shape[1:]], np.uint8)}}
if len(session.get_inputs()) > 1:
    feeds["image_sizes"] = np.array([shape[1:3]], np.int32)
session.run(None, feeds)
t2 = time.perf_counter()
print(t1 - t0, t2 - t0, 0.0)
"""

_RETINA = """
import sys, time
t0 = time.perf_counter()
import numpy as np
from retina_trt import Detector
t_import = time.perf_counter()
detector = Detector({model!r}, backend={backend!r})
t1 = time.perf_counter()
detector(np.zeros((480, 640, 3), np.uint8))
t2 = time.perf_counter()
assert "torch" not in sys.modules, "the runtime imported torch"
print(t1 - t0, t2 - t0, t_import - t0)
"""


def _run(
    template: str, model: Path, backend: str = "onnxruntime", env: dict | None = None
) -> tuple[float, float, float]:
    code = textwrap.dedent(template.format(model=str(model), backend=backend))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300, env=env
    )
    ready, first, imported = (float(v) for v in result.stdout.split())
    return ready, first, imported


def measure(model: Path, repeats: int = 5) -> dict:
    """Median seconds over ``repeats`` alternating runs of each process: ONNX Runtime alone,
    retina_trt on ONNX Runtime, and (where installed) retina_trt on OpenVINO with a warm
    compiled-model cache (a private one, filled by one untimed run first)."""
    import importlib.util
    import os
    import tempfile

    rows: dict[str, list] = {"onnxruntime": [], "retina_trt": []}
    openvino = importlib.util.find_spec("openvino") is not None
    with tempfile.TemporaryDirectory(prefix="retina_trt_startup_") as cache:
        env = {**os.environ, "RETINA_TRT_CACHE": cache}
        if openvino:
            rows["retina_trt_openvino_warm"] = []
            _run(_RETINA, model, "openvino", env)  # fills the cache
        for _ in range(repeats):  # alternate, so drift affects all alike
            rows["onnxruntime"].append(_run(_ORT, model))
            rows["retina_trt"].append(_run(_RETINA, model))
            if openvino:
                rows["retina_trt_openvino_warm"].append(_run(_RETINA, model, "openvino", env))
    summary = {}
    for name, runs in rows.items():
        summary[name] = {
            "ready_s": round(statistics.median(r[0] for r in runs), 3),
            "first_detection_s": round(statistics.median(r[1] for r in runs), 3),
            "import_s": round(statistics.median(r[2] for r in runs), 3),
        }
    ort_first = summary["onnxruntime"]["first_detection_s"]
    summary["overhead_s"] = round(summary["retina_trt"]["first_detection_s"] - ort_first, 3)
    if openvino:
        summary["openvino_warm_overhead_s"] = round(
            summary["retina_trt_openvino_warm"]["first_detection_s"] - ort_first, 3
        )
    return {"model": str(model), "repeats": repeats, **summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an exported .onnx")
    parser.add_argument("--out", required=True, help="folder for startup.json")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    report = measure(Path(args.model), args.repeats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "startup.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    ort, ours = report["onnxruntime"], report["retina_trt"]
    print(f"ONNX Runtime alone: session {ort['ready_s']:.3f} s, first run {ort['first_detection_s']:.3f} s")
    print(
        f"retina_trt: import {ours['import_s']:.3f} s, Detector {ours['ready_s']:.3f} s, "
        f"first detection {ours['first_detection_s']:.3f} s (+{report['overhead_s']:.3f} s)"
    )
    warm = report.get("retina_trt_openvino_warm")
    if warm:
        print(
            f"retina_trt on OpenVINO, warm cache: Detector {warm['ready_s']:.3f} s, first detection "
            f"{warm['first_detection_s']:.3f} s (+{report['openvino_warm_overhead_s']:.3f} s over ONNX Runtime alone)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
