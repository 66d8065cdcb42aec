"""The OpenVINO backend of ``Detector``: our own ONNX files (FP32, INT8 Q/DQ) on the CPU, fast.

OpenVINO reads the exported ``.onnx`` directly: the FP32 export runs in FP32 or, with
``precision="bf16"``, in BF16 on the CPU's matrix units (AMX); the INT8 Q/DQ graph that
``build-engine --precision int8`` makes (the one TensorRT builds from) runs its convolutions in
INT8. ``precision="auto"`` picks the fastest the CPU has (BF16 where it has AMX-BF16, else FP32).

* **What ran.** :meth:`OpenVinoBackend.layer_precisions` reads OpenVINO's executed graph
  (``get_runtime_model()``) and counts each convolution's ``runtimePrecision``, and the
  precisions of the postprocess island (everything after the network's ``cls_p*``/``box_p*``
  outputs: decode, candidate selection, NMS), which stays FP32.
* **Threads.** One compiled model serves every thread: :meth:`run` uses an infer request per
  calling thread. :meth:`submit` runs batches asynchronously on a second, throughput-compiled
  model (compiled on first use, one CPU stream per core), so streams and batches keep every core
  busy while the caller decodes and preprocesses the next frames; at most
  :attr:`parallel_requests` batches are in flight in all.
* **Static shapes.** An export of fixed height and width runs a single image on a model compiled
  for exactly that input shape (batch 1), without the dynamic model's shape work per inference
  (faster on the demo model; measured in docs/cpu.md#static-against-dynamic-shapes by
  ``bench/ov_shapes.py``). Other batch sizes, and exports of dynamic height and width, run on the
  dynamic-shape model, compiled when first needed (a static model per batch size would cost
  memory for every size met; docs/cpu.md).
* **Cache.** Compiled models are cached under ``$RETINA_TRT_CACHE/openvino`` (default
  ``~/.cache/retina_trt``), keyed by the ONNX content, the OpenVINO version and every compile
  option, each entry checked against its digest before it is imported (``openvino_cache.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.contract import CPU_PRECISIONS
from retina_trt.contract.onnx_metadata import graph_precision, parse_metadata, trusted_precision
from retina_trt.errors import BackendUnavailableError, ModelFormatError
from retina_trt.image import PreprocessedBatch
from retina_trt.runtime.backend import check_threads, outputs_to_detections
from retina_trt.runtime.cpu import has_amx_bf16
from retina_trt.runtime.input_memory import check_input_fits
from retina_trt.runtime.openvino_cache import CompiledModelCache

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "retina-trt[openvino]" (or: pip install openvino)'
# tensor names of the traced network's outputs: the postprocess island starts there
NETWORK_OUTPUT_PREFIXES = ("cls_p", "box_p")


def import_openvino():
    """The ``openvino`` module, or :class:`BackendUnavailableError` naming the extra to install."""
    try:
        import openvino
    except ImportError as err:
        raise BackendUnavailableError(f"OpenVINO is not installed: {INSTALL_HINT}") from err
    return openvino


# OpenVINO reports a quantized convolution's runtime precision as its activation type: ``i8`` on
# CPUs with VNNI or AMX, ``u8`` on AVX2 without VNNI (measured on an AMD EPYC, Zen 2 class).
INT8_KINDS = ("i8", "u8")


def _ov_graph_precision(model) -> str:
    """The precision OpenVINO's reading of the ONNX really has (its Q/DQ pairs become FakeQuantize)."""
    import openvino as ov

    ops = model.get_ops()
    fp16 = any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in ops)
    return graph_precision({op.get_type_name() for op in ops}, fp16)


def resolve_precision(requested: str, capabilities: list[str], flags: frozenset[str] | None = None) -> str:
    """The inference precision hint for ``requested`` on a CPU with OpenVINO ``capabilities``.

    ``auto``: ``bf16`` where the CPU has AMX-BF16 and OpenVINO lists BF16, else ``f32``.

    Raises:
        ValueError: an unknown precision, or ``bf16`` on a CPU without BF16 (never a silent FP32).
    """
    if requested not in CPU_PRECISIONS:
        raise ValueError(f"precision must be one of {CPU_PRECISIONS} on the CPU, got {requested!r}")
    bf16 = "BF16" in capabilities
    if requested == "auto":
        return "bf16" if bf16 and has_amx_bf16(flags) else "f32"
    if requested == "bf16" and not bf16:
        raise ValueError(
            f"this CPU has no BF16 support (OpenVINO's CPU capabilities: {', '.join(capabilities)}); "
            "use precision='f32', or 'auto' for the fastest this CPU has"
        )
    return requested


