"""The contract every exported graph, engine and backend keeps (no heavy imports here).

Inputs: ``images`` uint8 [B, H, W, 3] BGR (NHWC, as decoders give frames) and ``image_sizes``
int32 [B, 2], the (h, w) of each image's valid (unpadded) region.

Outputs of every NMS kind but ``none`` (mirrors TensorRT's EfficientNMS_TRT):
``num_detections`` int32 [B, 1], ``detection_boxes`` float32 [B, D, 4] xyxy in network-input
pixels, ``detection_scores`` float32 [B, D], ``detection_classes`` int32 [B, D]; rows past
num_detections are 0 (DeepStream exports alone give float32 ``detection_classes``, which
DeepStream's stock parser reads). ``nms="none"`` exports give the merged pre-NMS candidates instead.

Backends return ``RawDetections`` per image. Submodules: ``onnx_metadata`` (what an export says
about itself), ``engine_file`` (the engine header), ``nms`` (the reference NMS in numpy, the tie
order every NMS path keeps). This package imports numpy only; see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

INPUT_NAMES = ("images", "image_sizes")
CONTRACT_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
CANDIDATE_OUTPUTS = ("candidate_boxes", "candidate_scores", "candidate_classes")
# Inside exports with NMS: the merged candidates NMS starts from (boxes [B, N, 4] float32,
# scores [B, N] float32, labels [B, N] int64), named so tools can split the graph there.
NMS_INPUTS = ("nms_input_boxes", "nms_input_scores", "nms_input_labels")

# Where NMS runs, by export kind, and which runtimes can carry it.
NMS_KINDS = {
    "onnx": "ONNX NonMaxSuppression in the graph (ONNX Runtime; TensorRT 10/11's INMSLayer)",
    "graph": "exact greedy NMS from plain ONNX operators (every TensorRT flavour, TensorRT-RTX included)",
    "none": "no NMS in the graph: merged candidates out, NMS on the host",
    "plugin": "the retina_trt NMS plugin, Triton kernels embedded as PTX (TensorRT 10.9+/11)",
    "efficient": "TensorRT's EfficientNMS_TRT plugin (TensorRT 10/11 only)",
}
NMS_CHOICES = tuple(NMS_KINDS)
# What each TensorRT flavour can build (TensorRT-RTX has no INMSLayer runner and no plugins).
NMS_BY_FLAVOUR = {
    "tensorrt": ("onnx", "graph", "none", "plugin", "efficient"),
    "tensorrt_rtx": ("graph", "none"),
}
DEFAULT_NMS_BY_FLAVOUR = {"tensorrt": "onnx", "tensorrt_rtx": "graph"}

# dtype of every tensor the contract names (a float32-input export has float32 ``images``).
TENSOR_DTYPES = {
    "images": np.uint8,
    "image_sizes": np.int32,
    "num_detections": np.int32,
    "detection_boxes": np.float32,
    "detection_scores": np.float32,
    "detection_classes": np.int32,
    "candidate_boxes": np.float32,
    "candidate_scores": np.float32,
    "candidate_classes": np.int32,
}

# ``detection_classes`` dtype: int32 is the contract; float32 only in DeepStream exports, whose
# stock parser reads float classes (serving/deepstream.py).
CLASSES_DTYPES = ("int32", "float32")
MAX_BATCH = 4096
PRECISIONS = ("fp32", "fp16", "int8")
CALIB_METHODS = ("entropy", "max", "percentile")  # INT8 calibration (calibration/precision.py)
# Runtimes a Detector can use ("auto": by file type; runtime/backends.py holds the registry).
BACKENDS = ("auto", "onnxruntime", "openvino", "torch", "tensorrt", "triton")
# OpenVINO CPU precision of the layers a graph does not quantize ("auto": the fastest the CPU has)
CPU_PRECISIONS = ("auto", "f32", "bf16")


class RawDetections(NamedTuple):
    """One image's detections as a backend returns them: ``boxes`` ndarray[D, 4] float32 (xyxy,
    network-input pixels), ``scores`` [D] float32, ``class_ids`` [D] int64, highest score first.

    ``class_id`` is the API's one word for the class index (``Detections.class_ids``); only the
    contract's tensors keep TensorRT's and torchvision's names (``detection_classes``, ``labels``).
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """Deprecated name of ``class_ids`` (kept for one release)."""
        warnings.warn("RawDetections.labels is now RawDetections.class_ids", DeprecationWarning, stacklevel=2)
        return self.class_ids


def check_ints(value, count: int, name: str, lo: int, hi: int) -> list[int]:
    """``value`` as a list of ``count`` integers in ``lo..hi`` (from an untrusted file), or ValueError."""
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise ValueError(f"{name} must be a list of {count} integers, got {value!r}"[:300])
    if not all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value):
        raise ValueError(f"{name} must hold integers in {lo}..{hi}, got {value!r}"[:300])
    return list(value)


