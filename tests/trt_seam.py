"""A recording seam over the real TensorRT and CUDA Python bindings, for call-sequence tests.

The builder's and runtime's own functions run against the real bindings (TensorRT 10.x / 11.x over
stub native libraries, tests/trt_bindings.py; or the real TensorRT-RTX). The seam only *watches*:

* ``watch(module, names, log)`` replaces named functions/classes of the real module by wrappers
  that append ``(name, args)`` to ``log`` and then call the real thing, so its behaviour (and its
  failure where a stub library or a missing GPU stops it) is the binding's own;
* ``Watched(obj, label, log)`` wraps a real binding object the same way: method calls and
  attribute assignments are logged, then done on the real object;
* ``skip_calls(module, names, log)`` is the one exception: CUDA calls that need a GPU driver (here
  ``cudaSetDevice``) are logged and not made; they return the real binding's ``cudaSuccess``, so
  the load path goes on to TensorRT, whose own calls then run for real.

Nothing here returns a TensorRT object or result of our own making.
"""

from __future__ import annotations

import functools
from typing import Any


def _short(value: Any) -> Any:
    """A JSON-friendly trace of an argument."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    return type(value).__name__


def watch(module: Any, names: list[str], log: list) -> Any:
    """Wrap ``module.<name>`` for each name; returns a function that restores the originals."""
    originals = {name: getattr(module, name) for name in names}

    def wrapper(name, real):
        @functools.wraps(real)
        def call(*args, **kwargs):
            log.append([name, [_short(a) for a in args]])
            return real(*args, **kwargs)

        return call

    for name, real in originals.items():
        setattr(module, name, wrapper(name, real))

    def restore() -> None:
        for name, real in originals.items():
            setattr(module, name, real)

    return restore


class Watched:
    """A real binding object whose method calls and attribute assignments are logged."""

    def __init__(self, real: Any, label: str, log: list) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_log", log)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._real, name)
        if not callable(value):
            return value
        label, log = self._label, self._log

        def call(*args, **kwargs):
            log.append([f"{label}.{name}", [_short(a) for a in args]])
            return value(*args, **kwargs)

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        self._log.append([f"{self._label}.{name}=", [_short(value)]])
        setattr(self._real, name, value)


def skip_calls(module: Any, names: list[str], log: list) -> Any:
    """A view of the real CUDA runtime module in which ``names`` are logged and not made (they
    need a GPU driver); every other attribute is the real one."""

    class View:
        def __getattr__(self, name: str) -> Any:
            real = getattr(module, name)
            if name not in names:
                return real

            def call(*args, **kwargs):
                log.append([name, [_short(a) for a in args]])
                return (module.cudaError_t.cudaSuccess,)

            return call

    return View()


def first(log: list, name: str) -> int:
    """Index of the first call named ``name`` in ``log`` (-1: never made)."""
    return next((i for i, (called, _) in enumerate(log) if called == name), -1)
