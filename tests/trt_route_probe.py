"""Run the builder's and runtime's own entry points under the real TensorRT 10.x / 11.x bindings
(over stub native libraries) and report, through the recording seam (trt_seam.py), which binding
calls they made, in order, before the first native call the stubs cannot serve.

Run by tests/test_trt_routes.py in a subprocess with ``trt_bindings.bindings_env(major)``:
``python trt_route_probe.py plan.json`` prints one JSON line ``{label: {"calls": [...], "error": ...}}``.
The plan names ONNX files to build (``"builds"``) and engine files to load (``"loads"``, with a
device index). No GPU is here: the project's own device query (``cuda_device``, torch) is told a
GPU of compute capability 8.6 exists, and ``cudaSetDevice`` is logged, not made (trt_seam.py).
"""

from __future__ import annotations

import json
import queue
import sys
import tempfile
import threading
from pathlib import Path

from trt_seam import skip_calls, watch

TRT_NAMES = ["init_libnvinfer_plugins", "get_plugin_registry", "Builder", "OnnxParser", "Runtime"]


def _gpu(index=None, *, to_build=False):  # stands in for compat.cuda_device
    return "no GPU (seam)", (8, 6)


def _outcome(run) -> dict:
    log: list = []
    import tensorrt

    restore = watch(tensorrt, TRT_NAMES, log)
    try:
        run(log)
        error = None
    except Exception as err:  # the stubs stop every route somewhere: report where
        error = f"{type(err).__name__}: {err}"[:400]
    finally:
        restore()
    return {"calls": log, "error": error}


def main(plan_path: str) -> None:
    import retina_trt.trt.builder as builder
    import retina_trt.trt.runtime as runtime

    plan = json.loads(Path(plan_path).read_text())
    builder.cuda_device = runtime.cuda_device = _gpu
    real_cudart = runtime.import_cudart()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, onnx_path in plan.get("builds", {}).items():

            def build(log, onnx_path=onnx_path):
                builder.build_engine(onnx_path, Path(tmp) / "out.engine", builder.BuildOptions(flavour="tensorrt"))

            results[f"build:{label}"] = _outcome(build)
        for label, onnx_path in plan.get("parses", {}).items():
            results[f"parse:{label}"] = _outcome(lambda log, p=onnx_path: builder.parse_errors(p, "tensorrt"))
        for label, load in plan.get("loads", {}).items():

            def open_engine(log, load=load):
                runtime.import_cudart = lambda: skip_calls(real_cudart, ["cudaSetDevice"], log)
                backend = runtime.TensorRTBackend(load["engine"], device=load["device"])
                log.append(["loaded", [backend.nms]])

            results[f"load:{label}"] = _outcome(open_engine)
        if plan.get("acquire_device") is not None:
            # A worker thread's first call: the pool sets that thread's device before any CUDA work.
            log: list = []
            backend = object.__new__(runtime.TensorRTBackend)
            backend.device = int(plan["acquire_device"])
            backend._cudart = skip_calls(real_cudart, ["cudaSetDevice"], log)
            backend._pool, backend._created, backend._lock = queue.LifoQueue(), [], threading.Lock()
            context = object()  # a pooled context (none can be made over the stubs)
            backend._pool.put(context)
            worker = threading.Thread(target=lambda: log.append(["acquired", [backend._acquire() is context]]))
            worker.start()
            worker.join()
            results["acquire"] = {"calls": log, "error": None}
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
