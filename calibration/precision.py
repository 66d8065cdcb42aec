"""FP16 and INT8 (explicit Q/DQ) ONNX graphs for strongly typed TensorRT engines.

TensorRT 11 has no FP16/INT8 builder flags and no implicit calibrators (docs/engines.md), so the
precision lives in the graph: FP16 tensors, QuantizeLinear/DequantizeLinear pairs. Both are made
with NVIDIA Model Optimizer and both run in ONNX Runtime on the CPU, so their accuracy is measured
before any engine exists.

**FP32 islands.** Everything downstream of the network's last convolutions (the reshapes of the
head outputs, sigmoid, box decoding with its ``exp``, clipping, top-k and NMS) stays FP32:
decoding ``exp(dw)`` and comparing scores at 0.05 are where FP16 rounding changes detections.
The island is found by graph topology, not by names: a node belongs to the network when a
``Conv`` is reachable from it or it is a ``Conv``; every other node is an island node.

* FP16: ``modelopt.onnx.autocast.convert_to_mixed_precision`` with the island nodes excluded and
  the model's I/O types kept (uint8 images, int32 sizes in; the output contract out). Autocast is
  used instead of an own pass because it also keeps FP32 any node whose activations, measured on
  real images, exceed FP16's safe range (``data_max``), and it fixes up the Cast nodes and
  initializers of a mixed graph, which a hand-written pass would have to re-implement.
* INT8: ``modelopt.onnx.quantization.quantize`` (entropy calibration by default, ``max``
  selectable) with the island nodes excluded; the rest of the graph stays FP32
  (``high_precision_dtype="fp32"``). ``percentile`` ranges come from ONNX Runtime's percentile
  calibrator, handed to Model Optimizer as a TensorRT-style calibration cache (Model Optimizer's
  own INT8 path offers entropy and max only).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from retina_trt.contract import CALIB_METHODS, PRECISIONS  # noqa: F401 (re-exported)
from retina_trt.errors import RetinaTrtError

from .data import CalibrationData

logger = logging.getLogger(__name__)

DEFAULT_PERCENTILE = 99.999


class PrecisionError(RetinaTrtError):
    """Model Optimizer is missing or failed to convert the model."""


def fp32_island_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that must stay FP32: those from which no ``Conv`` is reachable."""
    producer = {out: node for node in model.graph.node for out in node.output}
    network: set[str] = set()
    stack = [node for node in model.graph.node if node.op_type == "Conv"]
    while stack:
        node = stack.pop()
        if node.name in network:
            continue
        network.add(node.name)
        stack.extend(producer[i] for i in node.input if i in producer)
    return [node.name for node in model.graph.node if node.name not in network]


def _exact(names: list[str]) -> list[str]:
    """Model Optimizer takes node-name regexes; these match exactly ``names``."""
    return ["^" + re.escape(name) + "$" for name in names]


def _import_modelopt():
    try:
        import modelopt.onnx.autocast as autocast
        import modelopt.onnx.quantization as quantization
    except ImportError as err:
        raise PrecisionError(
            "FP16/INT8 preparation needs NVIDIA Model Optimizer: pip install 'retina-trt[int8]' "
            f"(nvidia-modelopt[onnx]); import failed: {err}"
        ) from err
    return autocast, quantization


@contextlib.contextmanager
def _tool_temp_files_in(folder: str | os.PathLike):
    """Model Optimizer and ONNX Runtime's calibrator leave temporary ONNX files in $TMPDIR when
    interrupted (Ctrl-C during calibration): point Python's temp folder at ``folder`` (ours,
    removed on every exit path) while they run."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = previous


@contextlib.contextmanager
def _tool_chatter_at_debug():
    """Model Optimizer logs hundreds of INFO lines (through its own handler and the root one, so
    each twice) and ONNX Runtime's calibrator prints its steps: while preparing, both go to
    DEBUG here unless retina_trt's own log is at DEBUG (``-v``). Progress bars stay."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    tool = logging.getLogger("modelopt")
    loggers = [
        tool,
        *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("modelopt.")),
    ]
    levels = [(lg, lg.level) for lg in loggers]
    for lg, _ in levels:
        lg.setLevel(logging.WARNING)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        for lg, level in levels:
            lg.setLevel(level)
        for line in printed.getvalue().splitlines():
            logger.debug("calibrator: %s", line)


def _check_names(model: onnx.ModelProto) -> None:
    names = [n.name for n in model.graph.node]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise PrecisionError("every node of the ONNX model needs a unique name; re-export it with retina-trt export")


def convert_fp16(onnx_path: str | os.PathLike, reference: CalibrationData) -> onnx.ModelProto:
    """FP16 graph with FP32 islands (see the module docstring).

    Args:
        onnx_path: an FP32 ``retina_trt`` ONNX.
        reference: images for autocast's range check (a few are enough).
    """
    autocast, _ = _import_modelopt()
    model = onnx.load(str(onnx_path))
    _check_names(model)
    islands = fp32_island_nodes(model)
    with tempfile.TemporaryDirectory(prefix="retina_trt_fp16_") as tmp:
        npz = Path(tmp) / "reference.npz"
        first = next(reference.batches(8))
        np.savez(npz, **first)
        try:
            with _tool_chatter_at_debug(), _tool_temp_files_in(tmp):
                return autocast.convert_to_mixed_precision(
                    str(onnx_path),
                    low_precision_type="fp16",
                    nodes_to_exclude=_exact(islands),
                    keep_io_types=True,
                    calibration_data=str(npz),
                )
        except Exception as err:  # Model Optimizer raises many types
            raise PrecisionError(f"FP16 conversion failed: {type(err).__name__}: {err}") from err


