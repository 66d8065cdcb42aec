"""retina-trt: deploy RetinaNet detectors with NVIDIA TensorRT.

Heavy pieces import lazily: ``import retina_trt`` loads neither torch-free runtime extras nor
tensorrt, triton, modelopt or the CUDA binding, and changes no environment variable (the
``retina-trt`` command sets its process's defaults: ``cli.process_defaults``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from retina_trt._version import __version__
from retina_trt.errors import (
    BackendUnavailableError,
    CheckpointError,
    EngineBuildError,
    ExportError,
    ImageError,
    ModelFormatError,
    RetinaTrtError,
    SpecError,
    VideoError,
)
from retina_trt.spec import ModelSpec, torchvision_spec

# Public names resolved on first use (PEP 562), so that `import retina_trt` stays light.
_LAZY = {
    "RetinaNet": "retina_trt.model.retinanet",
    "HeadOutputs": "retina_trt.model.retinanet",
    "load_checkpoint": "retina_trt.model.checkpoint",
    "save_checkpoint": "retina_trt.model.checkpoint",
    "export_onnx": "retina_trt.export.onnx_export",
    "Detector": "retina_trt.runtime.detector",
    "Detections": "retina_trt.runtime.detections",
    "build": "retina_trt.pipeline",
    "CalibrationConfig": "retina_trt.calibration",
    "OpenVinoOptions": "retina_trt.runtime.openvino_backend",
    "OnnxRuntimeOptions": "retina_trt.runtime.onnxruntime_backend",
    "TritonOptions": "retina_trt.runtime.triton_backend",
    "TensorRTOptions": "retina_trt.trt.runtime",
}

__all__ = [
    "BackendUnavailableError",
    "CalibrationConfig",
    "CheckpointError",
    "Detections",
    "Detector",
    "EngineBuildError",
    "ExportError",
    "HeadOutputs",
    "ImageError",
    "ModelFormatError",
    "ModelSpec",
    "RetinaNet",
    "RetinaTrtError",
    "SpecError",
    "VideoError",
    "OnnxRuntimeOptions",
    "OpenVinoOptions",
    "TensorRTOptions",
    "TritonOptions",
    "__version__",
    "build",
    "export_onnx",
    "load_checkpoint",
    "save_checkpoint",
    "torchvision_spec",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'retina_trt' has no attribute {name!r}")


if TYPE_CHECKING:
    from retina_trt.calibration import CalibrationConfig
    from retina_trt.export.onnx_export import export_onnx
    from retina_trt.model.checkpoint import load_checkpoint, save_checkpoint
    from retina_trt.model.retinanet import HeadOutputs, RetinaNet
    from retina_trt.pipeline import build
    from retina_trt.runtime.detections import Detections
    from retina_trt.runtime.detector import Detector
    from retina_trt.runtime.onnxruntime_backend import OnnxRuntimeOptions
    from retina_trt.runtime.openvino_backend import OpenVinoOptions
    from retina_trt.runtime.triton_backend import TritonOptions
    from retina_trt.trt.runtime import TensorRTOptions
