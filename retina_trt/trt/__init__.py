"""Everything that imports ``tensorrt`` (lazily, inside functions): ``builder`` (ONNX -> engine),
``runtime`` (the TensorRT backend of ``Detector``), ``compat`` (the one place that picks TensorRT
10/11 or TensorRT-RTX) and ``build_report``. The engine file format is
``retina_trt.contract.engine_file``. ``import retina_trt.trt`` works without TensorRT, and loading
an engine imports neither the builder nor ``onnx`` (names below resolve on first use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "BuildOptions": "retina_trt.trt.builder",
    "EngineBuildError": "retina_trt.trt.builder",
    "build_engine": "retina_trt.trt.builder",
    "build_plan": "retina_trt.trt.builder",
    "EngineHeader": "retina_trt.contract.engine_file",
    "EngineMismatchError": "retina_trt.contract.engine_file",
    "check_engine_compatible": "retina_trt.contract.engine_file",
    "read_engine_header": "retina_trt.contract.engine_file",
}
__all__ = [
    "BuildOptions",
    "EngineBuildError",
    "EngineHeader",
    "EngineMismatchError",
    "build_engine",
    "build_plan",
    "check_engine_compatible",
    "read_engine_header",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from retina_trt.contract.engine_file import (
        EngineHeader,
        EngineMismatchError,
        check_engine_compatible,
        read_engine_header,
    )
    from retina_trt.trt.builder import BuildOptions, EngineBuildError, build_engine, build_plan
