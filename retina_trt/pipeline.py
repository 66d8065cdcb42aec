"""The one build pipeline: weights (or an ONNX) -> ONNX export -> prepared precision -> TensorRT
engine, or the dry-run plan. :func:`build` is the one call (``retina_trt.build``);
``retina-trt build-engine``, ``bench`` (TensorRT engines per scale) and ``make demo`` (through the
CLI) all build through :func:`run_build`.

Every check that can fail does so before the slow steps (export, calibration, build): the output
name, whether this machine's TensorRT can build at all, the NMS kind, the profile.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retina_trt.calibration import CalibrationConfig, prepare_precision
from retina_trt.contract import DEFAULT_NMS_BY_FLAVOUR
from retina_trt.contract.onnx_metadata import read_metadata
from retina_trt.errors import ModelFormatError
from retina_trt.trt.builder import (
    BuildOptions,
    build_engine,
    build_plan,
    check_nms_buildable,
    profile_shapes,
)
from retina_trt.trt.compat import installed_flavour
from retina_trt.utils import check_output_file, refuse_overlap

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth")


def build(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    precision: str = "fp16",
    nms: str | None = None,
    calibration: CalibrationConfig | str | os.PathLike | None = None,
    batch: tuple[int, int, int] = (1, 1, 8),
    input_size: tuple[int, int] | None = None,
    dynamic_shapes: bool = False,
    **options: Any,
) -> Path:
    """Weights or an ONNX in, a prepared ONNX or a TensorRT engine out, in one call.

    ``retina_trt.build("model.pt", "model.engine", precision="int8", calibration="calib/")``
    exports the checkpoint, prepares INT8 (Model Optimizer Q/DQ, calibrated on ``calib/``) and
    builds the engine; ``build("model.pt", "model.int8.onnx", precision="int8", ...)`` stops at
    the prepared ONNX (what OpenVINO runs on the CPU). The four steps stay public
    (``load_checkpoint``, ``export_onnx``, ``prepare_precision``, ``build_engine``).

    Args:
        source: a checkpoint (``.pt``/``.pth``: ours, torchvision v1/v2) or a retina_trt ``.onnx``.
        output: ``.engine`` (built by TensorRT 10/11 on its GPU, or TensorRT-RTX anywhere) or
            ``.onnx`` (the prepared ONNX).
        precision: ``fp32``, ``fp16`` or ``int8``.
        nms: NMS kind of the export (checkpoints only; default: what the installed TensorRT builds).
        calibration: INT8 calibration: a :class:`CalibrationConfig`, or its source (an image folder,
            a COCO ``.json`` or ``"synthetic"``).
        batch: (min, opt, max) batch of the export (checkpoints only).
        input_size, dynamic_shapes: the export's fixed (H, W), or dynamic H x W (checkpoints only).
        **options: engine build settings (``BuildOptions`` fields: ``flavour``, ``workspace_mib``,
            ``compute_capabilities``, ...); ``.engine`` outputs only.

    Returns the path written. Raises ValueError for a bad request, before any slow step.
    """
    source, output = Path(source), Path(output)
    kind = source.suffix.lower()
    if kind not in (*CHECKPOINT_SUFFIXES, ".onnx"):
        raise ValueError(f"`source` must be a checkpoint (.pt, .pth) or an .onnx, got {source}")
    if not isinstance(calibration, (CalibrationConfig, type(None))):
        calibration = CalibrationConfig(source=str(calibration))
    if output.suffix.lower() == ".engine":
        request = BuildRequest(
            output=output,
            weights=source if kind != ".onnx" else None,
            onnx=source if kind == ".onnx" else None,
            precision=precision,
            nms=nms,
            export_batch=batch,
            input_size=input_size,
            dynamic_shapes=dynamic_shapes,
            options=BuildOptions(**options),
            calibration=calibration,
        )
        return run_build(request).engine
    if output.suffix.lower() != ".onnx":
        raise ValueError(f"`output` must end in .engine (a TensorRT engine) or .onnx (a prepared ONNX), got {output}")
    if options:
        raise ValueError(f"{', '.join(sorted(options))}: engine build settings; `output` {output} is an ONNX")
    return _prepared_onnx(source, output, precision, nms, calibration, batch, input_size, dynamic_shapes)


def _prepared_onnx(source, output, precision, nms, calibration, batch, input_size, dynamic_shapes) -> Path:
    """``source`` exported (a checkpoint) and prepared in ``precision`` into ``output``."""
    check_output_file(output, "`output`")
    calib = getattr(calibration, "source", calibration)
    calib = None if calib == "synthetic" else calib
    refuse_overlap([("`output`", output)], [source, calib], folders=[calib])
    if source.suffix.lower() == ".onnx":
        if nms is not None or dynamic_shapes or input_size is not None:
            raise ValueError("`nms`, `input_size` and `dynamic_shapes` apply to a checkpoint; an ONNX keeps its own")
        return prepare_precision(source, precision, output, calibration=calibration).path
    from retina_trt.export.onnx_export import export_onnx

    nms = nms or DEFAULT_NMS_BY_FLAVOUR[installed_flavour()]
    export = dict(nms=nms, batch=batch, input_size=input_size, dynamic_shapes=dynamic_shapes)
    if precision == "fp32":
        return export_onnx(source, output, **export)
    with tempfile.TemporaryDirectory(prefix="retina_trt_build_") as tmp:
        exported = export_onnx(source, Path(tmp) / "model.onnx", **export)
        return prepare_precision(exported, precision, output, calibration=calibration).path


@dataclass(frozen=True, kw_only=True)
class BuildRequest:
    """What to build.

    Attributes:
        output: the ``.engine`` to write.
        weights, onnx: the source, exactly one: a checkpoint (exported first) or a retina_trt ONNX
            (FP32, or already prepared).
        precision: fp32/fp16/int8; None: fp16, or the precision of an already prepared ONNX.
        nms: NMS kind of the export (weights only); None: what the TensorRT used builds by default.
        export_batch: (min, opt, max) batch of the export (weights only; the profile's default).
        input_size: (H, W) of the export (weights only); dynamic_shapes: dynamic H x W instead.
        options: the engine build (profile, flavour, targets, ...).
        calibration: INT8 calibration data (and FP16 preparation settings).
        save_onnx: where the prepared ONNX goes; None: ``<output stem>.<precision>.onnx``.
        cache_dir, use_cache: the precision cache.
        dry_run: stop after the prepared ONNX and return the plan (no TensorRT needed).
    """

    output: Path
    weights: str | os.PathLike | None = None
    onnx: str | os.PathLike | None = None
    precision: str | None = None
    nms: str | None = None
    export_batch: tuple[int, int, int] = (1, 1, 8)
    input_size: tuple[int, int] | None = None
    dynamic_shapes: bool = False
    options: BuildOptions = field(default_factory=BuildOptions)
    calibration: CalibrationConfig | None = None
    save_onnx: str | os.PathLike | None = None
    cache_dir: str | os.PathLike | None = None
    use_cache: bool = True
    dry_run: bool = False


@dataclass(frozen=True)
class BuildResult:
    """What was done: the prepared ONNX, its precision, the build plan, the engine (None for a
    dry run) and whether the prepared ONNX came from the precision cache."""

    prepared: Path
    precision: str
    plan: dict[str, Any]
    engine: Path | None
    reused: bool


def _check_request(request: BuildRequest) -> str | None:
    """Everything about the request itself; returns the flavour that will build (None: a dry run
    that names none)."""
    if (request.weights is None) == (request.onnx is None):
        raise ValueError("give exactly one source: weights (a checkpoint) or onnx (an exported model)")
    if request.output.suffix.lower() != ".engine":
        raise ValueError(f"`output` must end in .engine, got {request.output}")
    check_output_file(request.output, "`output`")
    if request.save_onnx is not None:
        check_output_file(request.save_onnx, "`save_onnx`")
    calib = request.calibration.source if request.calibration else None
    calib = None if calib == "synthetic" else calib
    outputs = [("`output`", request.output), ("`save_onnx`", request.save_onnx)]
    refuse_overlap(
        [*outputs, ("timing cache", request.options.timing_cache)],
        [request.weights, request.onnx, calib],
        folders=[calib],
    )
    if request.onnx is not None and request.nms is not None:
        raise ValueError("`nms` applies to `weights` (the export); an ONNX keeps its own NMS")
    if request.onnx is not None and request.dynamic_shapes:
        raise ValueError("`dynamic_shapes` applies to `weights` (the export); an ONNX keeps its own shapes")
    if request.dynamic_shapes and request.input_size:
        raise ValueError("give either `input_size` or `dynamic_shapes`, not both")
    if request.dry_run:
        return request.options.flavour  # checked against the NMS kind when named, else not needed
    # Fail before the slow steps when the build cannot happen here.
    from retina_trt.trt.compat import cuda_device, flavour_of, import_tensorrt

    flavour = flavour_of(import_tensorrt(request.options.flavour))
    if flavour == "tensorrt":
        cuda_device(to_build=True)
    return flavour


def _check_source(request: BuildRequest, source: Path, meta, flavour: str | None) -> None:
    if flavour is not None:
        check_nms_buildable(meta.nms, flavour, source)
    options = request.options
    if meta.nms == "graph" and (7, 5) in tuple(tuple(cc) for cc in options.compute_capabilities or ()):
        # measured with TensorRT-RTX 1.7: the graph NMS's pairwise product fails on 7.5
        # ("FP32 GEMM is not supported"); the network alone (nms="none") builds there
        raise ValueError(
            "TensorRT-RTX cannot build nms='graph' for compute capability 7.5 (its FP32 matrix product is not "
            "supported there): drop 7.5 from `compute_capabilities`, or export with nms='none' (NMS on the host)"
        )
    if meta.input_size is not None and (options.min_hw or options.max_hw):
        raise ValueError(
            f"{source} has a fixed {meta.input_size[0]}x{meta.input_size[1]} input; `min_hw` and `max_hw` set "
            "the profile of dynamic-shape models (`dynamic_shapes`, or a dynamic `onnx`)"
        )
    if request.onnx is not None and options.opt_hw and meta.input_size is not None:
        raise ValueError(
            f"{source} has a fixed {meta.input_size[0]}x{meta.input_size[1]} input; `opt_hw` sets the profile "
            "of dynamic-shape exports only (export again from `weights` with another `input_size` to change it)"
        )
    profile_shapes(meta, options)  # a bad profile fails here


def run_build(request: BuildRequest, *, say: Callable[[str], None] = logger.info) -> BuildResult:
    """Run the pipeline (module docstring); ``say`` gets one line per finished step (the log by
    default; the CLI prints them).

    Raises:
        ValueError: a bad request. BackendUnavailableError: no TensorRT (or TensorRT 10/11
            without a GPU) for a real build. ExportError / PrecisionError / EngineBuildError: the
            step that failed, with its reason.
    """
    flavour = _check_request(request)
    nms = request.nms or DEFAULT_NMS_BY_FLAVOUR[flavour or installed_flavour()]
    if flavour is not None and request.weights is not None:
        check_nms_buildable(nms, flavour, f"nms={nms!r}")
    with tempfile.TemporaryDirectory(prefix="retina_trt_build_") as tmp:
        if request.weights is not None:
            from retina_trt.export.onnx_export import export_onnx

            source = export_onnx(
                request.weights,
                Path(tmp) / "model.onnx",
                nms=nms,
                batch=request.export_batch,
                input_size=request.input_size,
                dynamic_shapes=request.dynamic_shapes,
            )
        else:
            source = Path(request.onnx)
        meta = read_metadata(source)
        _check_source(request, source, meta, flavour)
        precision = request.precision or (meta.precision if meta.precision != "fp32" else "fp16")
        reused = False
        if meta.precision != "fp32":
            if precision != meta.precision:
                raise ValueError(
                    f"{source} is already prepared as {meta.precision}; build it with "
                    f"precision={meta.precision!r}, or start from the FP32 export for {precision}"
                )
            prepared = source
            say(f"using the prepared {precision} ONNX {source}")
        else:
            output = request.output
            save_onnx = (
                Path(request.save_onnx) if request.save_onnx else output.with_name(f"{output.stem}.{precision}.onnx")
            )
            result = prepare_precision(
                source,
                precision,
                save_onnx,
                calibration=request.calibration,
                cache_dir=request.cache_dir,
                use_cache=request.use_cache,
            )
            prepared, reused = result.path, result.reused
            say(f"{precision} ONNX {'reused from the precision cache' if reused else 'prepared'}: {prepared}")
        plan = build_plan(prepared, request.options, flavour)
        if request.dry_run:
            return BuildResult(prepared, precision, plan, None, reused)
        engine = build_engine(prepared, request.output, request.options)
    return BuildResult(prepared, precision, plan, engine, reused)


def deepstream_onnx(
    model: str | os.PathLike,
    out_onnx: str | os.PathLike,
    *,
    precision: str = "fp16",
    batch: int = 1,
    input_size: tuple[int, int] | None = None,
    calibration: CalibrationConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    prepare: bool = True,
) -> Path:
    """The ONNX a DeepStream config is written beside (``serving.deepstream.export_deepstream``):
    a checkpoint exported with one float input and no ``image_sizes`` (batch 1..``batch``), or a
    given DeepStream ONNX copied, then ``precision`` prepared into it when it is FP32 and
    ``prepare`` (False: an engine was already built from it).

    Returns ``out_onnx``, written under a temporary name and renamed when complete.
    """
    from retina_trt.serving.deepstream import PRECISIONS, check_deepstream_onnx
    from retina_trt.utils import atomic_path

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model, out_onnx = Path(model), Path(out_onnx)
    if not model.is_file():
        raise ModelFormatError(f"model not found: {model}")
    suffix = model.suffix.lower()
    if suffix not in (".pt", ".pth", ".onnx"):
        raise ModelFormatError(f"export-deepstream takes a checkpoint (.pt) or a DeepStream ONNX, got {model}")
    with tempfile.TemporaryDirectory(prefix="retina-trt-deepstream-", dir=out_onnx.parent) as tmp:
        staged = Path(tmp) / "model.onnx"
        if suffix == ".onnx":
            check_deepstream_onnx(model)
            staged = model
        else:
            _export_for_deepstream(model, staged, batch, input_size)
        if prepare and precision != "fp32" and read_metadata(staged).precision == "fp32":
            prepared = Path(tmp) / f"model.{precision}.onnx"
            staged = prepare_precision(staged, precision, prepared, calibration=calibration, cache_dir=cache_dir).path
        if staged.resolve() != out_onnx.resolve():
            with atomic_path(out_onnx) as part:
                shutil.copyfile(staged, part)
    return out_onnx


def _export_for_deepstream(checkpoint: Path, out: Path, batch: int, input_size) -> None:
    """The checkpoint exported as DeepStream's nvinfer and stock parser read it: one float input,
    float32 classes, and at most the parser's 200 detections per image (capped with a warning)."""
    import dataclasses

    from retina_trt.export.onnx_export import export_onnx
    from retina_trt.model.checkpoint import load_checkpoint
    from retina_trt.serving.deepstream import MAX_DETECTIONS

    model = load_checkpoint(checkpoint)
    if model.spec.detections_per_img > MAX_DETECTIONS:
        logger.warning(
            "detections_per_img %d capped at %d for DeepStream: its parser keeps no more",
            model.spec.detections_per_img,
            MAX_DETECTIONS,
        )
        model.spec = dataclasses.replace(model.spec, detections_per_img=MAX_DETECTIONS)
    export_onnx(
        model,
        out,
        batch=(1, batch, batch),
        input_size=input_size,
        input_dtype="float32",
        image_sizes_input=False,
        classes_dtype="float32",
    )
