"""Build a strongly typed TensorRT engine from a (precision-prepared) retina_trt ONNX.

The precision is already in the graph (FP16 tensors, Q/DQ pairs; ``retina_trt.calibration``), so
the builder sets no precision flags: the network is strongly typed on TensorRT 10.x, 11.x and
TensorRT-RTX alike. Either flavour builds (``compat.import_tensorrt``): TensorRT 10/11 on the GPU
it targets, TensorRT-RTX on any machine, GPU or not ("CPU-only AOT"), for a list of compute
capabilities. The builder's own report of the layers (``ProfilingVerbosity.DETAILED``) gives the
precision every layer runs in; it goes into the engine header and is checked (build_report.py).
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

from retina_trt.contract import DEFAULT_NMS_BY_FLAVOUR, NMS_BY_FLAVOUR
from retina_trt.contract.engine_file import make_header, write_engine
from retina_trt.contract.onnx_metadata import OnnxMetadata, read_metadata
from retina_trt.errors import EngineBuildError
from retina_trt.utils import atomic_path, check_output_file, refuse_overlap

from .build_report import format_summary, parse_layers, precision_problems, summarize
from .compat import (
    FLAVOUR_NAMES,
    FLAVOURS,
    HARDWARE_COMPAT,
    RTX_DEFAULT_TARGETS,
    RTX_TARGETS,
    cuda_device,
    flavour_of,
    hardware_compat_level,
    import_tensorrt,
    installed_flavour,
    make_logger,
    network_flags,
    rtx_compute_capability,
)

logger = logging.getLogger(__name__)

PLUGIN_NAMESPACE = "retina_trt"


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
        flavour: ``"tensorrt"`` (10.x/11.x), ``"tensorrt_rtx"`` or None (``$RETINA_TRT_TENSORRT``,
            else whichever is installed, TensorRT first).
        compute_capabilities: TensorRT-RTX targets as (major, minor); empty: its defaults
            (8.0, 8.6, 8.9, 12.0, 12.1). TensorRT 10/11 builds for the GPU at hand.
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
    flavour: str | None = None
    compute_capabilities: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.flavour is not None and self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS} or None, got {self.flavour!r}")
        for cc in self.compute_capabilities:
            if tuple(cc) not in RTX_TARGETS:
                targets = ", ".join(f"{a}.{b}" for a, b in RTX_TARGETS)
                raise ValueError(f"compute capability {cc} is not a TensorRT-RTX target ({targets})")
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
                PLUGIN_NAMESPACE,
                PLUGIN_NAMESPACE.encode(),
            ):
                found.append(node)
    return found


def profile_shapes(meta: OnnxMetadata, options: BuildOptions) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of each network input: ``images`` [B, H, W, 3], ``image_sizes`` [B, 2]."""
    lo, opt, hi = options.batch or meta.info.batch
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
    shapes = {"images": tuple((b, h, w, 3) for b, (h, w) in zip((lo, opt, hi), hw))}
    if meta.info.has_image_sizes:  # single-input (DeepStream-style) exports have none
        shapes["image_sizes"] = tuple((b, 2) for b in (lo, opt, hi))
    return shapes


def build_plan(onnx_path: str | os.PathLike, options: BuildOptions, flavour: str | None = None) -> dict[str, Any]:
    """What a build would do (no TensorRT needed): the ``--dry-run`` plan, as it will be used.

    Args:
        flavour: the TensorRT that will build (``options.flavour`` if given, else the one
            installed, as ``compat.installed_flavour`` finds it without importing it).
    """
    meta = read_metadata(onnx_path)
    shapes = profile_shapes(meta, options)
    flavour = flavour or options.flavour or installed_flavour()
    return {
        "onnx": str(onnx_path),
        "precision": meta.precision,
        "nms": meta.nms,
        "profile": {
            name: " / ".join(f"{which} {'x'.join(map(str, shape))}" for which, shape in zip(("min", "opt", "max"), s))
            for name, s in shapes.items()
        },
        "strongly_typed": True,
        "tensorrt": FLAVOUR_NAMES[flavour] + ("" if options.flavour else " (the one installed)"),
        "targets": _planned_targets(flavour, options),
        "workspace_mib": options.workspace_mib,
        "optimization_level": options.optimization_level,
        **_planned_compatibility(flavour, options),
    }


