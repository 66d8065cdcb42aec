"""The TensorRT import and everything that differs between TensorRT 10.x and 11.x.

Version-dependent names are reached only through ``getattr(..., "NAME", None)`` with a literal
name: the API-conformance tests (tests/test_trt_conformance.py) check every other TensorRT name
this package uses against the real 10.x and 11.x bindings, and these gated ones against at
least one of them. Enum members are looked up by name, never stored as integers (their values
changed in 11).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from types import ModuleType

from retina_trt.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

HARDWARE_COMPAT = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_cc": "SAME_COMPUTE_CAPABILITY"}
FLAVOURS = ("tensorrt", "tensorrt_rtx")
FLAVOUR_ENV = "RETINA_TRT_TENSORRT"
# Compute capabilities TensorRT-RTX builds for when none are named (its documentation: 8.0, 8.6,
# 8.9, 12.0 and later), and the ones it can be asked for (its ComputeCapability enum).
RTX_DEFAULT_TARGETS = ((8, 0), (8, 6), (8, 9), (12, 0), (12, 1))
RTX_TARGETS = ((7, 5), (8, 0), (8, 6), (8, 9), (12, 0), (12, 1))
INSTALL_HINT = (
    "pip install 'retina-trt[trt-cu12]' or 'retina-trt[trt-cu13]' (TensorRT 10/11: data-centre GPUs, "
    "Jetson) or 'retina-trt[trt-rtx]' (TensorRT for RTX: builds without a GPU, runs on RTX / Ampere+ "
    "GPUs); without TensorRT, run the ONNX model with ONNX Runtime (retina-trt detect model.onnx ...)"
)
FLAVOUR_NAMES = {"tensorrt": "TensorRT", "tensorrt_rtx": "TensorRT-RTX"}


def installed_flavour() -> str:
    """The TensorRT flavour a build would use (``$RETINA_TRT_TENSORRT``, else the one installed,
    TensorRT first), found without importing it (for --dry-run plans and defaults)."""
    wanted = os.environ.get(FLAVOUR_ENV, "auto")
    if wanted in FLAVOURS:
        return wanted
    if importlib.util.find_spec("tensorrt") is None and importlib.util.find_spec("tensorrt_rtx") is not None:
        return "tensorrt_rtx"
    return "tensorrt"


def _import_flavour(flavour: str) -> ModuleType:
    if flavour == "tensorrt_rtx":
        import tensorrt_rtx as module
    else:
        import tensorrt as module
    return module


def import_tensorrt(flavour: str | None = None) -> ModuleType:
    """The TensorRT Python module of ``flavour``, or :class:`BackendUnavailableError` saying how to
    get it.

    Args:
        flavour: ``"tensorrt"`` (TensorRT 10.x/11.x), ``"tensorrt_rtx"`` (TensorRT for RTX) or
            None: ``$RETINA_TRT_TENSORRT`` if set, else whichever is installed, TensorRT first.
    """
    wanted = flavour or os.environ.get(FLAVOUR_ENV) or "auto"
    if wanted not in (*FLAVOURS, "auto"):
        source = "flavour" if flavour else f"${FLAVOUR_ENV}"
        raise ValueError(f"{source} must be one of {FLAVOURS} or 'auto', got {wanted!r}")
    errors = []
    for candidate in FLAVOURS if wanted == "auto" else (wanted,):
        try:
            return _import_flavour(candidate)
        except ImportError as err:
            errors.append(f"{candidate}: not installed ({err})")
        except OSError as err:  # the bindings import but the native library cannot be loaded
            errors.append(f"{candidate}: its libraries cannot be loaded ({err})")
    raise BackendUnavailableError(f"no usable TensorRT ({'; '.join(errors)}): {INSTALL_HINT}")


def flavour_of(trt: ModuleType) -> str:
    """``"tensorrt_rtx"`` for TensorRT for RTX, ``"tensorrt"`` for TensorRT 10.x/11.x."""
    return "tensorrt_rtx" if str(getattr(trt, "__name__", "")).startswith("tensorrt_rtx") else "tensorrt"


def trt_major(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


def network_flags(trt: ModuleType, *, aot_plugins: bool = False) -> int:
    """Network creation flags: strongly typed (an explicit flag on 10.x and TensorRT-RTX, the only
    mode on 11.x), and AOT Python plugins preferred when the graph holds the retina_trt NMS plugin."""
    flags = 0
    rtx = flavour_of(trt) == "tensorrt_rtx"
    if rtx or trt_major(trt) < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if aot_plugins:
        flag = getattr(trt.NetworkDefinitionCreationFlag, "PREFER_AOT_PYTHON_PLUGINS", None)
        if flag is None:
            raise BackendUnavailableError(
                f"{FLAVOUR_NAMES[flavour_of(trt)]} {trt.__version__} has no AOT Python plugins, which the "
                "retina_trt NMS plugin needs (TensorRT 10.9 or later); export with nms='graph' instead"
            )
        flags |= 1 << int(flag)
    return flags


def rtx_compute_capability(trt: ModuleType, capability: tuple[int, int]):
    """The ``ComputeCapability`` member (TensorRT-RTX) for (major, minor), e.g. SM86 for (8, 6)."""
    if tuple(capability) not in RTX_TARGETS:
        raise ValueError(
            f"TensorRT-RTX builds for compute capabilities {', '.join(f'{a}.{b}' for a, b in RTX_TARGETS)}; "
            f"got {capability[0]}.{capability[1]}"
        )
    members = getattr(trt, "ComputeCapability", None)  # TensorRT-RTX only
    if members is None:
        raise BackendUnavailableError(
            f"TensorRT {trt.__version__} has no compute capability targets (TensorRT-RTX has)"
        )
    return getattr(members, f"SM{capability[0]}{capability[1]}")


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


def make_logger(trt: ModuleType, verbose: bool = False, capture: list[str] | None = None):
    """A TensorRT logger that forwards to Python logging (``retina_trt.trt.tensorrt``).

    ``capture``: a list that receives the builder's per-layer report (the message starting with
    ``Layers:``, logged at VERBOSE with ``ProfilingVerbosity.DETAILED``) whatever the level."""
    target = logging.getLogger("retina_trt.trt.tensorrt")
    threshold = logging.DEBUG if verbose else logging.WARNING

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if capture is not None and msg.startswith("Layers:"):
                capture.append(msg)
            level = severity_level(trt, severity)
            if level >= threshold:
                target.log(level, "%s", msg)

    return _Logger()


def import_cudart():
    """``cuda.bindings.runtime`` (cuda-python 12.6+), or the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as err:
            raise BackendUnavailableError(
                "the TensorRT backend needs NVIDIA's CUDA Python binding: pip install 'retina-trt[trt-cu12]' (or "
                "[trt-cu13], [trt-rtx]: they bring cuda-python)"
            ) from err
    return cudart


