"""Precision preparation (``retina_trt.calibration``): calibration data, FP16 and INT8 (Q/DQ)
ONNX graphs with FP32 islands, and the cache of prepared models. See docs/engines.md."""

from .cache import PrecisionCache, default_cache_dir
from .data import (
    DEFAULT_CALIB_IMAGES,
    SYNTHETIC,
    CalibrationData,
    CalibrationDataError,
    load_calibration_data,
)
from .precision import CALIB_METHODS, PRECISIONS, PrecisionError, fp32_island_nodes
from .prepare import CalibrationConfig, PreparedModel, calibration_input_size, prepare_precision

__all__ = [
    "CALIB_METHODS",
    "DEFAULT_CALIB_IMAGES",
    "PRECISIONS",
    "SYNTHETIC",
    "CalibrationConfig",
    "CalibrationData",
    "CalibrationDataError",
    "PrecisionCache",
    "PrecisionError",
    "PreparedModel",
    "calibration_input_size",
    "default_cache_dir",
    "fp32_island_nodes",
    "load_calibration_data",
    "prepare_precision",
]
