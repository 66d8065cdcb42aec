"""The table of backends (name -> where it lives) and :func:`open_backend`, which picks one by file
type and imports only that one.

The table is explicit (no registry that modules join on import). Each entry names
the backend's module, its class and its options dataclass; ``open_backend`` imports the module
only when that backend is chosen, so running an ``.onnx`` or ``.engine`` never imports torch and
``Detector`` on an ``.onnx`` never imports TensorRT (tests/test_layers.py). The TensorRT backend
lives in ``trt/runtime.py``, the only code that imports tensorrt; the table names it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from retina_trt.contract import BACKENDS
from retina_trt.errors import BackendUnavailableError, ModelFormatError

logger = logging.getLogger(__name__)


class BackendEntry(NamedTuple):
    """Where a backend lives: ``module.cls``, configured by ``module.options``."""

    module: str
    cls: str
    options: str


BACKEND_TABLE: dict[str, BackendEntry] = {
    "onnxruntime": BackendEntry("retina_trt.runtime.onnxruntime_backend", "OnnxRuntimeBackend", "OnnxRuntimeOptions"),
    "openvino": BackendEntry("retina_trt.runtime.openvino_backend", "OpenVinoBackend", "OpenVinoOptions"),
    "torch": BackendEntry("retina_trt.runtime.torch_backend", "TorchBackend", "TorchOptions"),
    "tensorrt": BackendEntry("retina_trt.trt.runtime", "TensorRTBackend", "TensorRTOptions"),
    "triton": BackendEntry("retina_trt.runtime.triton_backend", "TritonBackend", "TritonOptions"),
}
BACKEND_BY_SUFFIX = {".onnx": "onnxruntime", ".pt": "torch", ".pth": "torch", ".engine": "tensorrt"}


def is_server_url(model) -> bool:
    """True for a model on a Triton server: ``grpc://HOST:PORT/NAME`` or ``http://...``."""
    text = str(model) if isinstance(model, str) else ""
    return "://" in text and text.split("://", 1)[0].lower() in ("grpc", "http")


def options_backend(options) -> str | None:
    """The table's name of the backend an options object belongs to (None: not an options object)."""
    kind = type(options)
    for name, entry in BACKEND_TABLE.items():
        if kind.__module__ == entry.module and kind.__name__ == entry.options:
            return name
    return None


def open_backend(
    path: str | os.PathLike,
    backend: str = "auto",
    *,
    options: Sequence[Any] = (),
    legacy: Mapping[str, Any] | None = None,
):
    """Open the backend for ``path`` (``auto``: by file type, or a Triton URL).

    ``auto`` runs an ``.onnx`` with OpenVINO where it is installed (the fastest CPU route) unless
    ONNX Runtime options (``providers``, ``session_config``) ask for ONNX Runtime; a model OpenVINO
    cannot run, or a machine without it, falls back to ONNX Runtime, and the log says so.

    Args:
        options: options objects (``OpenVinoOptions(...)``, ...); the one of the backend that runs
            is used, the others are ignored.
        legacy: keyword options by name (``precision``, ``num_threads``, ...); each backend takes
            the fields its options dataclass has, over the fields of ``options``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    chosen = dict(legacy or {})
    given = {options_backend(o): o for o in options}
    if backend == "triton" or (backend == "auto" and is_server_url(path)):
        if not is_server_url(path):
            raise ValueError(f"backend='triton' takes a model URL grpc://HOST:PORT/MODEL or http://...; got {path}")
        return _open("triton", str(path), given, chosen)
    path = Path(path)
    if backend == "auto":
        backend = BACKEND_BY_SUFFIX.get(path.suffix.lower(), "")
        if not backend:
            raise ModelFormatError(
                f"cannot tell the model type of {path}: expected .onnx (OpenVINO / ONNX Runtime), .pt/.pth "
                "(PyTorch checkpoint) or .engine (TensorRT); pass backend=... to force one"
            )
        if backend == "onnxruntime" and not _asks_for_onnxruntime(given, chosen):
            return _auto_onnx(path, given, chosen)
    return _open(backend, path, given, chosen)


def _asks_for_onnxruntime(given: dict, legacy: dict) -> bool:
    ort = given.get("onnxruntime")
    fields = (ort.providers or ort.session_config) if ort is not None else None
    return bool(fields or legacy.get("providers") or legacy.get("session_config"))


def _open(name: str, path, given: dict, legacy: dict):
    """Import backend ``name`` and open ``path`` with its options."""
    entry = BACKEND_TABLE[name]
    module = importlib.import_module(entry.module)
    options_cls = getattr(module, entry.options)
    options = given.get(name) or options_cls()
    fields = {f.name for f in dataclasses.fields(options_cls)}
    overrides = {k: v for k, v in legacy.items() if k in fields and v is not None}
    options = dataclasses.replace(options, **overrides) if overrides else options
    return getattr(module, entry.cls)(path, **{f: getattr(options, f) for f in fields})


def _auto_onnx(path: Path, given: dict, legacy: dict):
    """OpenVINO where it is installed and can run ``path``, else ONNX Runtime (logged)."""
    if importlib.util.find_spec("openvino") is None:
        logger.info(
            "OpenVINO is not installed, so ONNX Runtime runs %s (the faster CPU route: "
            'pip install "retina-trt[openvino]")',
            path.name,
        )
        return _open("onnxruntime", path, given, legacy)
    try:
        chosen = _open("openvino", path, given, legacy)
    except ValueError:  # a precision this CPU lacks: the user's to fix, not to hide
        raise
    except (BackendUnavailableError, ModelFormatError) as err:
        logger.info("OpenVINO cannot run %s (%s); ONNX Runtime runs it", path.name, err)
        return _open("onnxruntime", path, given, legacy)
    logger.debug("backend auto: OpenVINO runs %s in %s", path.name, chosen.precision)
    return chosen