NO_GPU_TO_BUILD = (
    "no CUDA GPU is visible: TensorRT 10/11 needs one to build engines; build with TensorRT-RTX "
    "(flavour='tensorrt_rtx'), which needs no GPU, or run the ONNX model on the CPU (OpenVINO or ONNX Runtime)"
)
NO_GPU_TO_RUN = (
    "no CUDA GPU is visible: running a TensorRT engine needs one, whichever TensorRT built it (TensorRT-RTX "
    "included); here, run the ONNX model the engine was built from on the CPU (OpenVINO or ONNX Runtime), "
    "or copy the engine to a machine with one of its target GPUs"
)


def cuda_device(index: int | None = None, *, to_build: bool = False) -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of CUDA device ``index`` (default: the current one), from the
    CUDA runtime (cuda-python; torch only where cuda-python is missing). Without a GPU, the error
    says what to do for building (``to_build``) or for running."""
    no_gpu = BackendUnavailableError(NO_GPU_TO_BUILD if to_build else NO_GPU_TO_RUN)
    try:
        cudart = import_cudart()
    except BackendUnavailableError:
        try:
            import torch
        except ImportError:
            raise no_gpu from None
        if not torch.cuda.is_available():
            raise no_gpu from None
        index = torch.cuda.current_device() if index is None else int(index)
        major, minor = torch.cuda.get_device_capability(index)
        return torch.cuda.get_device_name(index), (int(major), int(minor))
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        raise no_gpu
    if index is None:
        err, index = cudart.cudaGetDevice()
    elif not 0 <= int(index) < count:
        raise BackendUnavailableError(f"CUDA device {index} does not exist: this machine has {count} (0..{count - 1})")
    err, prop = cudart.cudaGetDeviceProperties(int(index))
    if int(err) != 0:
        raise no_gpu
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return name.rstrip("\x00"), (int(prop.major), int(prop.minor))
