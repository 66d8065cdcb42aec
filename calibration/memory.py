"""How many images an INT8 calibration batch may hold on this machine.

Model Optimizer calibrates through ONNX Runtime with every intermediate tensor made an output, so
its peak memory grows with the batch, not with the number of images (measured figures:
docs/engines.md). The estimate here is the sum of the network's float tensors for one image at the
calibration size (ONNX shape inference), times ``OVERHEAD``, plus ``MODEL_COPIES`` times the model
file and twice the calibration images (held as uint8 feeds); the batch is the largest up to the
asked one whose estimate fits in ``BUDGET`` of the memory available now (``MemAvailable``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx

from retina_trt.utils import available_bytes

from .precision import PrecisionError

logger = logging.getLogger(__name__)

# peak growth per image of batch over the shape-inferred tensor sum, above both measured ratios
# (docs/engines.md#calibration-memory)
OVERHEAD = 2.0
MODEL_COPIES = 3  # the loaded proto, the augmented model, ONNX Runtime's session
BUDGET = 0.7  # of the available memory
MAX_AUTO_BATCH = 8
_FLOAT_BYTES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.INT64: 8}


def activation_bytes(onnx_path: str | os.PathLike, input_size: tuple[int, int]) -> int:
    """Bytes of the network's intermediate tensors for one image of ``input_size`` (H, W), from
    ONNX shape inference with the batch and size fixed (tensors of unknown shape count 0)."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        fixed = [1, *input_size, 3] if value.name == "images" else [1, 2]
        for dim, size in zip(dims, fixed):
            dim.ClearField("dim_param")
            dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    total = 0
    for value in inferred.graph.value_info:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            total += int(np.prod(dims)) * _FLOAT_BYTES.get(value.type.tensor_type.elem_type, 1)
    return total


def calibration_batch(
    onnx_path: str | os.PathLike, input_size: tuple[int, int], asked: int | None, num_images: int = 1
) -> int:
    """The calibration batch for ``onnx_path`` at ``input_size`` over ``num_images`` images:
    ``asked`` (None: up to ``MAX_AUTO_BATCH``) lowered to what fits here; PrecisionError, before
    any work, when not even one image fits."""
    per_image = OVERHEAD * activation_bytes(onnx_path, input_size)
    base = MODEL_COPIES * Path(onnx_path).stat().st_size + 2 * num_images * input_size[0] * input_size[1] * 3
    budget = BUDGET * available_bytes()
    fits = int((budget - base) // per_image) if per_image else MAX_AUTO_BATCH
    gb = 1e9
    if fits < 1:
        raise PrecisionError(
            f"INT8 calibration of {Path(onnx_path).name} at {input_size[0]}x{input_size[1]} needs about "
            f"{(base + per_image) / gb:.1f} GB for one image and {available_bytes() / gb:.1f} GB are available; "
            "calibrate a smaller fixed input size (export with a smaller `input_size`), or on a machine with "
            "more memory"
        )
    batch = min(asked or MAX_AUTO_BATCH, fits)
    if asked and batch < asked:
        logger.warning(
            "calibration batch %d lowered to %d: about %.1f GB per image, %.1f GB available",
            asked,
            batch,
            per_image / gb,
            available_bytes() / gb,
        )
    logger.info(
        "calibration batch %d (about %.1f GB per image + %.1f GB; %.1f GB available)",
        batch,
        per_image / gb,
        base / gb,
        available_bytes() / gb,
    )
    return batch
