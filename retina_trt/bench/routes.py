"""The CPU routes a user picks between, timed side by side: ``retina-trt bench --route ...``.

A route is ``BACKEND[:PRECISION]``: ``onnxruntime`` (FP32 export, the reference), ``openvino:f32``,
``openvino:bf16``, ``openvino:auto`` (FP32 export) and ``openvino:int8`` (the INT8 Q/DQ graph that
``build-engine --precision int8`` makes, calibrated here on a few synthetic images: for latency
only, the accuracy figures come from ``make precision``). Every route of a scale is warmed up, then
timed interleaved (one call of each route per round), so a busy machine slows all of them alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retina_trt.contract import CPU_PRECISIONS
from retina_trt.runtime.openvino_backend import OpenVinoOptions

logger = logging.getLogger(__name__)

ROUTE_BACKENDS = ("onnxruntime", "openvino")
DEFAULT_ROUTES = ("onnxruntime", "openvino:f32", "openvino:bf16", "openvino:int8")
# INT8 calibration for latency routes: a few synthetic images, one per batch (bounded memory)
LATENCY_CALIB_IMAGES = 4


@dataclass(frozen=True)
class Route:
    """``backend`` (onnxruntime / openvino), OpenVINO ``precision`` (auto/f32/bf16) and ``int8``."""

    backend: str
    precision: str | None = None
    int8: bool = False

    @property
    def label(self) -> str:
        if self.backend == "onnxruntime":
            return "onnxruntime fp32" + (" (int8 graph)" if self.int8 else "")
        return f"openvino {'int8' if self.int8 else self.precision}"


def parse_route(text: str) -> Route:
    """``"openvino:bf16"`` -> Route; raises ValueError naming the accepted forms."""
    backend, _, precision = text.strip().lower().partition(":")
    accepted = f"onnxruntime, onnxruntime:int8, openvino:{{{','.join(CPU_PRECISIONS)},int8}}"
    if backend not in ROUTE_BACKENDS:
        raise ValueError(f"unknown route {text!r}: use one of {accepted}")
    if precision == "int8":
        return Route(backend, "f32" if backend == "openvino" else None, int8=True)
    if backend == "onnxruntime":
        if precision not in ("", "fp32", "f32"):
            raise ValueError(f"route {text!r}: ONNX Runtime runs fp32 or int8 graphs; use one of {accepted}")
        return Route(backend)
    if precision not in (*CPU_PRECISIONS, ""):
        raise ValueError(f"route {text!r}: OpenVINO precision must be one of {CPU_PRECISIONS} or int8")
    return Route(backend, precision or "auto")


def int8_graph(fp32_onnx: Path, workdir: Path) -> Path:
    """The INT8 Q/DQ graph of ``fp32_onnx`` (Model Optimizer, synthetic calibration, for timing)."""
    from retina_trt.calibration import CalibrationConfig, prepare_precision

    config = CalibrationConfig(source="synthetic", num_images=LATENCY_CALIB_IMAGES, batch_size=1)
    out = workdir / f"{fp32_onnx.stem}.int8.onnx"
    return prepare_precision(fp32_onnx, "int8", out, calibration=config, cache_dir=workdir / "precision-cache").path


def open_routes(routes: Sequence[Route], fp32_onnx: Path, workdir: Path, num_threads: int | None) -> tuple[list, dict]:
    """(a Detector per route that this CPU can run, {route label: why not} for the others): a
    ``bf16`` route on a CPU without BF16 is left out with OpenVINO's reason, never timed as FP32.
    The INT8 graph is made once, when a route needs it."""
    from retina_trt.runtime.detector import Detector

    int8: Path | None = None
    detectors, skipped = [], {}
    for route in routes:
        path = fp32_onnx
        if route.int8:
            int8 = int8 or int8_graph(fp32_onnx, workdir)
            path = int8
        try:
            detectors.append(
                Detector(
                    path,
                    backend=route.backend,
                    num_threads=num_threads,
                    options=OpenVinoOptions(precision=route.precision or "auto"),
                )
            )
        except ValueError as err:
            if route.precision != "bf16":
                raise
            logger.warning("route %s left out: %s", route.label, err)
            skipped[route.label] = str(err)
    return detectors, skipped
