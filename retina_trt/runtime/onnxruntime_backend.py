"""The ONNX Runtime backend: an exported ONNX model in ONNX Runtime (the reference and the fallback
of ``.onnx`` files where OpenVINO is missing or cannot run them).

``nms="none"`` exports are finished on the host by the reference NMS in numpy (``contract.nms``);
a model with the NMS plugin's nodes runs them as Python custom operators (onnxruntime-extensions).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retina_trt.contract import RawDetections
from retina_trt.contract.onnx_metadata import onnx_graph_precision, parse_metadata, trusted_precision
from retina_trt.errors import BackendUnavailableError, ModelFormatError
from retina_trt.image import PreprocessedBatch
from retina_trt.runtime.backend import check_threads, outputs_to_detections
from retina_trt.runtime.input_memory import check_input_fits

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class OnnxRuntimeOptions:
    """ONNX Runtime's options: ``Detector(m, options=OnnxRuntimeOptions(num_threads=2))``.

    Attributes:
        providers: execution providers (default CPU).
        num_threads: intra-op threads (default: ONNX Runtime's choice).
        session_config: session config entries, e.g. ``{"session.intra_op.allow_spinning": "0"}``
            (recommended with ``Detector.stream``, whose decode and encode threads need the cores
            ONNX Runtime's spinning threads would hold).
    """

    providers: list[str] | None = None
    num_threads: int | None = None
    session_config: dict[str, str] | None = None

    def __post_init__(self) -> None:
        check_threads(self.num_threads)


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
        check_input_fits(meta.spec, meta.input_size, str(path))
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
        self.graph_precision = trusted_precision(meta.precision, onnx_graph_precision(path), str(path))
        if self.graph_precision == "int8" and providers == ["CPUExecutionProvider"]:
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