def _planned_targets(flavour: str, options: BuildOptions) -> str:
    if flavour == "tensorrt":
        return "the GPU the build runs on (TensorRT 10/11 builds for the GPU at hand)"
    ccs = ", ".join(f"{a}.{b}" for a, b in (options.compute_capabilities or RTX_DEFAULT_TARGETS))
    return ccs + ("" if options.compute_capabilities else " (TensorRT-RTX's defaults)")


def _planned_compatibility(flavour: str, options: BuildOptions) -> dict[str, Any]:
    """Timing cache and hardware/version compatibility as the build will use them."""
    if flavour == "tensorrt_rtx":
        asked = [
            f"--{n}"
            for n, on in (
                ("timing-cache", options.timing_cache),
                ("version-compat", options.version_compatible),
                ("hardware-compat", options.hardware_compat != "none"),
            )
            if on
        ]
        note = "not used: TensorRT-RTX has no timing cache and no compatibility modes; its engines run on their targets"
        return {"timing_cache / compatibility": note + (f" ({', '.join(asked)} ignored)" if asked else "")}
    if options.timing_cache:
        cache = Path(options.timing_cache)
        cache_text = f"{cache} ({'loaded, then updated' if cache.is_file() else 'created by the build'})"
    else:
        cache_text = "none (--timing-cache F keeps one across builds)"
    return {
        "timing_cache": cache_text,
        "hardware_compat": options.hardware_compat,
        "version_compatible": options.version_compatible,
    }


def check_nms_buildable(nms: str, flavour: str, what: str | os.PathLike) -> None:
    """Refuse an NMS kind this TensorRT flavour cannot build, naming the alternative.

    Args:
        what: the export file, or the flag, that asks for ``nms`` (for the message).
    """
    if nms not in NMS_BY_FLAVOUR[flavour]:
        raise EngineBuildError(
            f"{what} (nms={nms!r}): {FLAVOUR_NAMES[flavour]} cannot build it (it builds "
            f"{', '.join(NMS_BY_FLAVOUR[flavour])}); export with nms={DEFAULT_NMS_BY_FLAVOUR[flavour]!r}"
        )


def _parser_errors(parser) -> str:
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node = error.node_name() or f"node #{error.node()}"
        lines.append(f"  {node} ({error.node_operator() or '?'}): {error.desc()} [{error.code()}]")
    return "\n".join(lines)


def network_io(network) -> dict[str, list[dict[str, Any]]]:
    """The parsed network's inputs and outputs as TensorRT sees them: name, dtype, shape (-1:
    dynamic)."""

    def describe(tensor) -> dict[str, Any]:
        return {
            "name": tensor.name,
            "dtype": str(tensor.dtype).rsplit(".", 1)[-1],
            "shape": [int(d) for d in tensor.shape],
        }

    return {
        "inputs": [describe(network.get_input(i)) for i in range(network.num_inputs)],
        "outputs": [describe(network.get_output(i)) for i in range(network.num_outputs)],
    }


def _progress_monitor(trt):
    """A TensorRT progress monitor that shows build phases as tqdm bars."""
    from tqdm import tqdm

    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = 0 if parent_phase is None else 1
            self.bars[phase_name] = tqdm(
                total=num_steps, desc=phase_name, position=depth, leave=depth == 0, disable=None
            )

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


def parse_errors(onnx_path: str | os.PathLike, flavour: str | None = None) -> list[str]:
    """Parse ``onnx_path`` with TensorRT's real ONNX parser (no build, no GPU); its errors, one
    line each with the node (empty: it parses). TensorRT 10/11 registers its plugins first."""
    trt = import_tensorrt(flavour)
    trt_logger = make_logger(trt)
    if flavour_of(trt) == "tensorrt":
        model = onnx.load(str(onnx_path), load_external_data=False)
        _register_plugins(trt, trt_logger, plugin_nodes(model), Path(onnx_path))
    builder = trt.Builder(trt_logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, trt_logger)
    if parser.parse_from_file(str(onnx_path)):
        return []
    return _parser_errors(parser).splitlines() or ["the parser failed without an error message"]


