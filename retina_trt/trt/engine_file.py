"""Moved to :mod:`retina_trt.contract.engine_file` (this name works for one more release)."""

from retina_trt.contract.engine_file import (  # noqa: F401
    MAGIC,
    EngineHeader,
    EngineMismatchError,
    check_engine_compatible,
    make_header,
    read_engine_header,
    read_plan,
    rebuild_hint,
    write_engine,
)
