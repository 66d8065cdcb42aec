"""Runtime backends: run a preprocessed batch and return detections in network-input pixels.

A backend has ``spec``, ``input_size`` ((H, W) for fixed-size models, None for dynamic),
``max_batch`` and ``run(batch) -> list[RawDetections]``. ``TorchBackend`` runs a checkpoint
with the reference postprocess; ``OnnxRuntimeBackend`` runs an exported ONNX model (finishing
``nms="none"`` exports with the same reference NMS on the host).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from retina_trt.errors import BackendUnavailableError, ModelFormatError
from retina_trt.model.checkpoint import load_checkpoint
from retina_trt.model.normalize import PixelNormalizer
from retina_trt.model.postprocess import postprocess_candidates
from retina_trt.runtime.preprocess import PreprocessedBatch
from retina_trt.spec import ModelSpec

logger = logging.getLogger(__name__)


class RawDetections(NamedTuple):
    """boxes (ndarray[D, 4] float32, xyxy network-input pixels), scores [D], labels [D] int64."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _from_torch(result: dict[str, torch.Tensor]) -> RawDetections:
    return RawDetections(
        result["boxes"].float().numpy(), result["scores"].float().numpy(), result["labels"].long().numpy()
    )


def finish_candidates(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, spec: ModelSpec) -> list[RawDetections]:
    """The reference NMS on the host for ``nms="none"`` outputs (candidates [B, N, ...])."""
    tensors = (torch.from_numpy(np.ascontiguousarray(a)) for a in (boxes, scores, classes))
    return [_from_torch(r) for r in postprocess_candidates(*tensors, spec)]


class TorchBackend:
    """The PyTorch reference on the CPU (``.pt`` checkpoints)."""

    name = "torch"

    def __init__(self, path: str | os.PathLike, *, num_threads: int | None = None) -> None:
        self.model = load_checkpoint(path)
        self.spec: ModelSpec = self.model.spec
        self.normalizer = PixelNormalizer(self.spec)
        self.input_size: tuple[int, int] | None = None
        self.max_batch = 64
        if num_threads:
            torch.set_num_threads(num_threads)

    @torch.no_grad()
    def run(self, batch: PreprocessedBatch) -> list[RawDetections]:
        images = self.normalizer(torch.from_numpy(batch.pixels))
        sizes = [tuple(int(v) for v in s) for s in batch.image_sizes]
        return [_from_torch(r) for r in self.model.detect(images, sizes)]

    def close(self) -> None:
        pass


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
        from retina_trt.export.metadata import parse_metadata

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
        self.output_names = list(meta.export["outputs"])
        self.input_names = list(meta.export.get("inputs", ["images", "image_sizes"]))
        self.float_input = str(meta.export.get("input_format", "uint8")).startswith("float32")

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


BACKENDS = ("auto", "onnxruntime", "torch", "tensorrt")


def open_backend(path: str | os.PathLike, backend: str = "auto", **options):
    """Open the backend for ``path`` (``auto``: by file type)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = Path(path)
    suffix = path.suffix.lower()
    if backend == "auto":
        backend = {".onnx": "onnxruntime", ".pt": "torch", ".pth": "torch", ".engine": "tensorrt"}.get(suffix, "")
        if not backend:
            raise ModelFormatError(
                f"cannot tell the model type of {path}: expected .onnx (ONNX Runtime), .pt/.pth "
                "(PyTorch checkpoint) or .engine (TensorRT); pass backend=... to force one"
            )
    if backend == "tensorrt":
        from retina_trt.trt.runtime import TensorRTBackend

        return TensorRTBackend(path, cuda_graph=bool(options.get("cuda_graph")), device=int(options.get("device") or 0))
    if backend == "torch":
        return TorchBackend(path, num_threads=options.get("num_threads"))
    return OnnxRuntimeBackend(
        path,
        providers=options.get("providers"),
        num_threads=options.get("num_threads"),
        session_config=options.get("session_config"),
    )