def build_network_seconds(
    onnx_path: str | os.PathLike, shapes: dict[str, tuple[tuple[int, ...], ...]], *, flavour: str | None = None
) -> float:
    """Parse and build any ONNX (no retina_trt metadata needed: benchmarks of graph parts) with
    one profile of (min, opt, max) ``shapes`` per input; the build's seconds.

    Raises:
        BackendUnavailableError: no such TensorRT. EngineBuildError: parse or build failed.
    """
    trt = import_tensorrt(flavour)
    trt_logger = make_logger(trt)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}:\n{_parser_errors(parser)}")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    start = time.perf_counter()
    if builder.build_serialized_network(network, config) is None:
        raise EngineBuildError(f"TensorRT failed to build {onnx_path}")
    return time.perf_counter() - start


def _register_plugins(
    trt, trt_logger, plugins: list[onnx.NodeProto], onnx_path: Path, hardware_compat: str = "none"
) -> None:
    """TensorRT 10/11: put the plugin creators the ONNX parser looks up into the registry, and
    choose the PTX the plugin's AOT kernels will embed (plugins/aot.py)."""
    trt.init_libnvinfer_plugins(trt_logger, "")  # TensorRT's own plugins (EfficientNMS_TRT)
    if any(node.op_type.startswith("RetinaNMS") for node in plugins):
        try:
            from retina_trt.plugins.registration import register_plugin
        except ImportError as err:
            raise EngineBuildError(
                f"{onnx_path} holds retina_trt plugin nodes ({plugins[0].op_type}), and the NMS plugin cannot be "
                f"loaded ({err}): install triton (it comes with torch) or export with nms='graph'"
            ) from err
        register_plugin(lazy=False)  # lazily registered plugins are not in the registry the parser reads
        from retina_trt.plugins.registration import configure_ptx

        configure_ptx(hardware_compat=hardware_compat)


def _embedded_ptx(plugins: list[onnx.NodeProto]) -> list[dict[str, Any]]:
    """What the retina_trt plugin's AOT kernels embedded in this build (target, PTX ISA, params)."""
    if not any(node.op_type.startswith("RetinaNMS") for node in plugins):
        return []
    from retina_trt.plugins.registration import embedded_ptx

    return list(embedded_ptx)


def _set_rtx_targets(config, targets: tuple[tuple[int, int], ...], trt) -> None:
    """TensorRT-RTX: build for exactly ``targets``. These IBuilderConfig members exist only in
    TensorRT-RTX (not in the 10/11 bindings the conformance scan reads); the real TensorRT-RTX
    builds in the tests run them."""
    setattr(config, "num_compute_capabilities", len(targets))  # noqa: B010
    setter = getattr(config, "set_compute_capability")  # noqa: B009
    for index, cc in enumerate(targets):
        setter(rtx_compute_capability(trt, cc), index)


def _targets(
    flavour: str, options: BuildOptions
) -> tuple[str | None, tuple[int, int] | None, tuple[tuple[int, int], ...]]:
    """(build GPU name, its compute capability, the engine's targets): TensorRT-RTX builds for
    ``options.compute_capabilities`` without a GPU; TensorRT 10/11 for the GPU at hand."""
    if flavour == "tensorrt_rtx":
        return None, None, tuple(options.compute_capabilities) or RTX_DEFAULT_TARGETS
    if options.compute_capabilities:
        raise ValueError("compute_capabilities are TensorRT-RTX targets; TensorRT 10/11 builds for the GPU at hand")
    device_name, capability = cuda_device(to_build=True)
    return device_name, capability, (capability,)


def _configure(trt, builder, flavour: str, options: BuildOptions, targets, shapes) -> tuple[Any, Any, Path | None]:
    """The builder config: workspace, optimization level, the per-layer report, targets or
    compatibility, progress bars, the optimization profile, the timing cache. Returns (config,
    progress monitor (keep it referenced until the build ends), timing cache path or None)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the per-layer report
    if flavour == "tensorrt_rtx":
        _set_rtx_targets(config, targets, trt)
        if options.hardware_compat != "none" or options.version_compatible or options.timing_cache:
            logger.warning("TensorRT-RTX ignores hardware/version compatibility and timing caches; not set")
    else:
        config.hardware_compatibility_level = hardware_compat_level(trt, options.hardware_compat)
        if options.version_compatible:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    monitor = _progress_monitor(trt)
    config.progress_monitor = monitor
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_path = Path(options.timing_cache) if options.timing_cache and flavour == "tensorrt" else None
    if cache_path is not None:
        data = cache_path.read_bytes() if cache_path.is_file() else b""
        timing_cache = config.create_timing_cache(data)
        if not config.set_timing_cache(timing_cache, False):
            logger.warning("timing cache %s does not match this TensorRT/GPU; starting a new one", cache_path)
            config.set_timing_cache(config.create_timing_cache(b""), True)
    return config, monitor, cache_path


def _layer_report(report: list[str], precision: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The per-layer precision summary of TensorRT's own build log, and its precision problems."""
    layers = parse_layers("\n".join(report))
    summary = summarize(layers) if layers else None
    problems = precision_problems(layers, precision) if layers else []
    if summary is not None:
        logger.info("layer precisions: %s", format_summary(summary))
    else:
        logger.info("this TensorRT logged no per-layer report; the layer precisions are not recorded")
    for problem in problems:
        logger.warning("precision: %s", problem)
    return summary, problems