def _one_line(err: Exception) -> str:
    """The informative line of an OpenVINO error (they carry C++ file:line preambles)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "not support" in line or "ONNX operations" in line or "node" in line.lower():
            return line[:400]
    return (lines[-1] if lines else type(err).__name__)[:400]


def _postprocess_ops(model) -> set[str]:
    """Friendly names of the ops at and after the network outputs (``cls_p*``/``box_p*``)."""
    stack = [
        op
        for op in model.get_ordered_ops()
        if any(n.startswith(NETWORK_OUTPUT_PREFIXES) for o in op.outputs() for n in o.get_names())
    ]
    seen: set[str] = set()
    while stack:
        op = stack.pop()
        if op.get_friendly_name() in seen:
            continue
        seen.add(op.get_friendly_name())
        stack.extend(t.get_node() for o in op.outputs() for t in o.get_target_inputs())
    return seen


def _ov_dtype(element_type) -> str:
    """OpenVINO's ``u8``/``f32``/``i32`` -> ``uint8``/``float32``/``int32``."""
    name = element_type.get_type_name()
    return {"u8": "uint8", "f32": "float32", "i32": "int32", "i64": "int64", "f16": "float16"}.get(name, name)


def _ov_dims(shape) -> list:
    return [d.get_length() if d.is_static else None for d in shape]


def _static_shapes(model) -> dict[str, list[int]] | None:
    """Every input's shape at one image, or None when another dimension is dynamic."""
    shapes = {}
    for port in model.inputs:
        rest = list(port.get_partial_shape())[1:]
        if not all(d.is_static for d in rest):
            return None
        shapes[port.get_any_name()] = [1, *(d.get_length() for d in rest)]
    return shapes


def _framework_props(model) -> dict[str, str]:
    """The ONNX ``metadata_props`` OpenVINO keeps in the model's ``rt_info["framework"]``."""
    if not model.has_rt_info(["framework"]):
        return {}
    keys = model.get_rt_info(["framework"]).astype(dict).keys()
    return {key: model.get_rt_info(["framework", key]).astype(str) for key in keys}


@dataclass(frozen=True, kw_only=True)
class OpenVinoOptions:
    """OpenVINO's options: ``Detector(m, options=OpenVinoOptions(precision="bf16"))``.

    Attributes:
        precision: ``auto`` (the fastest this CPU has: BF16 with AMX, else FP32), ``f32`` or
            ``bf16`` for the layers the graph does not quantize itself (an INT8 Q/DQ graph runs its
            convolutions in INT8 either way).
        num_threads: CPU threads of one inference (default: OpenVINO's, every core).
        cache_dir: compiled-model cache (default ``$RETINA_TRT_CACHE/openvino``).
        static_shapes: run single images of a fixed-size export on a model compiled for that one
            shape (default; docs/cpu.md says when it is faster), or ``False``: one dynamic-shape
            model for every batch.
    """

    precision: str = "auto"
    num_threads: int | None = None
    cache_dir: str | os.PathLike | None = None
    static_shapes: bool = True

    def __post_init__(self) -> None:
        if self.precision not in CPU_PRECISIONS:
            raise ValueError(f"precision must be one of {CPU_PRECISIONS}, got {self.precision!r}")
        check_threads(self.num_threads)


