"""Build a strongly typed TensorRT engine from a (precision-prepared) retina_trt ONNX.

The precision is already in the graph (FP16 tensors, Q/DQ pairs; ``retina_trt.calibration``), so
the builder sets no precision flags: the network is strongly typed on TensorRT 10.x and 11.x alike.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from retina_trt.errors import ExportError
from retina_trt.export.metadata import OnnxMetadata, read_metadata
from retina_trt.utils import atomic_path

from .compat import (
    HARDWARE_COMPAT,
    cuda_device,
    hardware_compat_level,
    import_tensorrt,
    make_logger,
    network_flags,
)
from .engine_file import make_header, write_engine

logger = logging.getLogger(__name__)

PLUGIN_NAMESPACE = "retina_trt"


class EngineBuildError(ExportError):
    """TensorRT could not parse the ONNX or build the engine."""


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """Engine build settings.

    Attributes:
        batch: (min, opt, max) batch of the optimization profile; None: the ONNX's export range.
        min_hw, opt_hw, max_hw: (H, W) of the profile for dynamic-shape exports (ignored for
            fixed-size exports); None: one size_divisible square, min x max size, max x max size.
        workspace_mib: builder workspace limit.
        optimization_level: TensorRT builder optimization level 0..5 (3 is TensorRT's default).
        timing_cache: file to load the timing cache from (if it exists) and save it to.
        hardware_compat: "none", "ampere_plus" or "same_cc".
        version_compatible: build an engine later TensorRT versions of the same major can run.
        verbose: TensorRT's verbose log.
    """

    batch: tuple[int, int, int] | None = None
    min_hw: tuple[int, int] | None = None
    opt_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None
    workspace_mib: int = 4096
    optimization_level: int = 3
    timing_cache: str | None = None
    hardware_compat: str = "none"
    version_compatible: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.batch is not None:
            lo, opt, hi = self.batch
            if not 1 <= lo <= opt <= hi:
                raise ValueError(f"batch must satisfy 1 <= min <= opt <= max, got {self.batch}")
        if not 0 <= self.optimization_level <= 5:
            raise ValueError(f"optimization_level must be in 0..5, got {self.optimization_level}")
        if self.workspace_mib < 1:
            raise ValueError(f"workspace_mib must be >= 1, got {self.workspace_mib}")
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise ValueError(f"hardware_compat must be one of {tuple(HARDWARE_COMPAT)}, got {self.hardware_compat!r}")


def plugin_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes that map to retina_trt's TensorRT plugin (``plugin_namespace`` = retina_trt)."""
    found = []
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "plugin_namespace" and onnx.helper.get_attribute_value(attr) in (
                PLUGIN_NAMESPACE, PLUGIN_NAMESPACE.encode()
            ):
                found.append(node)
    return found


def profile_shapes(meta: OnnxMetadata, options: BuildOptions) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of each network input: ``images`` [B, H, W, 3], ``image_sizes`` [B, 2]."""
    lo, opt, hi = options.batch or tuple(int(b) for b in meta.export["batch"])
    if meta.input_size is not None:
        hw = (meta.input_size,) * 3
    else:
        d, spec = meta.spec.size_divisible, meta.spec
        default_opt = (math.ceil(spec.min_size / d) * d, math.ceil(spec.max_size / d) * d)
        default_max = (default_opt[1], default_opt[1])
        hw = (options.min_hw or (d, d), options.opt_hw or default_opt, options.max_hw or default_max)
        for size in hw:
            if size[0] % d or size[1] % d or min(size) < d:
                raise ValueError(f"profile size {size} must be positive multiples of {d}")
        if not all(hw[0][i] <= hw[1][i] <= hw[2][i] for i in (0, 1)):
            raise ValueError(f"profile sizes must be ordered min <= opt <= max, got {hw}")
    return {
        "images": tuple((b, h, w, 3) for b, (h, w) in zip((lo, opt, hi), hw)),
        "image_sizes": tuple((b, 2) for b in (lo, opt, hi)),
    }


def build_plan(onnx_path: str | os.PathLike, options: BuildOptions) -> dict[str, Any]:
    """What a build would do (no TensorRT needed): the ``--dry-run`` plan."""
    meta = read_metadata(onnx_path)
    shapes = profile_shapes(meta, options)
    return {
        "onnx": str(onnx_path),
        "precision": meta.precision,
        "nms": meta.nms,
        "profile": {
            name: " / ".join(f"{which} {'x'.join(map(str, shape))}" for which, shape in zip(("min", "opt", "max"), s))
            for name, s in shapes.items()
        },
        "strongly_typed": True,
        **{k: v for k, v in asdict(options).items() if k not in ("batch", "min_hw", "opt_hw", "max_hw")},
    }


def _parser_errors(parser) -> str:
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node = error.node_name() or f"node #{error.node()}"
        lines.append(f"  {node} ({error.node_operator() or '?'}): {error.desc()} [{error.code()}]")
    return "\n".join(lines)


def _progress_monitor(trt):
    """A TensorRT progress monitor that shows build phases as tqdm bars."""
    from tqdm import tqdm

    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = 0 if parent_phase is None else 1
            self.bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=depth, leave=depth == 0, disable=None)

        def step_complete(self, phase_name, step):
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.n = step + 1
                bar.refresh()
            return True

        def phase_finish(self, phase_name):
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return _Progress()


def build_engine(
    onnx_path: str | os.PathLike,
    output: str | os.PathLike,
    options: BuildOptions | None = None,
) -> Path:
    """Build ``output`` (a retina_trt engine file: header + plan) from ``onnx_path``.

    Raises:
        BackendUnavailableError: no TensorRT or no GPU. EngineBuildError: parse/build failed,
        with every parser error and its node name.
    """
    options = options or BuildOptions()
    onnx_path, output = Path(onnx_path), Path(output)
    meta = read_metadata(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    plugins = plugin_nodes(model)
    shapes = profile_shapes(meta, options)
    trt = import_tensorrt()
    device_name, capability = cuda_device()
    if plugins:
        try:
            from retina_trt.plugins import register_plugin
        except ImportError as err:
            raise EngineBuildError(
                f"{onnx_path} holds retina_trt plugin nodes ({plugins[0].op_type}), and the NMS plugin cannot be "
                f"loaded ({err}): install triton (it comes with torch) or export with nms='onnx'"
            ) from err
        register_plugin()

    start = time.perf_counter()
    trt_logger = make_logger(trt, options.verbose)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(network_flags(trt, aot_plugins=bool(plugins)))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}:\n{_parser_errors(parser)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.optimization_level
    config.hardware_compatibility_level = hardware_compat_level(trt, options.hardware_compat)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    monitor = _progress_monitor(trt)  # kept referenced until the build ends
    config.progress_monitor = monitor
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    if cache_path is not None:
        data = cache_path.read_bytes() if cache_path.is_file() else b""
        timing_cache = config.create_timing_cache(data)
        if not config.set_timing_cache(timing_cache, False):
            logger.warning("timing cache %s does not match this TensorRT/GPU; starting a new one", cache_path)
            config.set_timing_cache(config.create_timing_cache(b""), True)

    logger.info("building %s engine from %s (TensorRT %s, %s)", meta.precision, onnx_path, trt.__version__, device_name)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path}; rerun with --verbose for its log")
    plan_bytes = bytes(plan)
    if cache_path is not None:
        timing_cache = config.get_timing_cache()
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(bytes(timing_cache.serialize()))

    from retina_trt.calibration.cache import file_sha256

    build = {
        **{k: v for k, v in asdict(options).items() if k not in ("min_hw", "opt_hw", "max_hw", "verbose")},
        "batch": [shape[0] for shape in shapes["image_sizes"]],
        "profile": {name: [list(s) for s in value] for name, value in shapes.items()},
        "strongly_typed": True,
        "plugins": [n.op_type for n in plugins],
    }
    header = make_header(
        spec=meta.spec,
        tensorrt_version=str(trt.__version__),
        device_name=device_name,
        compute_capability=capability,
        precision=meta.precision,
        onnx_sha256=file_sha256(onnx_path),
        export=meta.export,
        build=build,
        plan=plan_bytes,
    )
    write_engine(output, header, plan_bytes)
    logger.info("wrote %s (%.1f MB) in %.1f s", output, output.stat().st_size / 1e6, time.perf_counter() - start)
    return output

