"""Runtime backends: run a preprocessed batch and return detections in network-input pixels.

A backend has ``spec``, ``input_size`` ((H, W) for fixed-size models, None for dynamic),
``max_batch`` and ``run(batch) -> list[RawDetections]``. ``open_backend`` finds one by file type
in a small registry (``BACKEND_MODULES``) and imports only that one: ONNX Runtime here, the
PyTorch reference (``runtime/torch_backend.py``) for checkpoints, TensorRT (``trt/runtime.py``) for
engines. Running an ``.onnx`` or ``.engine`` never imports torch (tests/test_layers.py).
``nms="none"`` exports are finished on the host by the reference NMS in numpy (``contract.nms``).
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.contract import BACKENDS, RawDetections
from retina_trt.contract.nms import finish_candidates
from retina_trt.contract.onnx_metadata import parse_metadata
from retina_trt.errors import BackendUnavailableError, ModelFormatError
from retina_trt.image import PreprocessedBatch

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "OnnxRuntimeBackend", "RawDetections", "finish_candidates", "open_backend"]


def __getattr__(name: str) -> Any:
    if name == "TorchBackend":  # moved to runtime/torch_backend.py (imports torch)
        from retina_trt.runtime.torch_backend import TorchBackend

        return TorchBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class OnnxRuntimeBackend:
    """An exported ONNX model in ONNX Runtime (CPU provider unless ``providers`` says otherwise)."""

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        providers: list[str] | None = None,
        num_threads: int | None = None,
        session_config: dict[str, str] | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendUnavailableError(
                "ONNX Runtime is not installed: pip install onnxruntime (or onnxruntime-gpu)"
            ) from err
        path = Path(path)
        if not path.is_file():
            raise ModelFormatError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if num_threads:
            options.intra_op_num_threads = num_threads
        for key, value in (session_config or {}).items():
            options.add_session_config_entry(str(key), str(value))
        providers = providers or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as err:  # ORT raises its own exception types for foreign files
            # Only now look inside the file (parsing it costs as much as loading it): a model with
            # the NMS plugin's nodes needs their custom operators; EfficientNMS_TRT cannot run here.
            self.session = _session_with_plugin_ops(ort, path, options, providers, err)
        meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map, str(path))
        self.spec = meta.spec
        self.nms = meta.nms
        self.input_size = meta.input_size
        self.max_batch = meta.max_batch
        info = meta.info
        self.output_names = list(info.outputs)
        self.input_names = list(info.inputs)
        self.float_input = info.float_input

    def run(self, batch: PreprocessedBatch) -> list[RawDetections]:
        pixels = batch.pixels.astype(np.float32) if self.float_input else batch.pixels
        feeds = {"images": pixels, "image_sizes": batch.image_sizes}
        outputs = self.session.run(self.output_names, {name: feeds[name] for name in self.input_names})
        if self.nms == "none":
            return finish_candidates(*outputs, self.spec)
        num, boxes, scores, classes = outputs
        results = []
        for i in range(len(num)):
            n = int(num[i, 0])
            results.append(RawDetections(boxes[i, :n], scores[i, :n], classes[i, :n].astype(np.int64)))
        return results

    def close(self) -> None:
        self.session = None


def _session_with_plugin_ops(ort, path: Path, options, providers: list[str], first_error: Exception):
    """Retry a failed session for ``nms="plugin"`` models, or say why the model cannot load."""
    nodes = _graph_nodes(path)
    if any(n.op_type == "EfficientNMS_TRT" for n in nodes):
        raise BackendUnavailableError(
            f"{path} uses TensorRT's EfficientNMS_TRT (nms='efficient'), which only TensorRT runs; "
            "build an engine from it, or export with nms='onnx' for ONNX Runtime"
        ) from first_error
    if not any(n.domain == "ai.onnx.contrib" for n in nodes):
        raise ModelFormatError(f"ONNX Runtime cannot load {path}: {str(first_error).splitlines()[0]}") from first_error
    # nms="plugin": the NMS plugin's nodes run as Python custom operators (the same kernels)
    try:
        from onnxruntime_extensions import get_library_path

        import retina_trt.plugins.ort_ops  # noqa: F401 (defines the operators)
    except ImportError as err:
        raise BackendUnavailableError(
            f"{path} holds the retina_trt NMS plugin; running it in ONNX Runtime needs "
            "onnxruntime-extensions and triton (pip install onnxruntime-extensions)"
        ) from err
    options.register_custom_ops_library(get_library_path())
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:
        raise ModelFormatError(f"ONNX Runtime cannot load {path}: {str(err).splitlines()[0]}") from err


def _graph_nodes(path: Path):
    """The top-level nodes of an ONNX file (without loading its weights); none if unreadable."""
    import onnx

    try:
        return list(onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:  # the session's own error is clearer; let it report
        return []


# backend name -> (module, class): imported only when chosen.
BACKEND_MODULES = {
    "onnxruntime": ("retina_trt.runtime.backends", "OnnxRuntimeBackend"),
    "torch": ("retina_trt.runtime.torch_backend", "TorchBackend"),
    "tensorrt": ("retina_trt.trt.runtime", "TensorRTBackend"),
}
assert BACKENDS == ("auto", *BACKEND_MODULES), "contract.BACKENDS and the registry disagree"
BACKEND_BY_SUFFIX = {".onnx": "onnxruntime", ".pt": "torch", ".pth": "torch", ".engine": "tensorrt"}


def open_backend(path: str | os.PathLike, backend: str = "auto", **options):
    """Open the backend for ``path`` (``auto``: by file type).

    Options: ``providers``, ``session_config`` (ONNX Runtime), ``num_threads`` (ONNX Runtime,
    torch), ``cuda_graph``, ``device`` (TensorRT).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = Path(path)
    if backend == "auto":
        backend = BACKEND_BY_SUFFIX.get(path.suffix.lower(), "")
        if not backend:
            raise ModelFormatError(
                f"cannot tell the model type of {path}: expected .onnx (ONNX Runtime), .pt/.pth "
                "(PyTorch checkpoint) or .engine (TensorRT); pass backend=... to force one"
            )
    module, name = BACKEND_MODULES[backend]
    cls = getattr(importlib.import_module(module), name)
    if backend == "tensorrt":
        return cls(path, cuda_graph=bool(options.get("cuda_graph")), device=int(options.get("device") or 0))
    if backend == "torch":
        return cls(path, num_threads=options.get("num_threads"))
    return cls(path, providers=options.get("providers"), num_threads=options.get("num_threads"),
               session_config=options.get("session_config"))  # fmt: skip
