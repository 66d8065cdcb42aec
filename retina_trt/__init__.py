"""retina-trt: deploy RetinaNet detectors with NVIDIA TensorRT.

Heavy pieces import lazily: ``import retina_trt`` loads neither torch-free runtime extras nor
tensorrt, triton, modelopt or the CUDA binding.

On a machine without an NVIDIA driver, importing retina_trt sets ``TRITON_INTERPRET=1`` (unless
it is set, or Triton is already imported): Triton decides between compiling and interpreting
when it is first imported (torchvision imports it), and the NMS plugin's Triton kernels can only
run through the interpreter there (``retina_trt.plugins``).
"""

from __future__ import annotations

import importlib
import os
import sys

if "triton" not in sys.modules and "TRITON_INTERPRET" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["TRITON_INTERPRET"] = "1"
# OpenCV's own decoder limit (read when cv2 is first imported) for formats whose header
# retina_trt does not read itself: the same pixel limit (runtime/preprocess.py).
# (a bad RETINA_TRT_MAX_IMAGE_PIXELS is reported by the image reader, not passed to OpenCV)
# (only values OpenCV can parse: its std::stoull aborts the process on numbers past 2^64)
if (
    os.environ.get("RETINA_TRT_MAX_IMAGE_PIXELS", "1").isdigit()
    and 0 < int(os.environ.get("RETINA_TRT_MAX_IMAGE_PIXELS", "1")) <= 1 << 40
):
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", os.environ.get("RETINA_TRT_MAX_IMAGE_PIXELS", str(1 << 27)))
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
}

__all__ = [
    "BackendUnavailableError",
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
    "__version__",
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
    from retina_trt.export.onnx_export import export_onnx
    from retina_trt.model.checkpoint import load_checkpoint, save_checkpoint
    from retina_trt.model.retinanet import HeadOutputs, RetinaNet
    from retina_trt.runtime.detections import Detections
    from retina_trt.runtime.detector import Detector