# long function: the TensorRT build in its API's order; the builder objects' lifetimes span it
def build_engine(
    onnx_path: str | os.PathLike,
    output: str | os.PathLike,
    options: BuildOptions | None = None,
) -> Path:
    """Build ``output`` (a retina_trt engine file: header + plan) from ``onnx_path``.

    TensorRT 10/11 needs the GPU the engine is for; TensorRT-RTX builds without one.

    Raises:
        BackendUnavailableError: no TensorRT, or TensorRT 10/11 without a GPU.
        EngineBuildError: the NMS kind is one this flavour cannot build, or parse/build failed
            (with every parser error and its node name).
    """
    from retina_trt.calibration.cache import file_sha256

    options = options or BuildOptions()
    onnx_path, output = Path(onnx_path), Path(output)
    check_output_file(output, "engine output")  # before the build, not after it
    refuse_overlap([("engine output", output), ("timing cache", options.timing_cache)], [onnx_path])
    meta = read_metadata(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    plugins = plugin_nodes(model) + [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
    shapes = profile_shapes(meta, options)
    trt = import_tensorrt(options.flavour)
    flavour = flavour_of(trt)
    check_nms_buildable(meta.nms, flavour, onnx_path)
    device_name, capability, targets = _targets(flavour, options)

    start = time.perf_counter()
    report: list[str] = []
    trt_logger = make_logger(trt, options.verbose, capture=report)
    if flavour == "tensorrt":
        _register_plugins(trt, trt_logger, plugins, onnx_path, options.hardware_compat)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(
        network_flags(trt, aot_plugins=any(n.op_type.startswith("RetinaNMS") for n in plugins))
    )
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}:\n{_parser_errors(parser)}")
    io = network_io(network)
    config, _monitor, cache_path = _configure(trt, builder, flavour, options, targets, shapes)

    where = device_name or "no GPU: compute capability " + ", ".join(f"{a}.{b}" for a, b in targets)
    logger.info(
        "building %s engine from %s (%s %s, %s)",
        meta.precision,
        onnx_path,
        FLAVOUR_NAMES[flavour],
        trt.__version__,
        where,
    )
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path}; rerun with `verbose` for its log")
    plan_bytes = bytes(plan)
    if cache_path is not None:
        timing_cache = config.get_timing_cache()
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(bytes(timing_cache.serialize()))
    build_s = time.perf_counter() - start
    layer_summary, problems = _layer_report(report, meta.precision)

    build = {
        **{k: v for k, v in asdict(options).items() if k not in ("min_hw", "opt_hw", "max_hw", "verbose", "flavour")},
        "compute_capabilities": [list(cc) for cc in targets],
        "batch": [shape[0] for shape in shapes["images"]],
        "profile": {name: [list(s) for s in value] for name, value in shapes.items()},
        "strongly_typed": True,
        "plugins": [n.op_type for n in plugins],
        "plugin_ptx": _embedded_ptx(plugins),
        "io": io,
        "build_seconds": round(build_s, 2),
        "layer_precisions": layer_summary,
        "precision_problems": problems,
    }
    header = make_header(
        spec=meta.spec,
        tensorrt_flavour=flavour,
        tensorrt_version=str(trt.__version__),
        device_name=device_name,
        compute_capability=capability,
        targets=targets,
        precision=meta.precision,
        onnx_sha256=file_sha256(onnx_path),
        export=meta.export,
        build=build,
        plan=plan_bytes,
    )
    write_engine(output, header, plan_bytes)
    logger.info("wrote %s (%.1f MB) in %.1f s", output, output.stat().st_size / 1e6, time.perf_counter() - start)
    return output
