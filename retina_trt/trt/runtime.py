"""The TensorRT backend of ``Detector``: a retina_trt engine file run with TensorRT and CUDA.

* The engine file's header is checked first (TensorRT flavour and version, GPU compute
  capability): a mismatch is an error that says how to rebuild, before TensorRT sees the plan.
  Engines of both flavours (TensorRT 10/11, TensorRT-RTX) and every NMS kind load; the flavour
  recorded in the header is the one imported. The engine's own tensors (names, modes, dtypes) are
  checked against the contract the header records; a setter that returns False raises.
* One engine, shared; execution contexts are never shared: a small pool hands one context (with
  its own CUDA stream, device buffers and pinned host buffers, allocated once for the profile's
  maximum batch) to each concurrent caller.
* Tensors are bound by name (``set_tensor_address``) and run with ``execute_async_v3`` on a
  non-default stream; copies are asynchronous from/to pinned memory; one synchronization per
  batch. With ``cuda_graph=True`` each input shape is captured once into a CUDA graph per context
  and replayed; engines whose output shapes depend on the data (``nms="onnx"``: TensorRT's
  INMSLayer copies shapes to the host, which a capture cannot hold) fall back to plain enqueues
  with one log line.
* ``submit`` runs batches on worker threads, one per context of the pool, so ``det.streams`` keeps
  ``parallel_requests`` (= ``max_contexts``) batches in flight on the GPU at once.
* ``run_torch`` takes CUDA torch tensors and binds their memory directly (zero copy).

CUDA goes through NVIDIA's CUDA Python binding (``cuda-python``: ``cuda.bindings.runtime``).
Nothing here has run on a GPU in this project's CI; the ``gpu`` tests exercise it on one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.contract import CANDIDATE_OUTPUTS, ExportInfo, RawDetections
from retina_trt.contract.engine_file import check_engine_compatible, read_engine_header, read_plan
from retina_trt.contract.nms import finish_candidates
from retina_trt.errors import ModelFormatError
from retina_trt.utils import BoundedWorkers

from .compat import (
    FLAVOUR_NAMES,
    cuda_device,
    flavour_of,
    import_cudart,
    import_tensorrt,
    make_logger,
)

logger = logging.getLogger(__name__)

# NMS kinds whose output shapes depend on the data (no CUDA graph capture).
_DATA_DEPENDENT_NMS = frozenset({"onnx"})


def cuda_graph_capturable(nms: str) -> bool:
    """Whether an engine of this NMS kind may be captured into a CUDA graph: not ``nms="onnx"``,
    whose INMSLayer copies its output shapes to the host during the enqueue (NVIDIA/TensorRT#4194).
    Others are tried; a capture that fails still falls back to plain enqueues."""
    return nms not in _DATA_DEPENDENT_NMS


def engine_io(trt, engine) -> dict[str, tuple[bool, np.dtype]]:
    """The engine's I/O tensors as TensorRT deserialized them: name -> (is input, numpy dtype)."""
    found = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        found[name] = (is_input, np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
    return found


def check_io(
    found: dict[str, tuple[bool, np.dtype]], info: ExportInfo, path: str | os.PathLike
) -> tuple[list[str], list[str], dict[str, np.dtype]]:
    """Check an engine's tensors (``engine_io``) against the contract its header records
    (``info``: inputs, outputs, input format); returns (inputs, outputs, numpy dtypes).

    Raises:
        ModelFormatError: a tensor missing, extra, of the wrong direction or dtype (a DeepStream
            float32-input engine under a uint8 header, say): rebuild the engine.
    """
    inputs, outputs = list(info.inputs), list(info.outputs)
    want_input = {**{n: True for n in inputs}, **{n: False for n in outputs}}
    if set(found) != set(want_input):
        raise ModelFormatError(
            f"{path}: the engine's tensors {sorted(found)} are not the contract's {sorted(want_input)}; rebuild it"
        )
    dtypes = {}
    for name, (is_input, have) in found.items():
        want = info.input_dtype(name) if want_input[name] else info.output_dtype(name)
        if is_input != want_input[name] or want is None or np.dtype(have) != np.dtype(want):
            mode, want_mode = ("input" if is_input else "output"), ("input" if want_input[name] else "output")
            raise ModelFormatError(
                f"{path}: tensor {name!r} is an {mode} of {np.dtype(have)}, the contract says an "
                f"{want_mode} of {np.dtype(want) if want else '?'}; rebuild the engine"
            )
        dtypes[name] = np.dtype(have)
    return inputs, outputs, dtypes


def _check(cudart, result):
    """Unpack a cuda-python ``(err, *values)`` result, raising on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        _, name = cudart.cudaGetErrorString(err)
        raise RuntimeError(f"CUDA error {int(err)}: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else (tuple(values) if values else None)


class _Buffers:
    """Device + pinned host memory of one context, sized for the profile's max shapes."""

    def __init__(self, cudart, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype]) -> None:
        self.cudart = cudart
        self.device: dict[str, int] = {}
        self.host: dict[str, np.ndarray] = {}
        self._host_ptrs: list[int] = []
        for name, shape in shapes.items():
            dtype = np.dtype(dtypes[name])
            nbytes = max(1, int(np.prod(shape))) * dtype.itemsize
            self.device[name] = int(_check(cudart, cudart.cudaMalloc(nbytes)))
            ptr = int(_check(cudart, cudart.cudaMallocHost(nbytes)))
            self._host_ptrs.append(ptr)
            raw = (ctypes.c_byte * nbytes).from_address(ptr)
            self.host[name] = np.frombuffer(raw, dtype=dtype)[: int(np.prod(shape))].reshape(shape)

    def free(self) -> None:
        for ptr in self.device.values():
            self.cudart.cudaFree(ptr)
        for ptr in self._host_ptrs:
            self.cudart.cudaFreeHost(ptr)
        self.device.clear()
        self.host.clear()
        self._host_ptrs.clear()


class _Context:
    """One execution context with its stream, buffers, events and captured CUDA graphs."""

    def __init__(self, backend: TensorRTBackend) -> None:
        cudart = self.cudart = backend._cudart
        self.inputs, self.outputs = backend.input_names, backend.output_names
        self.context = backend._engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = _check(cudart, cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        # Output sizes at the profile's largest input shapes (TensorRT computes them).
        b, h, w = backend.max_batch, *backend._profile[2][1:3]
        self._set_shapes(b, h, w)
        shapes = {"images": tuple(backend._profile[2]), "image_sizes": (b, 2)}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):  # data-dependent: bounded by the contract
                shape = backend._contract_max_shape(name)
            shapes[name] = shape
        self.buffers = _Buffers(
            cudart, {n: s for n, s in shapes.items() if n in self.inputs or n in self.outputs}, backend._np_dtypes
        )
        self.events = [_check(cudart, cudart.cudaEventCreate()) for _ in range(4)]
        self.use_graph = backend._cuda_graph
        self.graphs: dict[tuple[int, int, int], Any] = {}
        self.last_ms: dict[str, float] = {}

    def _set_shapes(self, batch: int, height: int, width: int) -> None:
        pixels = (batch, height, width, 3)
        if not self.context.set_input_shape("images", pixels):
            raise ValueError(f"TensorRT refused the input shape {pixels} (outside the engine's profile)")
        if "image_sizes" in self.inputs and not self.context.set_input_shape("image_sizes", (batch, 2)):
            raise ValueError(f"TensorRT refused the image_sizes shape {(batch, 2)}")

    def _bind(self, batch: int, height: int, width: int, addresses: dict[str, int]) -> None:
        self._set_shapes(batch, height, width)
        for name, address in addresses.items():
            if not self.context.set_tensor_address(name, address):
                raise RuntimeError(f"TensorRT refused the address of tensor {name!r}")

    def _execute(self) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def _enqueue(self, key: tuple[int, int, int]) -> None:
        """Run once; with CUDA graphs, one graph per input shape of this context (the first run
        of a shape is a plain enqueue, as TensorRT may allocate then; the next is captured)."""
        cudart = self.cudart
        if not self.use_graph:
            self._execute()
            return
        graph_exec = self.graphs.get(key)
        if graph_exec is not None:
            _check(cudart, cudart.cudaGraphLaunch(graph_exec, self.stream))
            return
        self._execute()
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check(cudart, cudart.cudaStreamBeginCapture(self.stream, mode))
        ok = self.context.execute_async_v3(int(self.stream))
        err, graph = cudart.cudaStreamEndCapture(self.stream)
        if not ok or int(err) != 0:
            self.use_graph = False  # this engine cannot be captured: plain enqueues from now on
            logger.warning(
                "CUDA graph capture failed (%s); running without CUDA graphs",
                "enqueue refused" if not ok else f"CUDA error {int(err)}",
            )
            self._execute()
            return
        graph_exec = _check(cudart, cudart.cudaGraphInstantiate(graph, 0))
        cudart.cudaGraphDestroy(graph)
        self.graphs[key] = graph_exec

    def _outputs(self, batch: int, addresses: dict[str, int]) -> dict[str, np.ndarray]:
        """Copy each output's current shape to pinned memory; returns host copies."""
        cudart = self.cudart
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        views = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            flat = self.buffers.host[name].reshape(-1)[: int(np.prod(shape))]
            _check(cudart, cudart.cudaMemcpyAsync(flat.ctypes.data, addresses[name], flat.nbytes, d2h, self.stream))
            views[name] = flat.reshape(shape)
        return views

    def infer(self, pixels: np.ndarray, sizes: np.ndarray) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (copies)."""
        cudart = self.cudart
        b, h, w, _ = pixels.shape
        host, device = self.buffers.host, self.buffers.device
        flat_images = host["images"].reshape(-1)[: pixels.size]
        flat_images[:] = pixels.reshape(-1)
        feeds = [("images", flat_images)]
        if "image_sizes" in self.inputs:
            host["image_sizes"][:b] = sizes
            feeds.append(("image_sizes", host["image_sizes"][:b]))
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        e0, e1, e2, e3 = self.events
        _check(cudart, cudart.cudaEventRecord(e0, self.stream))
        for name, array in feeds:
            _check(cudart, cudart.cudaMemcpyAsync(device[name], array.ctypes.data, array.nbytes, h2d, self.stream))
        _check(cudart, cudart.cudaEventRecord(e1, self.stream))
        self._bind(b, h, w, device)
        self._enqueue((b, h, w))
        _check(cudart, cudart.cudaEventRecord(e2, self.stream))
        outputs = self._outputs(b, device)
        _check(cudart, cudart.cudaEventRecord(e3, self.stream))
        _check(cudart, cudart.cudaStreamSynchronize(self.stream))
        self.last_ms = {
            "h2d": _check(cudart, cudart.cudaEventElapsedTime(e0, e1)),
            "compute": _check(cudart, cudart.cudaEventElapsedTime(e1, e2)),
            "d2h": _check(cudart, cudart.cudaEventElapsedTime(e2, e3)),
        }
        return {name: array.copy() for name, array in outputs.items()}

    def infer_device(self, images_ptr: int, sizes_ptr: int, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
        """Inputs already on the GPU (zero copy); outputs copied to the host."""
        b, h, w = shape
        addresses = {**self.buffers.device, "images": images_ptr}
        if "image_sizes" in self.inputs:
            addresses["image_sizes"] = sizes_ptr
        self._bind(b, h, w, addresses)
        self._execute()  # no graph: input addresses vary
        outputs = self._outputs(b, addresses)
        _check(self.cudart, self.cudart.cudaStreamSynchronize(self.stream))
        for name in self.inputs:
            self.context.set_tensor_address(name, self.buffers.device[name])
        return {name: array.copy() for name, array in outputs.items()}

    def close(self) -> None:
        cudart = self.cudart
        for graph_exec in self.graphs.values():
            cudart.cudaGraphExecDestroy(graph_exec)
        self.graphs.clear()
        for event in self.events:
            cudart.cudaEventDestroy(event)
        self.events = []
        self.buffers.free()
        cudart.cudaStreamDestroy(self.stream)
        self.context = None


@dataclass(frozen=True, kw_only=True)
class TensorRTOptions:
    """The TensorRT backend's options: ``Detector(m, options=TensorRTOptions(cuda_graph=True))``.

    Attributes:
        cuda_graph: replay captured CUDA graphs, one per input shape (engines with data-dependent
            shapes, ``nms="onnx"``, run without them and log it).
        max_contexts: execution contexts in the pool (batches in flight at once).
        device: CUDA device index the engine and every worker thread use.
    """

    cuda_graph: bool = False
    max_contexts: int = 2
    device: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.device, bool) or not isinstance(self.device, int) or self.device < 0:
            raise ValueError(f"device must be a CUDA device index (0, 1, ...), got {self.device!r}")
        if isinstance(self.max_contexts, bool) or not isinstance(self.max_contexts, int) or self.max_contexts < 1:
            raise ValueError(f"max_contexts must be a positive integer, got {self.max_contexts!r}")


class TensorRTBackend:
    """A retina_trt ``.engine`` on the GPU (see the module docstring).

    Args:
        path: engine file from ``retina-trt build-engine``.
        cuda_graph: capture and replay CUDA graphs (falls back to plain enqueues for engines
            with data-dependent shapes, ``nms="onnx"``).
        max_contexts: execution contexts in the pool (concurrent callers beyond it wait).
        device: CUDA device index the engine and every worker thread use.
    """

    name = "tensorrt"

    def __init__(
        self, path: str | os.PathLike, *, cuda_graph: bool = False, max_contexts: int = 2, device: int = 0
    ) -> None:
        path = Path(path)
        header = read_engine_header(path)
        trt = import_tensorrt(header.tensorrt_flavour)  # the flavour that built it, or a clear error
        _, capability = cuda_device(device)  # no GPU: one clear error before any CUDA call
        cudart = import_cudart()
        _check(cudart, cudart.cudaSetDevice(int(device)))
        check_engine_compatible(
            path,
            header,
            tensorrt_flavour=flavour_of(trt),
            tensorrt_version=str(trt.__version__),
            compute_capability=capability,
        )
        self.header = header
        self.spec = header.spec
        self.precision = header.precision  # what the engine was built from (fp16 / int8 / fp32)
        self.input_size = header.input_size
        self.max_batch = header.max_batch
        self.nms = header.nms
        self.device = int(device)
        self._cudart = cudart
        self._trt_logger = make_logger(trt)
        if flavour_of(trt) == "tensorrt":
            trt.init_libnvinfer_plugins(self._trt_logger, "")  # EfficientNMS_TRT engines
        self._runtime = trt.Runtime(self._trt_logger)
        if header.build.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True  # version-compatible plans carry host code
        self._engine = self._runtime.deserialize_cuda_engine(read_plan(path, header))
        if self._engine is None:
            raise ModelFormatError(
                f"{FLAVOUR_NAMES[flavour_of(trt)]} could not deserialize {path}; rebuild it with retina-trt "
                "build-engine"
            )
        self.input_names, self.output_names, self._np_dtypes = check_io(engine_io(trt, self._engine), header.info, path)
        self._profile = [tuple(s) for s in header.build["profile"]["images"]]
        self.min_batch = int(self._profile[0][0])  # a request is never split below it
        self._cuda_graph = bool(cuda_graph)
        if self._cuda_graph and not cuda_graph_capturable(self.nms):
            logger.warning(
                "nms=%r engines have data-dependent output shapes, which CUDA graphs cannot capture; "
                "running without them",
                self.nms,
            )
            self._cuda_graph = False
        self._max_contexts = max(1, int(max_contexts))
        self._pool: queue.LifoQueue[_Context] = queue.LifoQueue()
        self._created: list[_Context] = []
        self._lock = threading.Lock()
        self._workers: BoundedWorkers | None = None
        self.last_ms: dict[str, float] = {}

    def _contract_max_shape(self, name: str) -> tuple[int, ...]:
        d = self.spec.detections_per_img
        b = self.max_batch
        shapes = {
            "num_detections": (b, 1),
            "detection_boxes": (b, d, 4),
            "detection_scores": (b, d),
            "detection_classes": (b, d),
        }
        if name not in shapes:
            raise ModelFormatError(f"output {name!r} has a data-dependent shape the contract does not bound")
        return shapes[name]

    def _acquire(self) -> _Context:
        _check(self._cudart, self._cudart.cudaSetDevice(self.device))  # this (worker) thread's device
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._created) < self._max_contexts:
                ctx = _Context(self)
                self._created.append(ctx)
                return ctx
        return self._pool.get()

    def _check_shape(self, batch: int, height: int, width: int) -> None:
        lo, hi = self._profile[0], self._profile[2]
        if not (lo[1] <= height <= hi[1] and lo[2] <= width <= hi[2]):
            raise ValueError(
                f"input {height}x{width} is outside the engine's profile ({lo[1]}x{lo[2]} to {hi[1]}x{hi[2]}); "
                "rebuild with a larger `input_size` or profile"
            )
        if batch > self.max_batch:
            raise ValueError(f"batch {batch} exceeds the engine's maximum {self.max_batch}")
        if batch < self.min_batch:
            raise ValueError(
                f"batch {batch} is below the engine's minimum {self.min_batch}; rebuild with a profile whose "
                "minimum `batch` is 1"
            )

    def _raw(self, outputs: dict[str, np.ndarray]):
        if self.nms == "none":  # candidates out: the reference NMS on the host
            return finish_candidates(*(outputs[name] for name in CANDIDATE_OUTPUTS), self.spec)
        results = []
        for i in range(len(outputs["num_detections"])):
            n = int(outputs["num_detections"][i, 0])
            results.append(
                RawDetections(
                    outputs["detection_boxes"][i, :n],
                    outputs["detection_scores"][i, :n],
                    outputs["detection_classes"][i, :n].astype(np.int64),
                )
            )
        return results

    def run(self, batch) -> list:
        """A ``PreprocessedBatch`` (split beyond the engine's max batch) -> RawDetections per image."""
        results = []
        float_input = self._np_dtypes["images"] == np.float32
        for start in range(0, len(batch.pixels), self.max_batch):
            pixels = batch.pixels[start : start + self.max_batch]
            sizes = batch.image_sizes[start : start + self.max_batch]
            self._check_shape(*pixels.shape[:3])
            ctx = self._acquire()
            try:
                pixels = np.ascontiguousarray(pixels, dtype=np.float32 if float_input else np.uint8)
                outputs = ctx.infer(pixels, np.ascontiguousarray(sizes, dtype=np.int32))
                self.last_ms = dict(ctx.last_ms)
            finally:
                self._pool.put(ctx)
            results.extend(self._raw(outputs))
        return results

    @property
    def parallel_requests(self) -> int:
        """How many :meth:`submit` batches run at once: one per execution context."""
        return self._max_contexts

    def submit(self, batch) -> Future:
        """Start ``batch`` on a worker thread with a context of its own; the future's result is
        ``run``'s list. Blocks while every context is busy (at most ``parallel_requests`` in flight)."""
        with self._lock:
            if self._workers is None:
                self._workers = BoundedWorkers(self.run, self._max_contexts, "retina-trt-context")
        return self._workers.submit(batch)

    def run_torch(self, images, image_sizes) -> list:
        """Zero-copy inference on CUDA tensors: ``images`` uint8 [B, H, W, 3] (contiguous),
        ``image_sizes`` int32 [B, 2]; returns RawDetections per image."""
        import torch

        if not (images.is_cuda and image_sizes.is_cuda):
            raise ValueError("run_torch needs CUDA tensors; use run() for host arrays")
        images, image_sizes = images.contiguous(), image_sizes.to(dtype=torch.int32).contiguous()
        torch.cuda.current_stream().synchronize()  # the inputs are complete before our stream reads them
        b, h, w, _ = images.shape
        self._check_shape(b, h, w)
        ctx = self._acquire()
        try:
            outputs = ctx.infer_device(images.data_ptr(), image_sizes.data_ptr(), (b, h, w))
        finally:
            self._pool.put(ctx)
        return self._raw(outputs)

    def close(self) -> None:
        """Free every context, buffer, stream and graph now (idempotent); batches in flight finish first."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None
        for ctx in self._created:
            ctx.close()
        self._created.clear()
        while not self._pool.empty():
            self._pool.get_nowait()
        self._engine = None
        self._runtime = None

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
