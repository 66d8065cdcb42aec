"""Static against dynamic input shapes in the OpenVINO backend, side by side in one run.

  python -m retina_trt.bench.ov_shapes --model demo.onnx --out bench-output/ov_shapes [--rounds 30] [--seconds 3]

A fixed-size export runs single images on a model compiled for that one input shape
(``OpenVinoBackend(static_shapes=True)``, the default); before, every batch ran on one
dynamic-shape model. For the FP32 graph under each precision this CPU has (``f32``, ``bf16``) and
for its INT8 Q/DQ graph (Model Optimizer, synthetic calibration: for timing), both backends of the
same file are timed interleaved (two ``Detector``s, ``static_shapes=True`` and ``False``): the
latency of one image (median) and the throughput of single images submitted as a stream submits
them (``streams/capacity.py``, images/s), with the CPU and its ISA recorded.
Writes ``ov_shapes.md`` and ``ov_shapes.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.argtypes import positive_float, positive_int
from retina_trt.utils import atomic_path


def _frame(det, seed: int = 0) -> np.ndarray:
    """A frame of the model's input size (no resize: inference is what differs)."""
    height, width = det.input_size
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def compare(
    graphs: dict[str, tuple[Path, str]], rounds: int, threads: int | None, seconds: float
) -> list[dict[str, Any]]:
    """One row per graph: static and dynamic latency (ms, ``det(frame)``, interleaved) and the
    throughput of single images submitted as a stream submits them (images/s,
    ``capacity.batch_throughput`` at batch 1)."""
    from retina_trt import Detector
    from retina_trt.streams.capacity import batch_throughput

    rows = []
    for label, (path, precision) in graphs.items():
        pair = {
            static: Detector(path, backend="openvino", precision=precision, num_threads=threads, static_shapes=static)
            for static in (True, False)
        }
        frame = _frame(pair[True])
        times: dict[bool, list[float]] = {True: [], False: []}
        for det in pair.values():
            det(frame)
        for _ in range(rounds):
            for static, det in pair.items():
                started = time.perf_counter()
                det(frame)
                times[static].append((time.perf_counter() - started) * 1e3)
        rate = {
            static: batch_throughput(det, frame, batches=(1,), seconds=seconds, warmup_s=seconds / 3)[1]
            for static, det in pair.items()
        }
        row = {"graph": label, "precision": pair[True].precision, "input": list(pair[True].input_size)}
        for static, name in ((True, "static"), (False, "dynamic")):
            row[f"{name}_ms"] = round(statistics.median(times[static]), 2)
            row[f"{name}_img_s"] = round(rate[static], 1)
        row["latency_ratio"] = round(row["dynamic_ms"] / row["static_ms"], 3)
        row["throughput_ratio"] = round(row["static_img_s"] / row["dynamic_img_s"], 3)
        rows.append(row)
        for det in pair.values():
            det.close()
    return rows


def _check_model(parser: argparse.ArgumentParser, model: Path) -> None:
    """A fixed-size retina_trt ONNX export, or a usage error (exit 2) that says what to pass."""
    from retina_trt.contract.onnx_metadata import read_metadata
    from retina_trt.errors import RetinaTrtError

    if not model.is_file():
        parser.error(f"--model {model}: no such file (export one: retina-trt export --weights W --output M.onnx)")
    try:
        input_size = read_metadata(model).input_size
    except (RetinaTrtError, ValueError, OSError) as err:
        parser.error(f"--model {model}: not a retina_trt ONNX export ({err})")
    if input_size is None:
        parser.error(
            f"--model {model} has dynamic height and width, which always run on the dynamic model; "
            "export at a fixed size (retina-trt export --input-size HxW)"
        )


def _graphs(model: Path, workdir: Path) -> dict[str, tuple[Path, str]]:
    from retina_trt.bench.routes import int8_graph
    from retina_trt.runtime.openvino_backend import import_openvino

    capabilities = import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    graphs = {"fp32 graph, f32": (model, "f32")}
    if "BF16" in capabilities:
        graphs["fp32 graph, bf16"] = (model, "bf16")
    graphs["int8 graph"] = (int8_graph(model, workdir), "auto")
    return graphs


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        "# OpenVINO: static against dynamic input shapes (batch 1)",
        "",
        f"Measured on: {machine['cpu']} ({machine['cpu_cores']} cores, ISA {' '.join(machine['cpu_isa'])}; "
        f"openvino {machine.get('openvino', '?')}).",
        "",
        "| graph | runs in | input | static ms | dynamic ms | latency gain | static img/s | dynamic img/s | "
        "throughput gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['graph']} | {r['precision']} | {r['input'][0]}x{r['input'][1]} | {r['static_ms']} | "
            f"{r['dynamic_ms']} | {r['latency_ratio']}x | {r['static_img_s']} | {r['dynamic_img_s']} | "
            f"{r['throughput_ratio']}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a fixed-size FP32 export (.onnx)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=positive_int, default=30, help="timed single-image runs per backend")
    parser.add_argument("--seconds", type=positive_float, default=3.0, help="throughput timing per backend")
    parser.add_argument("--threads", type=positive_int, default=None)
    args = parser.parse_args(argv)
    _check_model(parser, args.model)
    from retina_trt.bench.latency import machine_info

    with tempfile.TemporaryDirectory() as tmp:
        rows = compare(_graphs(args.model, Path(tmp)), args.rounds, args.threads, args.seconds)
    machine = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "ov_shapes.json") as tmp_path:
        tmp_path.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    text = markdown(rows, machine)
    with atomic_path(args.out / "ov_shapes.md") as tmp_path:
        tmp_path.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
