"""``prepare_precision``: an exported FP32 ONNX to the FP16 or INT8 ONNX an engine is built from."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from retina_trt.contract.onnx_metadata import read_metadata, write_precision_metadata
from retina_trt.export.trt_ops import PLUGIN_NODES, check_trt_compatible
from retina_trt.utils import atomic_path, check_output_file, refuse_overwrite

from .cache import PrecisionCache, default_cache_dir, file_sha256, tool_versions
from .data import DEFAULT_CALIB_IMAGES, CalibrationData, load_calibration_data, noise_data
from .memory import calibration_batch
from .precision import CALIB_METHODS, DEFAULT_PERCENTILE, PRECISIONS, convert_fp16, quantize_int8
from .split import has_nms_inputs, reattach_nms, split_at_nms

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """How to calibrate.

    Attributes:
        source: image folder, COCO ``.json``, ``"synthetic"``, or None (INT8 needs one; FP16 then
            checks its ranges on noise images).
        num_images: calibration images (default 512).
        method: ``entropy`` (default), ``max`` or ``percentile``.
        percentile: the percentile for ``method="percentile"``.
        batch_size: images per calibration batch; None (default): the largest up to 8 whose
            estimated memory fits in what this machine has (``calibration/memory.py``); a
            given batch is lowered, with a warning, when it would not fit.
        seed: shuffling seed.
    """

    source: str | os.PathLike | None = None
    num_images: int = DEFAULT_CALIB_IMAGES
    method: str = "entropy"
    percentile: float = DEFAULT_PERCENTILE
    batch_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in CALIB_METHODS:
            raise ValueError(f"calibration method must be one of {CALIB_METHODS}, got {self.method!r}")
        if not 50.0 < float(self.percentile) < 100.0:
            raise ValueError(f"percentile must be in (50, 100), got {self.percentile}")
        for name in ("num_images", "batch_size"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class PreparedModel:
    """The result of :func:`prepare_precision`."""

    path: Path
    precision: str
    reused: bool
    info: dict[str, Any] = field(default_factory=dict)


def calibration_input_size(onnx_path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) calibration images are padded to: the fixed input, or min x max size for dynamic exports."""
    meta = read_metadata(onnx_path)
    if meta.input_size is not None:
        return meta.input_size
    d = meta.spec.size_divisible
    return math.ceil(meta.spec.min_size / d) * d, math.ceil(meta.spec.max_size / d) * d


def _convert(onnx_path: Path, precision: str, data: CalibrationData, calibration: CalibrationConfig) -> onnx.ModelProto:
    """The FP16 / INT8 model; for exports with NMS only the part before it is converted."""

    def convert(path: Path) -> onnx.ModelProto:
        if precision == "fp16":
            return convert_fp16(path, data)
        batch = calibration_batch(path, calibration_input_size(onnx_path), calibration.batch_size, len(data))
        return quantize_int8(path, data, method=calibration.method, batch_size=batch, percentile=calibration.percentile)

    full = onnx.load(str(onnx_path))
    if not has_nms_inputs(full):  # nms="none" (candidates are the outputs), or an older export
        return convert(onnx_path)
    head, tail = split_at_nms(full)
    with tempfile.TemporaryDirectory(prefix="retina_trt_split_") as tmp:
        head_path = Path(tmp) / "network.onnx"
        onnx.save(head, str(head_path))
        prepared = convert(head_path)
    logger.info("reattached the FP32 NMS part (%d nodes) after the %s network", len(tail.nodes), precision.upper())
    return reattach_nms(prepared, tail)


# long function: the precision steps in order (check, cache, calibrate, write, record): each a call
def prepare_precision(
    onnx_path: str | os.PathLike,
    precision: str,
    output: str | os.PathLike,
    *,
    calibration: CalibrationConfig | None = None,
    data: CalibrationData | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> PreparedModel:
    """Write the ``precision`` version of ``onnx_path`` to ``output`` (through the cache).

    Args:
        onnx_path: an FP32 ONNX from ``retina-trt export``.
        precision: ``fp32`` (copied), ``fp16`` or ``int8``.
        output: where the prepared ONNX goes (written atomically).
        calibration: the calibration settings (INT8 needs a source or ``data``).
        data: already loaded calibration data (overrides ``calibration.source``).
        cache_dir: the precision cache (default :func:`default_cache_dir`).
        use_cache: False skips the cache lookup (the result is still stored).

    Raises:
        ValueError: bad arguments. CalibrationDataError, PrecisionError: see their messages.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    calibration = calibration or CalibrationConfig()
    onnx_path, output = Path(onnx_path), check_output_file(output, "precision output")  # before the work
    if precision != "fp32":
        refuse_overwrite(output, [onnx_path], "precision output")
    meta = read_metadata(onnx_path)
    if meta.precision != "fp32":
        raise ValueError(f"{onnx_path} is already a prepared {meta.precision} model; start from the FP32 export")
    source_sha = file_sha256(onnx_path)
    if precision == "fp32":
        if onnx_path.resolve() != output.resolve():
            with atomic_path(output) as tmp:
                shutil.copyfile(onnx_path, tmp)
        return PreparedModel(output, "fp32", reused=False, info={"precision": "fp32"})

    input_size = calibration_input_size(onnx_path)
    if data is None:
        if calibration.source is not None:
            data = load_calibration_data(
                calibration.source,
                meta.spec,
                input_size,
                num_images=calibration.num_images,
                seed=calibration.seed,
            )
        elif precision == "int8":
            raise ValueError(
                "INT8 needs calibration data: give an image folder, a COCO .json or 'synthetic' (`calibration`)"
            )
        else:
            data = noise_data(input_size, seed=calibration.seed)
    data = dataclasses.replace(  # feed exactly the model's inputs (single float input for DeepStream)
        data,
        input_names=meta.info.inputs,
        float_images=meta.info.float_input,
    )
    key = {
        "onnx_sha256": source_sha,
        "precision": precision,
        "method": calibration.method if precision == "int8" else None,
        "percentile": calibration.percentile if precision == "int8" and calibration.method == "percentile" else None,
        "calib_sha256": data.sha256(),
        "calib_images": len(data),
        "tools": tool_versions(),
    }
    cache = PrecisionCache(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    cached = cache.lookup(key) if use_cache else None
    info = {
        "precision": precision,
        "method": key["method"],
        "percentile": key["percentile"],
        "calibration": {"source": data.source, "images": len(data), "sha256": key["calib_sha256"]},
        "source_onnx_sha256": source_sha,
        "tools": key["tools"],
        "fp32_islands": "nodes after the last convolutions (decode, sigmoid, NMS)",
    }
    if cached is not None:
        with atomic_path(output) as tmp:
            shutil.copyfile(cached, tmp)
        return PreparedModel(output, precision, reused=True, info=info)

    start = time.perf_counter()
    logger.info("preparing %s from %s (%s)", precision.upper(), onnx_path, data.source)
    model = _convert(onnx_path, precision, data, calibration)
    source_props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    write_precision_metadata(model, source_props, info)
    check_trt_compatible(model, allowed_custom=PLUGIN_NODES)
    with tempfile.TemporaryDirectory(prefix="retina_trt_prep_") as tmp:
        staged = Path(tmp) / "prepared.onnx"
        onnx.save(model, str(staged))
        cache.store(key, staged)
        with atomic_path(output) as out:
            shutil.copyfile(staged, out)
    logger.info("wrote %s (%s) in %.1f s", output, precision.upper(), time.perf_counter() - start)
    return PreparedModel(output, precision, reused=False, info=info)
