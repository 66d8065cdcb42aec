"""Moved to :mod:`retina_trt.contract.onnx_metadata` (this name works for one more release)."""

from retina_trt.contract.onnx_metadata import (  # noqa: F401
    EXPORT_KEY,
    FORMAT,
    FORMAT_KEY,
    PRECISION_KEY,
    SPEC_KEY,
    OnnxMetadata,
    parse_metadata,
    read_metadata,
    write_metadata,
    write_precision_metadata,
)