def validate_export(export, *, require_batch: bool = True) -> dict:
    """Check the export record an ONNX model or engine carries (it may come from an untrusted
    file): every field the runtime, the builder and the configs read, by type and range. Returns
    a copy with ``outputs`` filled in from the NMS kind where an older record lacks it.

    Raises:
        ValueError: naming the first bad field.
    """
    from retina_trt.spec import MAX_IMAGE_SIDE

    if not isinstance(export, dict):
        raise ValueError(f"the export record must be a JSON object, got {type(export).__name__}")
    export = dict(export)  # the caller's record stays as read
    if export.get("nms") not in NMS_CHOICES:
        raise ValueError(f"export.nms must be one of {NMS_CHOICES}, got {export.get('nms')!r}"[:300])
    if require_batch or "batch" in export:
        lo, opt, hi = check_ints(export.get("batch"), 3, "export.batch", 1, MAX_BATCH)
        if not lo <= opt <= hi:
            raise ValueError(f"export.batch must be ordered min <= opt <= max, got {[lo, opt, hi]}")
    if export.get("input_size") is not None:
        check_ints(export["input_size"], 2, "export.input_size", 1, MAX_IMAGE_SIDE)
    inputs = export.get("inputs", list(INPUT_NAMES))
    if inputs not in (list(INPUT_NAMES), ["images"]):
        raise ValueError(f"export.inputs must be {list(INPUT_NAMES)} or ['images'], got {inputs!r}"[:300])
    outputs = export.setdefault("outputs", list(CANDIDATE_OUTPUTS if export["nms"] == "none" else CONTRACT_OUTPUTS))
    if outputs not in (list(CONTRACT_OUTPUTS), list(CANDIDATE_OUTPUTS)):
        raise ValueError(
            f"export.outputs must be {list(CONTRACT_OUTPUTS)} or {list(CANDIDATE_OUTPUTS)}, got {outputs!r}"[:300]
        )
    if not isinstance(export.get("input_format", "uint8 BGR"), str):
        raise ValueError("export.input_format must be a string")
    if export.get("classes_dtype", "int32") not in CLASSES_DTYPES:
        raise ValueError(f"export.classes_dtype must be one of {CLASSES_DTYPES}, got {export['classes_dtype']!r}"[:300])
    return export


@dataclass(frozen=True)
class ExportInfo:
    """The typed record of an export that ONNX metadata and the engine header carry, and that
    every backend, the builder and the Triton/DeepStream configs read (instead of the raw dict).

    Attributes:
        nms: the NMS kind (``NMS_KINDS``).
        batch: (min, opt, max) batch of the export (TensorRT's profile default); None in an
            engine header's record, where the build's profile is authoritative.
        input_size: (H, W) of a fixed-size export; None: dynamic H and W.
        inputs: ``("images", "image_sizes")`` or ``("images",)`` (DeepStream-style exports).
        outputs: ``CONTRACT_OUTPUTS``, or ``CANDIDATE_OUTPUTS`` for ``nms="none"``.
        input_format: ``"uint8 BGR"`` or ``"float32 BGR"``.
        record: the whole validated record, as stored (opset, layout, versions, ...).
    """

    nms: str
    batch: tuple[int, int, int] | None
    input_size: tuple[int, int] | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_format: str
    record: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Any, *, require_batch: bool = True) -> ExportInfo:
        """Validate ``record`` (``validate_export``; ValueError naming the first bad field)."""
        record = validate_export(record, require_batch=require_batch)
        batch = record.get("batch")
        size = record.get("input_size")
        return cls(
            nms=record["nms"],
            batch=None if batch is None else (int(batch[0]), int(batch[1]), int(batch[2])),
            input_size=None if size is None else (int(size[0]), int(size[1])),
            inputs=tuple(record.get("inputs", INPUT_NAMES)),
            outputs=tuple(record["outputs"]),
            input_format=str(record.get("input_format", "uint8 BGR")),
            record=record,
        )

    def check_graph(self, inputs: dict[str, tuple[str, list]], outputs: list[str], source: str) -> None:
        """Check this record against the graph's real I/O: ``inputs`` name -> (dtype name such as
        ``"uint8"``, shape with ints for fixed and None for dynamic dims), ``outputs`` names.

        Raises:
            ValueError: what the metadata claims and what the graph has, and how to fix it.
        """

        def fail(what: str) -> None:
            raise ValueError(f"{source}: its retina_trt metadata does not match the graph ({what}); re-export it")

        if set(inputs) != set(self.inputs):
            fail(f"metadata inputs {list(self.inputs)}, graph inputs {sorted(inputs)}")
        if set(outputs) != set(self.outputs):
            fail(f"metadata outputs {list(self.outputs)} (nms={self.nms}), graph outputs {sorted(outputs)}")
        dtype, shape = inputs["images"]
        want = "float32" if self.float_input else "uint8"
        if dtype != want:
            fail(f"metadata says {self.input_format} images, the graph takes {dtype}")
        if len(shape) != 4:
            fail(f"images must be [B, H, W, 3], the graph's are {shape}")
        hw = tuple(shape[1:3])
        if self.input_size is None and any(isinstance(d, int) for d in hw):
            fail(f"metadata says dynamic HxW, the graph is fixed at {hw}")
        if self.input_size is not None and hw != self.input_size:
            fail(f"metadata says {self.input_size[0]}x{self.input_size[1]}, the graph takes {hw}")

    @property
    def float_input(self) -> bool:
        """``images`` is float32 (DeepStream-style), not uint8."""
        return self.input_format.startswith("float32")

    @property
    def has_image_sizes(self) -> bool:
        return "image_sizes" in self.inputs

    def input_dtype(self, name: str) -> type:
        """numpy dtype of input ``name``."""
        return np.float32 if name == "images" and self.float_input else TENSOR_DTYPES[name]

    def output_dtype(self, name: str) -> type | None:
        """numpy dtype of output ``name`` (float32 ``detection_classes`` in DeepStream exports);
        None for a name the contract does not know."""
        if name == "detection_classes" and self.record.get("classes_dtype") == "float32":
            return np.float32
        return TENSOR_DTYPES.get(name)
