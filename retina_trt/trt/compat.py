"""The TensorRT import and everything that differs between TensorRT 10.x and 11.x.

Version-dependent names are reached only through ``getattr(..., "NAME", None)`` with a literal
name: the API-conformance tests (tests/test_trt_conformance.py) check every other TensorRT name
this package uses against the real 10.x and 11.x bindings, and these gated ones against at
least one of them. Enum members are looked up by name, never stored as integers (their values
changed in 11).
"""

from __future__ import annotations

import logging
from types import ModuleType

from retina_trt.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

HARDWARE_COMPAT = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_cc": "SAME_COMPUTE_CAPABILITY"}
INSTALL_HINT = (
    "pip install 'retina-trt[trt]' on a machine with an NVIDIA GPU and driver; without TensorRT, "
    "run the ONNX model with ONNX Runtime instead (retina-trt detect model.onnx ...)"
)


def import_tensorrt() -> ModuleType:
    """``import tensorrt``, or :class:`BackendUnavailableError` saying how to get it."""
    try:
        import tensorrt
    except ImportError as err:
        raise BackendUnavailableError(f"TensorRT is not installed ({err}): {INSTALL_HINT}") from err
    except OSError as err:  # the bindings import but libnvinfer cannot be loaded
        raise BackendUnavailableError(f"TensorRT's libraries cannot be loaded ({err}): {INSTALL_HINT}") from err
    return tensorrt


def trt_major(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


def network_flags(trt: ModuleType, *, aot_plugins: bool = False) -> int:
    """Network creation flags: strongly typed (an explicit flag on 10.x, the only mode on 11.x),
    and AOT Python plugins preferred when the graph holds the retina_trt NMS plugin."""
    flags = 0
    if trt_major(trt) < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if aot_plugins:
        flag = getattr(trt.NetworkDefinitionCreationFlag, "PREFER_AOT_PYTHON_PLUGINS", None)
        if flag is None:
            raise BackendUnavailableError(
                f"TensorRT {trt.__version__} has no AOT Python plugins (10.9 or later needed for the NMS plugin)"
            )
        flags |= 1 << int(flag)
    return flags


def hardware_compat_level(trt: ModuleType, name: str):
    """The ``HardwareCompatibilityLevel`` member for ``none``, ``ampere_plus`` or ``same_cc``."""
    if name not in HARDWARE_COMPAT:
        raise ValueError(f"hardware_compat must be one of {tuple(HARDWARE_COMPAT)}, got {name!r}")
    member = getattr(trt.HardwareCompatibilityLevel, HARDWARE_COMPAT[name], None)
    if member is None:
        raise BackendUnavailableError(f"TensorRT {trt.__version__} does not offer hardware compatibility {name!r}")
    return member


def severity_level(trt: ModuleType, severity) -> int:
    """Python logging level for a TensorRT logger severity."""
    s = trt.ILogger.Severity
    return {
        s.INTERNAL_ERROR: logging.CRITICAL,
        s.ERROR: logging.ERROR,
        s.WARNING: logging.WARNING,
        s.INFO: logging.INFO,
        s.VERBOSE: logging.DEBUG,
    }.get(severity, logging.INFO)


def make_logger(trt: ModuleType, verbose: bool = False):
    """A TensorRT logger that forwards to Python logging (``retina_trt.trt.tensorrt``)."""
    target = logging.getLogger("retina_trt.trt.tensorrt")
    threshold = logging.DEBUG if verbose else logging.WARNING

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            level = severity_level(trt, severity)
            if level >= threshold:
                target.log(level, "%s", msg)

    return _Logger()


def cuda_device() -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of the current CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(f"no CUDA GPU is visible; TensorRT engines need one. {INSTALL_HINT}")
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), (int(major), int(minor))
