"""The TensorRT backend of ``Detector``: a retina_trt engine file run with TensorRT and CUDA.

* The engine file's header is checked first (TensorRT version, GPU compute capability, plugins):
  a mismatch is an error that says how to rebuild, before TensorRT sees the plan.
* One engine, shared; execution contexts are never shared: a small pool hands one context (with
  its own CUDA stream, device buffers and pinned host buffers, allocated once for the profile's
  maximum batch) to each concurrent caller.
* Tensors are bound by name (``set_tensor_address``) and run with ``execute_async_v3`` on a
  non-default stream; copies are asynchronous from/to pinned memory; one synchronization per
  batch. With ``cuda_graph=True`` (fixed-shape engines) each batch size is captured once into a
  CUDA graph and replayed.
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
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.errors import BackendUnavailableError, ModelFormatError
from retina_trt.export.postprocess_graph import CONTRACT_OUTPUTS

from .compat import cuda_device, import_tensorrt, make_logger
from .engine_file import check_engine_compatible, read_engine_header, read_plan

logger = logging.getLogger(__name__)

INPUTS = ("images", "image_sizes")
_NP_DTYPES = {"images": np.uint8, "image_sizes": np.int32, "num_detections": np.int32,
              "detection_boxes": np.float32, "detection_scores": np.float32, "detection_classes": np.int32}  # fmt: skip


def import_cudart():
    """``cuda.bindings.runtime`` (cuda-python 12.6+), or the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as err:
            raise BackendUnavailableError(
                "the TensorRT backend needs NVIDIA's CUDA Python binding: pip install 'retina-trt[trt]' (cuda-python)"
            ) from err
    return cudart