class _Reader:
    """An ONNX Runtime ``CalibrationDataReader`` over batches, with a progress bar."""

    def __init__(self, data: CalibrationData, batch_size: int, desc: str) -> None:
        self.feeds = list(data.batches(batch_size))
        self.desc = desc
        self._iter: Iterator[dict[str, np.ndarray]] | None = None
        self._bar = None

    def get_first(self) -> dict[str, np.ndarray]:
        return self.feeds[0]

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._bar = tqdm(total=len(self.feeds), desc=self.desc, unit="batch", disable=None)
            self._iter = iter(self.feeds)
        feed = next(self._iter, None)
        if feed is None:
            self._bar.close()
        else:
            self._bar.update(1)
        return feed

    def rewind(self) -> None:
        self._iter = None


class _AbsHistogram:
    """Running histogram of |x| whose range grows as larger values arrive."""

    def __init__(self, bins: int = 2048) -> None:
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.float64)
        self.high = 0.0

    def add(self, values: np.ndarray) -> None:
        values = np.abs(values.astype(np.float32, copy=False).ravel())
        top = float(values.max()) if values.size else 0.0
        if top > self.high:
            if self.high > 0:  # re-bin what we have onto the wider range
                old_edges = np.linspace(0.0, self.high, self.bins + 1)
                new_edges = np.linspace(0.0, top, self.bins + 1)
                cdf = np.concatenate([[0.0], np.cumsum(self.counts)])
                self.counts = np.diff(np.interp(new_edges, old_edges, cdf))
            self.high = top
        if self.high > 0:
            self.counts += np.histogram(values, bins=self.bins, range=(0.0, self.high))[0]

    def percentile(self, q: float) -> float:
        total = self.counts.sum()
        if total == 0 or self.high == 0:
            return 0.0
        cdf = np.cumsum(self.counts) / total
        index = int(np.searchsorted(cdf, q / 100.0))
        return float(min(index + 1, self.bins) * self.high / self.bins)


def _percentile_cache(
    onnx_path: Path, data: CalibrationData, batch_size: int, percentile: float, islands: list[str], out: Path
) -> None:
    """Write a TensorRT-style calibration cache (scale = percentile(|x|) / 127) for every float
    activation the network's nodes read. Own histograms rather than ONNX Runtime's calibrators:
    Model Optimizer patches those process-wide once it has run."""
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    island = set(islands)
    inferred = onnx.shape_inference.infer_shapes(model)
    float_tensors = {
        v.name
        for v in [*inferred.graph.value_info, *inferred.graph.input]
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }
    initializers = {i.name for i in model.graph.initializer}
    names = sorted(
        {
            i
            for n in model.graph.node
            if n.name not in island
            for i in n.input
            if i in float_tensors and i not in initializers
        }
    )
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in existing)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    histograms = {n: _AbsHistogram() for n in names}
    reader = _Reader(data, batch_size, f"percentile {percentile}")
    while (feed := reader.get_next()) is not None:
        for name, value in zip(names, session.run(names, feed)):
            histograms[name].add(value)
    lines = ["TRT-retina_trt-Percentile"]
    for name, histogram in histograms.items():
        amax = max(histogram.percentile(percentile), 1e-8)
        lines.append(f"{name}: {struct.pack('!f', amax / 127.0).hex()}")
    out.write_text("\n".join(lines) + "\n")


def quantize_int8(
    onnx_path: str | os.PathLike,
    data: CalibrationData,
    *,
    method: str = "entropy",
    batch_size: int = 8,
    percentile: float = DEFAULT_PERCENTILE,
) -> onnx.ModelProto:
    """INT8 Q/DQ graph (explicit quantization) with FP32 islands, calibrated on ``data``."""
    if method not in CALIB_METHODS:
        raise ValueError(f"calibration method must be one of {CALIB_METHODS}, got {method!r}")
    _, quantization = _import_modelopt()
    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    _check_names(model)
    islands = fp32_island_nodes(model)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="retina_trt_int8_") as tmp:
        cache = None
        if method == "percentile":
            cache = Path(tmp) / "percentile.cache"
            _percentile_cache(onnx_path, data, batch_size, percentile, islands, cache)
        output = Path(tmp) / "int8.onnx"
        try:
            with _tool_chatter_at_debug(), _tool_temp_files_in(tmp):
                quantization.quantize(
                    str(onnx_path),
                    quantize_mode="int8",
                    calibration_data_reader=_Reader(data, batch_size, f"INT8 calibration ({method})"),
                    calibration_method="max" if method == "percentile" else method,
                    calibration_cache_path=None if cache is None else str(cache),
                    calibration_eps=["cpu"],
                    nodes_to_exclude=_exact(islands),
                    high_precision_dtype="fp32",
                    output_path=str(output),
                    log_level="WARNING",
                )
        except Exception as err:  # Model Optimizer raises many types
            raise PrecisionError(f"INT8 quantization failed: {type(err).__name__}: {err}") from err
        result = onnx.load(str(output))
    num_q = sum(1 for n in result.graph.node if n.op_type == "QuantizeLinear")
    if num_q == 0:
        raise PrecisionError("INT8 quantization inserted no QuantizeLinear node; the model has nothing to quantize")
    logger.info("INT8 (%s): %d Q/DQ pairs in %.1f s", method, num_q, time.perf_counter() - start)
    return result