class OpenVinoBackend:
    """An exported ONNX model in OpenVINO on the CPU (see the module docstring).

    Args:
        path: a retina_trt ``.onnx`` (FP32 export or INT8 Q/DQ from ``prepare_precision``).
        precision: ``auto``, ``f32`` or ``bf16``: the precision of the layers the graph does not
            quantize itself (``auto``: the fastest this CPU has).
        num_threads: CPU threads of one inference (default: OpenVINO's, every core).
        cache_dir: compiled-model cache folder (default ``$RETINA_TRT_CACHE/openvino/<version>``).
        static_shapes: run single images of a fixed-size export on a static-shape model (default;
            ``False``: the dynamic-shape model for everything, ``Detector(static_shapes=False)``).
    """

    name = "openvino"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        precision: str = "auto",
        num_threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        static_shapes: bool = True,
    ) -> None:
        ov = import_openvino()
        path = Path(path)
        if not path.is_file():
            raise ModelFormatError(f"ONNX model not found: {path}")
        self._ov = ov
        self._core = ov.Core()
        self.path = path
        self.hint = resolve_precision(precision, list(self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")))
        self.num_threads = num_threads
        try:
            self._model = self._core.read_model(str(path))
        except Exception as err:  # OpenVINO raises RuntimeError/OpenVINO's own types
            raise ModelFormatError(f"OpenVINO cannot read {path}: {_one_line(err)}") from err
        meta = parse_metadata(_framework_props(self._model), str(path))
        check_input_fits(meta.spec, meta.input_size, str(path))
        self.spec, self.nms, self.input_size, self.max_batch = meta.spec, meta.nms, meta.input_size, meta.max_batch
        self.min_batch = meta.info.batch[0]
        self.graph_precision = trusted_precision(meta.precision, _ov_graph_precision(self._model), str(path))
        info = meta.info
        try:
            info.check_graph(
                {
                    i.get_any_name(): (_ov_dtype(i.get_element_type()), _ov_dims(i.get_partial_shape()))
                    for i in self._model.inputs
                },
                [o.get_any_name() for o in self._model.outputs],
                str(path),
            )
        except ValueError as err:
            raise ModelFormatError(str(err)) from err
        self.output_names, self.input_names, self.float_input = list(info.outputs), list(info.inputs), info.float_input
        self._cache = CompiledModelCache(cache_dir)
        self._static = _static_shapes(self._model) if static_shapes and self.min_batch <= 1 else None
        self._models: dict[tuple[str, bool], Any] = {}  # (performance hint, static) -> compiled model
        self._lock = threading.Lock()
        self._local = threading.local()
        self._queues: dict[bool, Any] = {}  # static -> AsyncInferQueue of that throughput model
        self._submit_lock = threading.Lock()
        self._slots: threading.Semaphore | None = None
        self._jobs = 1
        self._compiled, self.loaded_from_cache = self._compile("LATENCY", self._static)
        self._models[("LATENCY", self._static is not None)] = self._compiled
        logger.debug(
            "OpenVINO %s on %s: %s graph, %s precision for the rest, %s",
            ov.__version__,
            path.name,
            self.graph_precision,
            self.hint,
            "from the cache" if self.loaded_from_cache else "compiled",
        )

    # -- compile -----------------------------------------------------------------------------
    def _config(self, hint: str) -> dict[str, Any]:
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.hint, "PERFORMANCE_HINT": hint}
        if self.num_threads:
            config["INFERENCE_NUM_THREADS"] = int(self.num_threads)
        return config

    def _compile(self, hint: str, static: dict[str, list[int]] | None) -> tuple[Any, bool]:
        """(the compiled model for ``hint`` (LATENCY / THROUGHPUT), for the ``static`` input shapes
        or dynamic ones, whether it came from the cache)."""
        config = self._config(hint)
        key = self._cache.key(self.path, self._ov.__version__, {**config, "static_shapes": static})
        compiled = self._cache.load(self._core, key, config)
        if compiled is not None:
            return compiled, True
        model = self._model
        if static is not None:
            model = model.clone()
            model.reshape(static)
        try:
            compiled = self._core.compile_model(model, "CPU", config)
        except Exception as err:
            raise ModelFormatError(f"OpenVINO cannot compile {self.path}: {_one_line(err)}") from err
        self._cache.store(compiled, key)
        return compiled, False

    def _model_for(self, hint: str, batch_size: int):
        """The compiled model that runs a batch of ``batch_size`` (static when there is one for it)."""
        static = self._static is not None and batch_size == 1
        with self._lock:
            if (hint, static) not in self._models:
                self._models[(hint, static)] = self._compile(hint, self._static if static else None)[0]
            return self._models[(hint, static)], static

    @property
    def precision(self) -> str:
        """What runs: ``int8`` (convolutions) + the hint for the rest, e.g. ``int8+bf16``, or ``bf16``."""
        return f"int8+{self.hint}" if self.graph_precision == "int8" else self.hint

    @property
    def parallel_requests(self) -> int:
        """How many :meth:`submit` batches run at once (one CPU stream each)."""
        compiled, _ = self._model_for("THROUGHPUT", 1)
        return max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))

    # -- run ---------------------------------------------------------------------------------
    def _feeds(self, batch: PreprocessedBatch) -> dict[str, np.ndarray]:
        pixels = batch.pixels.astype(np.float32) if self.float_input else batch.pixels
        feeds = {"images": pixels, "image_sizes": batch.image_sizes}
        return {name: feeds[name] for name in self.input_names}

    def _outputs(self, request) -> list:
        return outputs_to_detections(
            [request.get_tensor(name).data.copy() for name in self.output_names], self.nms, self.spec
        )

    def run(self, batch: PreprocessedBatch) -> list:
        """Detections of a preprocessed batch (thread-safe: one infer request per thread)."""
        compiled, static = self._model_for("LATENCY", len(batch.pixels))
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        if static not in requests:
            requests[static] = compiled.create_infer_request()
        requests[static].infer(self._feeds(batch))
        return self._outputs(requests[static])

    def submit(self, batch: PreprocessedBatch) -> Future:
        """Start ``batch`` on a throughput model; the future's result is ``run``'s list.

        Blocks while :attr:`parallel_requests` batches are in flight (one per CPU stream), however
        they are split between the static and the dynamic model."""
        compiled, static = self._model_for("THROUGHPUT", len(batch.pixels))
        with self._submit_lock:
            if self._slots is None:  # asked once, not per batch
                self._jobs = self.parallel_requests
                self._slots = threading.BoundedSemaphore(self._jobs)
            if static not in self._queues:
                self._queues[static] = self._ov.AsyncInferQueue(compiled, self._jobs)
                self._queues[static].set_callback(self._done)
            queue, slots = self._queues[static], self._slots
        slots.acquire()
        future: Future = Future()
        try:
            with self._submit_lock:
                queue.start_async(self._feeds(batch), userdata=future)
        except BaseException:
            slots.release()
            raise
        return future

    def _done(self, request, future: Future) -> None:
        try:
            future.set_result(self._outputs(request))
        except Exception as err:  # delivered to whoever waits on the future
            future.set_exception(err)
        finally:
            self._slots.release()

    # -- what ran ----------------------------------------------------------------------------
    def layer_precisions(self) -> dict[str, dict[str, int]]:
        """Executed precision counts from OpenVINO's runtime model.

        ``{"convolutions": {"i8": 78}, "postprocess": {"f32": 120, "i32": 40, ...}}``: every
        convolution by ``runtimePrecision``, and every layer of the postprocess island (its
        original ops all after the network outputs) by its precision."""
        post = _postprocess_ops(self._model)
        convolutions: Counter = Counter()
        postprocess: Counter = Counter()
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layer, runtime = info["layerType"].astype(str), info["runtimePrecision"].astype(str)
            originals = [n for n in info["originalLayersNames"].astype(str).split(",") if n]
            if layer == "Convolution":
                convolutions[runtime] += 1
            elif originals and all(n in post for n in originals) and layer not in ("Const", "Output", "Input"):
                postprocess[runtime] += 1
        return {"convolutions": dict(convolutions), "postprocess": dict(postprocess)}

    def close(self) -> None:
        for queue in list(self._queues.values()):
            with contextlib.suppress(Exception):
                queue.wait_all()
        self._queues.clear()
        self._models.clear()
        self._compiled = None
        self._local = threading.local()


def format_layer_precisions(report: dict[str, dict[str, int]]) -> str:
    """``convolutions 78 i8; postprocess f32 120, i32 40`` (share of the most common in brackets)."""
    parts = []
    for group, counts in report.items():
        total = sum(counts.values())
        listed = ", ".join(f"{n} {p}" for p, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        parts.append(f"{group} {listed or 'none'}" + (f" (of {total})" if len(counts) > 1 else ""))
    return "; ".join(parts)
