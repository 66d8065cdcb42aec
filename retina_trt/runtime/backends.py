"""Runtime backends: run a preprocessed batch and return detections in network-input pixels.

A backend has ``spec``, ``input_size`` ((H, W) for fixed-size models, None for dynamic),
``max_batch``, ``precision`` and ``run(batch) -> list[RawDetections]``; a backend that runs several
requests at once also has ``parallel_requests`` and ``submit(batch) -> Future``. ``open_backend``
finds one by file type in a small registry (``BACKEND_MODULES``) and imports only that one:
OpenVINO (``runtime/openvino_backend.py``, the fastest CPU route) or ONNX Runtime (here, the
reference and the fallback) for ``.onnx``, the PyTorch reference (``runtime/torch_backend.py``)
for checkpoints, TensorRT (``trt/runtime.py``) for engines. Running an ``.onnx`` or ``.engine``
never imports torch (tests/test_layers.py).
``nms="none"`` exports are finished on the host by the reference NMS in numpy (``contract.nms``).
"""

from __future__ import annotations

import importlib
import importlib.util
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
        try:
            info.check_graph(
                {i.name: (_ort_dtype(i.type), _dims(i.shape)) for i in self.session.get_inputs()},
                [o.name for o in self.session.get_outputs()],
                str(path),
            )
        except ValueError as err:
            raise ModelFormatError(str(err)) from err
        self.output_names = list(info.outputs)
        self.input_names = list(info.inputs)
        self.float_input = info.float_input
        self.graph_precision = meta.precision
        if meta.precision == "int8" and providers == ["CPUExecutionProvider"]:
            # measured (docs/engines.md): no Conv fusion for Q/DQ on inputs only, slower than FP32
            logger.warning(
                "%s is an INT8 Q/DQ graph made for TensorRT; ONNX Runtime's CPU provider runs it "
                "slower than the FP32 export. For INT8 on the CPU use backend='openvino' (%s)",
                path.name,
                'pip install "retina-trt[openvino]"',
            )

    @property
    def precision(self) -> str:
        return self.graph_precision

    def run(self, batch: PreprocessedBatch) -> list[RawDetections]:
        pixels = batch.pixels.astype(np.float32) if self.float_input else batch.pixels
        feeds = {"images": pixels, "image_sizes": batch.image_sizes}
        outputs = self.session.run(self.output_names, {name: feeds[name] for name in self.input_names})
        return outputs_to_detections(outputs, self.nms, self.spec)

    def close(self) -> None:
        self.session = None


def _ort_dtype(type_name: str) -> str:
    """``"tensor(uint8)"`` -> ``"uint8"`` (``"tensor(float)"`` -> ``"float32"``)."""
    name = type_name.removeprefix("tensor(").removesuffix(")")
    return {"float": "float32", "double": "float64"}.get(name, name)


def _dims(shape) -> list:
    """ints for fixed dims, None for symbolic/unknown ones."""
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]


def outputs_to_detections(outputs: list[np.ndarray], nms: str, spec) -> list[RawDetections]:
    """Per image :class:`RawDetections` from a model's outputs (contract order; ``nms="none"``:
    the candidates, finished by the reference NMS in numpy)."""
    if nms == "none":
        return finish_candidates(*outputs, spec)
    num, boxes, scores, classes = outputs
    results = []
    for i in range(len(num)):
        n = int(num[i, 0])
        results.append(RawDetections(boxes[i, :n], scores[i, :n], classes[i, :n].astype(np.int64)))
    return results


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
    "openvino": ("retina_trt.runtime.openvino_backend", "OpenVinoBackend"),
    "torch": ("retina_trt.runtime.torch_backend", "TorchBackend"),
    "tensorrt": ("retina_trt.trt.runtime", "TensorRTBackend"),
    "triton": ("retina_trt.runtime.triton_backend", "TritonBackend"),  # grpc:// or http:// model URLs
}
assert BACKENDS == ("auto", *BACKEND_MODULES), "contract.BACKENDS and the registry disagree"
BACKEND_BY_SUFFIX = {".onnx": "onnxruntime", ".pt": "torch", ".pth": "torch", ".engine": "tensorrt"}


def open_backend(path: str | os.PathLike, backend: str = "auto", **options):
    """Open the backend for ``path`` (``auto``: by file type).

    ``auto`` runs an ``.onnx`` with OpenVINO where it is installed (the fastest CPU route) unless
    ONNX Runtime options (``providers``, ``session_config``) ask for ONNX Runtime; a model OpenVINO
    cannot run, or a machine without it, falls back to ONNX Runtime, and the log says so.

    Options: ``providers``, ``session_config`` (ONNX Runtime), ``num_threads`` (ONNX Runtime,
    OpenVINO, torch), ``precision``, ``cache_dir``, ``static_shapes`` (OpenVINO), ``cuda_graph``,
    ``device`` (TensorRT).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton" or (backend == "auto" and _is_server_url(path)):
        from retina_trt.runtime.triton_backend import TritonBackend

        if not _is_server_url(path):
            raise ValueError(f"backend='triton' takes a model URL grpc://HOST:PORT/MODEL or http://...; got {path}")
        return TritonBackend(str(path), timeout_s=float(options.get("timeout_s") or 10.0))
    path = Path(path)
    if backend == "auto":
        backend = BACKEND_BY_SUFFIX.get(path.suffix.lower(), "")
        if not backend:
            raise ModelFormatError(
                f"cannot tell the model type of {path}: expected .onnx (OpenVINO / ONNX Runtime), .pt/.pth "
                "(PyTorch checkpoint) or .engine (TensorRT); pass backend=... to force one"
            )
        if backend == "onnxruntime" and not (options.get("providers") or options.get("session_config")):
            return _auto_onnx(path, options)
    return _open(backend, path, options)


def _is_server_url(model) -> bool:
    text = str(model) if isinstance(model, str) else ""
    return text.split("://", 1)[0].lower() in ("grpc", "http") and "://" in text


def _open(backend: str, path: Path, options: dict[str, Any]):
    module, name = BACKEND_MODULES[backend]
    cls = getattr(importlib.import_module(module), name)
    if backend == "tensorrt":
        return cls(path, cuda_graph=bool(options.get("cuda_graph")), device=int(options.get("device") or 0))
    if backend == "torch":
        return cls(path, num_threads=options.get("num_threads"))
    if backend == "openvino":
        return cls(
            path,
            precision=options.get("precision") or "auto",
            num_threads=options.get("num_threads"),
            cache_dir=options.get("cache_dir"),
            static_shapes=options.get("static_shapes", True),
        )
    return cls(
        path,
        providers=options.get("providers"),
        num_threads=options.get("num_threads"),
        session_config=options.get("session_config"),
    )


def _auto_onnx(path: Path, options: dict[str, Any]):
    """OpenVINO where it is installed and can run ``path``, else ONNX Runtime (logged)."""
    if importlib.util.find_spec("openvino") is None:
        logger.info(
            "OpenVINO is not installed, so ONNX Runtime runs %s (the faster CPU route: "
            'pip install "retina-trt[openvino]")',
            path.name,
        )
        return _open("onnxruntime", path, options)
    try:
        chosen = _open("openvino", path, options)
    except ValueError:  # a precision this CPU lacks: the user's to fix, not to hide
        raise
    except (BackendUnavailableError, ModelFormatError) as err:
        logger.info("OpenVINO cannot run %s (%s); ONNX Runtime runs it", path.name, err)
        return _open("onnxruntime", path, options)
    logger.debug("backend auto: OpenVINO runs %s in %s", path.name, chosen.precision)
    return chosen
