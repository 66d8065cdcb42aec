"""The cost of ``nms="graph"`` (exact greedy NMS from plain ONNX operators) on this machine.

  python -m retina_trt.bench.graph_nms --out bench-output/graph_nms      (part of make bench)

Times the NMS alone in ONNX Runtime (CPU provider) beside the reference postprocess's NMS (torch,
per class) on the same random candidates, for N = 1000 and 5000 merged candidates, batch 1, and
the time TensorRT-RTX takes to build it (when installed). ONNX Runtime materializes every N x N
intermediate, so this is the CPU's price; a GPU estimate is in README ("nms=graph").
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from retina_trt.export.postprocess_graph import graph_nms_model
from retina_trt.model.postprocess import nms_per_image
from retina_trt.spec import ModelSpec
from retina_trt.utils import atomic_path

SPEC = ModelSpec(backbone="resnet50", num_classes=80)


def candidates(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCO-like merged candidates: boxes [1, n, 4] in an 800 x 1333 image, 80 classes."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1000, (1, n, 2)).astype(np.float32)
    wh = rng.uniform(8, 200, (1, n, 2)).astype(np.float32)
    scores = rng.uniform(0.0, 1.0, (1, n)).astype(np.float32)
    labels = rng.integers(0, 80, (1, n)).astype(np.int64)
    return np.concatenate([xy, xy + wh], -1), scores, labels


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def rtx_build_seconds(path: Path, n: int, max_batch: int = 8) -> float | None:
    """Seconds TensorRT-RTX takes to parse and build the NMS model at ``path`` for N = ``n``,
    batch 1..``max_batch``; None without TensorRT-RTX."""
    from retina_trt.errors import BackendUnavailableError
    from retina_trt.trt.builder import build_network_seconds

    shapes = {
        name: ((1, n, *tail), (1, n, *tail), (max_batch, n, *tail))
        for name, tail in (("boxes", (4,)), ("scores", ()), ("labels", ()))
    }
    try:
        return build_network_seconds(path, shapes, flavour="tensorrt_rtx")
    except BackendUnavailableError:
        return None


def run(out: Path, sizes=(1000, 5000), repeats: int = 5) -> dict:
    import onnxruntime as ort

    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "graph_nms.onnx"
    model_path.write_bytes(graph_nms_model(SPEC).SerializeToString())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    rows = []
    for n in sizes:
        boxes, scores, labels = candidates(n)
        feeds = {"boxes": boxes, "scores": scores, "labels": labels}
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        graph_ms = _median_ms(lambda feeds=feeds: session.run(None, feeds), repeats)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        keep = scores[0] > SPEC.score_thresh
        tb, ts, tl = (torch.from_numpy(a[0][keep]) for a in (boxes, scores, labels))
        ref_ms = _median_ms(
            lambda tb=tb, ts=ts, tl=tl: nms_per_image(tb, ts, tl, nms_thresh=0.5, detections_per_img=100), repeats
        )
        rows.append(
            {
                "candidates": n,
                "onnxruntime_graph_nms_ms": round(graph_ms, 2),
                "reference_torch_nms_ms": round(ref_ms, 2),
                "ratio_graph_vs_reference": round(graph_ms / ref_ms, 1),
                "peak_rss_growth_mib": round(max(0, rss_after - rss_before) / 1024, 1),
                "tensorrt_rtx_build_s": None if (b := rtx_build_seconds(model_path, n)) is None else round(b, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    report = {"machine": "CPU, ONNX Runtime CPU provider, 2 threads", "batch": 1, "rows": rows}
    with atomic_path(out / "graph_nms.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-output/graph_nms", help="report folder")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size (>= 1)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    run(Path(args.out), repeats=args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