def _check(cudart, result):
    """Unpack a cuda-python ``(err, *values)`` result, raising on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        _, name = cudart.cudaGetErrorString(err)
        raise RuntimeError(f"CUDA error {int(err)}: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else (tuple(values) if values else None)


class _Buffers:
    """Device + pinned host memory of one context, sized for the profile's max shapes."""

    def __init__(self, cudart, shapes: dict[str, tuple[int, ...]]) -> None:
        self.cudart = cudart
        self.device: dict[str, int] = {}
        self.host: dict[str, np.ndarray] = {}
        self._host_ptrs: list[int] = []
        for name, shape in shapes.items():
            dtype = np.dtype(_NP_DTYPES[name])
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self.device[name] = int(_check(cudart, cudart.cudaMalloc(nbytes)))
            ptr = int(_check(cudart, cudart.cudaMallocHost(nbytes)))
            self._host_ptrs.append(ptr)
            raw = (ctypes.c_byte * nbytes).from_address(ptr)
            self.host[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)

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

    def __init__(self, engine, cudart, max_shapes: dict[str, tuple[int, ...]], cuda_graph: bool) -> None:
        self.cudart = cudart
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = _check(cudart, cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        self.buffers = _Buffers(cudart, max_shapes)
        self.events = [_check(cudart, cudart.cudaEventCreate()) for _ in range(4)]
        self.use_graph = cuda_graph
        self.graphs: dict[int, Any] = {}
        self.last_ms: dict[str, float] = {}

    def _bind(self, batch: int, height: int, width: int, addresses: dict[str, int]) -> None:
        self.context.set_input_shape("images", (batch, height, width, 3))
        self.context.set_input_shape("image_sizes", (batch, 2))
        for name, address in addresses.items():
            self.context.set_tensor_address(name, address)

    def _enqueue(self, batch: int) -> None:
        cudart = self.cudart
        if not self.use_graph:
            if not self.context.execute_async_v3(int(self.stream)):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            return
        graph_exec = self.graphs.get(batch)
        if graph_exec is None:
            # The first run after a shape change must not be captured (TensorRT may allocate).
            if not self.context.execute_async_v3(int(self.stream)):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            _check(cudart, cudart.cudaStreamBeginCapture(self.stream, mode))
            ok = self.context.execute_async_v3(int(self.stream))
            graph = _check(cudart, cudart.cudaStreamEndCapture(self.stream))
            if not ok:
                raise RuntimeError("TensorRT execute_async_v3 failed during CUDA graph capture")
            graph_exec = _check(cudart, cudart.cudaGraphInstantiate(graph, 0))
            cudart.cudaGraphDestroy(graph)
            self.graphs[batch] = graph_exec
            return
        _check(cudart, cudart.cudaGraphLaunch(graph_exec, self.stream))

    def infer(self, pixels: np.ndarray, sizes: np.ndarray) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (views into pinned memory, copied by the caller)."""
        cudart = self.cudart
        b, h, w, _ = pixels.shape
        host, device = self.buffers.host, self.buffers.device
        flat_images = host["images"].reshape(-1)[: pixels.size]
        flat_images[:] = pixels.reshape(-1)
        host["image_sizes"][:b] = sizes
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        e0, e1, e2, e3 = self.events
        _check(cudart, cudart.cudaEventRecord(e0, self.stream))
        for name, array in (("images", flat_images), ("image_sizes", host["image_sizes"][:b])):
            _check(cudart, cudart.cudaMemcpyAsync(device[name], array.ctypes.data, array.nbytes, h2d, self.stream))
        _check(cudart, cudart.cudaEventRecord(e1, self.stream))
        self._bind(b, h, w, device)
        self._enqueue(b)
        _check(cudart, cudart.cudaEventRecord(e2, self.stream))
        outputs = {}
        for name in CONTRACT_OUTPUTS:
            view = host[name][:b]
            _check(cudart, cudart.cudaMemcpyAsync(view.ctypes.data, device[name], view.nbytes, d2h, self.stream))
            outputs[name] = view
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
        cudart = self.cudart
        b, h, w = shape
        addresses = {**self.buffers.device, "images": images_ptr, "image_sizes": sizes_ptr}
        self._bind(b, h, w, addresses)
        if not self.context.execute_async_v3(int(self.stream)):  # no graph: input addresses vary
            raise RuntimeError("TensorRT execute_async_v3 failed")
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        outputs = {}
        for name in CONTRACT_OUTPUTS:
            view = self.buffers.host[name][:b]
            _check(cudart, cudart.cudaMemcpyAsync(view.ctypes.data, addresses[name], view.nbytes, d2h, self.stream))
            outputs[name] = view
        _check(cudart, cudart.cudaStreamSynchronize(self.stream))
        self.context.set_tensor_address("images", self.buffers.device["images"])
        self.context.set_tensor_address("image_sizes", self.buffers.device["image_sizes"])
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


class TensorRTBackend:
    """A retina_trt ``.engine`` on the GPU (see the module docstring).

    Args:
        path: engine file from ``retina-trt build-engine``.
        cuda_graph: capture and replay CUDA graphs (fixed-shape engines only).
        max_contexts: execution contexts in the pool (concurrent callers beyond it wait).
    """

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, *, cuda_graph: bool = False, max_contexts: int = 2) -> None:
        path = Path(path)
        header = read_engine_header(path)
        trt = import_tensorrt()
        cudart = import_cudart()
        _, capability = cuda_device()
        check_engine_compatible(path, header, tensorrt_version=str(trt.__version__), compute_capability=capability)
        if header.build.get("plugins"):
            try:
                from retina_trt.plugins import register_plugin
            except ImportError as err:
                raise BackendUnavailableError(f"{path} uses the retina_trt NMS plugin, which this version lacks") from err
            register_plugin()
        if header.export.get("nms") != "onnx":
            raise ModelFormatError(f"{path}: engines are built from nms='onnx' exports; got nms={header.export.get('nms')!r}")
        if cuda_graph and header.input_size is None:
            raise ValueError("cuda_graph=True needs a fixed-shape engine (this one has dynamic H and W)")
        self.header = header
        self.spec = header.spec
        self.input_size = header.input_size
        self.max_batch = header.max_batch
        self.nms = "onnx"
        self._cudart = cudart
        self._trt_logger = make_logger(trt)
        self._runtime = trt.Runtime(self._trt_logger)
        self._engine = self._runtime.deserialize_cuda_engine(read_plan(path, header))
        if self._engine is None:
            raise ModelFormatError(f"TensorRT could not deserialize {path}; rebuild it with retina-trt build-engine")
        profile = [tuple(s) for s in header.build["profile"]["images"]]
        self._max_shapes = {"images": profile[2], "image_sizes": (self.max_batch, 2)}
        d = self.spec.detections_per_img
        self._max_shapes.update({
            "num_detections": (self.max_batch, 1), "detection_boxes": (self.max_batch, d, 4),
            "detection_scores": (self.max_batch, d), "detection_classes": (self.max_batch, d),
        })  # fmt: skip
        self._profile = profile
        self._cuda_graph = cuda_graph
        self._max_contexts = max(1, int(max_contexts))
        self._pool: queue.LifoQueue[_Context] = queue.LifoQueue()
        self._created: list[_Context] = []
        self._lock = threading.Lock()
        self.last_ms: dict[str, float] = {}

    def _acquire(self) -> _Context:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._created) < self._max_contexts:
                ctx = _Context(self._engine, self._cudart, self._max_shapes, self._cuda_graph)
                self._created.append(ctx)
                return ctx
        return self._pool.get()

    def _check_shape(self, batch: int, height: int, width: int) -> None:
        lo, hi = self._profile[0], self._profile[2]
        if not (lo[1] <= height <= hi[1] and lo[2] <= width <= hi[2]):
            raise ValueError(
                f"input {height}x{width} is outside the engine's profile ({lo[1]}x{lo[2]} to {hi[1]}x{hi[2]}); "
                "rebuild with a larger --input-size/profile"
            )
        if batch > self.max_batch:
            raise ValueError(f"batch {batch} exceeds the engine's maximum {self.max_batch}")

    def _raw(self, outputs: dict[str, np.ndarray]):
        from retina_trt.runtime.backends import RawDetections

        results = []
        for i in range(len(outputs["num_detections"])):
            n = int(outputs["num_detections"][i, 0])
            results.append(RawDetections(outputs["detection_boxes"][i, :n], outputs["detection_scores"][i, :n],
                                         outputs["detection_classes"][i, :n].astype(np.int64)))  # fmt: skip
        return results

    def run(self, batch) -> list:
        """A ``PreprocessedBatch`` (split beyond the engine's max batch) -> RawDetections per image."""
        results = []
        for start in range(0, len(batch.pixels), self.max_batch):
            pixels = batch.pixels[start : start + self.max_batch]
            sizes = batch.image_sizes[start : start + self.max_batch]
            self._check_shape(*pixels.shape[:3])
            ctx = self._acquire()
            try:
                outputs = ctx.infer(np.ascontiguousarray(pixels), np.ascontiguousarray(sizes, dtype=np.int32))
                self.last_ms = dict(ctx.last_ms)
            finally:
                self._pool.put(ctx)
            results.extend(self._raw(outputs))
        return results

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
        """Free every context, buffer, stream and graph now (idempotent)."""
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
