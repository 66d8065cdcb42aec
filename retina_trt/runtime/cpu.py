"""What this CPU can do: its model name and the instruction sets that decide CPU precision.

Read from ``/proc/cpuinfo`` (Linux); elsewhere the flags are empty and only the name is known.
The benchmarks record :func:`cpu_isa` beside every figure, and the OpenVINO backend's
``precision="auto"`` uses it to pick BF16 only where the CPU runs it in hardware matrix units (AMX).
"""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path

# cpuinfo flag -> the name people use for it, in the order a summary lists them
ISA_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512-VNNI",
    "avx512_bf16": "AVX-512-BF16",
    "avx512_fp16": "AVX-512-FP16",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "amx_fp16": "AMX-FP16",
}


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    name, flags = platform.processor() or platform.machine(), frozenset()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key == "flags" and not flags:
                flags = frozenset(value.split())
    return name, flags


def cpu_name() -> str:
    return _cpuinfo()[0]


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``), empty where they cannot be read."""
    return _cpuinfo()[1]


def cpu_isa(flags: frozenset[str] | None = None) -> list[str]:
    """The precision-relevant instruction sets this CPU has, e.g. ``["AVX2", "AVX-512", "AMX-BF16"]``."""
    flags = cpu_flags() if flags is None else flags
    return [label for flag, label in ISA_FLAGS.items() if flag in flags]


def has_amx_bf16(flags: frozenset[str] | None = None) -> bool:
    return "amx_bf16" in (cpu_flags() if flags is None else flags)
