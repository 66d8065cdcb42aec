"""Everything that imports ``tensorrt`` (lazily, inside functions): the engine builder, the engine
file format and the runtime backend. ``import retina_trt.trt`` works without TensorRT."""

from .builder import BuildOptions, EngineBuildError, build_engine, build_plan
from .engine_file import (
    EngineHeader,
    EngineMismatchError,
    check_engine_compatible,
    read_engine_header,
)

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
