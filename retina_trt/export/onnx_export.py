"""``export_onnx``: a RetinaNet to an ONNX model ready for TensorRT that runs in ONNX Runtime.

The graph (docs/export-and-contract.md):

* inputs ``images`` uint8 [B, H, W, 3] BGR (NHWC, as decoders give frames) and ``image_sizes``
  int32 [B, 2], the (h, w) of each image's valid (unpadded) region, used to clip boxes exactly
  as the reference does;
* ``PixelNormalizer`` + backbone + heads, traced with ``torch.onnx.export``;
* the postprocess in standard ONNX operators (``postprocess_graph``);
* outputs: ``nms="onnx"``: the output contract ``num_detections`` int32 [B, 1],
  ``detection_boxes`` float32 [B, D, 4] (xyxy, network-input pixels), ``detection_scores``
  float32 [B, D], ``detection_classes`` int32 [B, D], rows past num_detections zero;
  ``nms="none"``: ``candidate_boxes`` [B, N, 4], ``candidate_scores`` [B, N] and
  ``candidate_classes`` int32 [B, N] (entries with score <= score_thresh are padding).
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from retina_trt._version import __version__
from retina_trt.contract import CLASSES_DTYPES, INPUT_NAMES, MAX_BATCH, NMS_CHOICES, NMS_INPUTS
from retina_trt.contract.onnx_metadata import write_metadata
from retina_trt.errors import ExportError
from retina_trt.export.graph import GraphBuilder
from retina_trt.export.postprocess_graph import (
    CANDIDATE_OUTPUTS,
    CONTRACT_OUTPUTS,
    NMS_APPENDERS,
    append_candidates,
)
from retina_trt.export.trt_ops import PLUGIN_DOMAIN, PLUGIN_NODES, check_trt_compatible
from retina_trt.model.checkpoint import load_checkpoint
from retina_trt.model.normalize import PixelNormalizer
from retina_trt.model.retinanet import RetinaNet
from retina_trt.spec import MAX_IMAGE_SIDE
from retina_trt.utils import atomic_path, check_output_file, refuse_overwrite

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17


class _TracedCore(nn.Module):
    """uint8 NHWC BGR -> per level (cls [B, A*K, H, W], box [B, A*4, H, W]), the head
    convolutions' own layout: the postprocess reads the few values it needs by index instead of
    transposing every logit (a 5-D transpose OpenVINO runs as a reference kernel; its measured
    share of the INT8 profile is in docs/cpu.md)."""

    def __init__(self, model: RetinaNet) -> None:
        super().__init__()
        self.normalizer = PixelNormalizer(model.spec)
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        outputs = self.model(self.normalizer(images))
        flat = []
        for cls, box in zip(outputs.cls_logits, outputs.box_deltas):
            flat.extend((cls, box))
        return tuple(flat)


def default_input_size(model: RetinaNet) -> tuple[int, int]:
    """(H, W) of a fixed-size export when none is given: landscape min_size x max_size, padded."""
    spec = model.spec
    d = spec.size_divisible
    return math.ceil(spec.min_size / d) * d, math.ceil(spec.max_size / d) * d


def _check_batch(batch: Sequence[int]) -> tuple[int, int, int]:
    try:
        lo, opt, hi = (int(b) for b in batch)
    except (TypeError, ValueError) as err:
        raise ValueError(f"batch must be (min, opt, max) integers, got {batch!r}") from err
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"batch must satisfy 1 <= min <= opt <= max, got {(lo, opt, hi)}")
    if hi > MAX_BATCH:
        raise ValueError(f"batch max {hi} is larger than {MAX_BATCH}, the most a retina_trt model may declare")
    return lo, opt, hi


def _check_input_size(input_size: Sequence[int], divisible: int) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in input_size)
    except (TypeError, ValueError) as err:
        raise ValueError(f"input_size must be (height, width), got {input_size!r}") from err
    if max(height, width) > MAX_IMAGE_SIDE:
        raise ValueError(f"input_size {height}x{width} is larger than {MAX_IMAGE_SIDE} on a side")
    if height < divisible or width < divisible or height % divisible or width % divisible:
        raise ValueError(
            f"input_size {height}x{width} must be positive multiples of the model's "
            f"size_divisible ({divisible}), e.g. {math.ceil(max(height, 1) / divisible) * divisible}x"
            f"{math.ceil(max(width, 1) / divisible) * divisible}"
        )
    return height, width


def _trace(core: _TracedCore, example: Tensor, opset: int, dynamic_shapes: bool) -> onnx.ModelProto:
    num_levels = len(core.model.spec.anchor_sizes)
    output_names = [f"{kind}_p{lvl + 3}" for lvl in range(num_levels) for kind in ("cls", "box")]
    image_axes = {0: "batch", 1: "height", 2: "width"} if dynamic_shapes else {0: "batch"}
    level_axes = {0: "batch", 2: "h", 3: "w"} if dynamic_shapes else {0: "batch"}
    dynamic_axes = {"images": image_axes, **{n: level_axes for n in output_names}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic are expected
        torch.onnx.export(
            core,
            (example,),
            buffer,
            input_names=["images"],
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def _simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(model)


def _check_arguments(model: RetinaNet, nms, batch, input_size, dynamic_shapes, opset, input_dtype):
    """export_onnx's arguments checked; returns (batch, input_size (None: dynamic), opset)."""
    spec = model.spec
    if nms not in NMS_CHOICES:
        raise ValueError(f"nms must be one of {NMS_CHOICES}, got {nms!r}")
    batch = _check_batch(batch)
    if input_dtype not in ("uint8", "float32"):
        raise ValueError(f"input_dtype must be 'uint8' or 'float32', got {input_dtype!r}")
    if dynamic_shapes and input_size is not None:
        raise ValueError("give either input_size (fixed shapes) or dynamic_shapes=True, not both")
    if not dynamic_shapes:
        input_size = (
            default_input_size(model) if input_size is None else _check_input_size(input_size, spec.size_divisible)
        )
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not 13 <= opset <= 20:
        raise ValueError(f"opset must be in 13..20 (TensorRT 10 and torch's exporter), got {opset}")
    return batch, input_size, opset


def _check_classes_dtype(classes_dtype: str, nms: str) -> None:
    if classes_dtype not in CLASSES_DTYPES:
        raise ValueError(f"classes_dtype must be one of {CLASSES_DTYPES}, got {classes_dtype!r}")
    if classes_dtype != "int32" and nms == "none":
        raise ValueError("classes_dtype='float32' needs NMS in the graph (nms='none' has no detection_classes)")


def _image_sizes(g: GraphBuilder, as_input: bool) -> str:
    """The ``image_sizes`` tensor: the graph input, or (single-input exports) each image's
    (H, W) taken from ``images`` itself."""
    if as_input:
        g.graph.input.append(onnx.helper.make_tensor_value_info("image_sizes", onnx.TensorProto.INT32, ["batch", 2]))
        return "image_sizes"
    shape = g.op("Shape", ["images"])
    hw = g.op("Slice", [shape, g.const([1], np.int64), g.const([3], np.int64)])
    rows = g.op(
        "Concat",
        [g.op("Slice", [shape, g.const([0], np.int64), g.const([1], np.int64)]), g.const([1], np.int64)],
        axis=0,
    )
    return g.op(
        "Cast", [g.op("Tile", [g.op("Unsqueeze", [hw, g.const([0], np.int64)]), rows])], to=onnx.TensorProto.INT32
    )


def _append_outputs(
    g: GraphBuilder, onnx_model, boxes: str, scores: str, labels: str, nms: str, spec, float_classes: bool = False
) -> list[tuple]:
    """The NMS kind's tail and the graph outputs (the contract, or the candidates for "none");
    returns [(name, dtype, shape)] of the outputs. ``float_classes``: ``detection_classes`` cast
    to float32 at the very end (inside the NMS tail, which precision preparation keeps in FP32)."""
    if nms != "none":
        # Named hand-over points between the network and NMS: precision preparation converts the
        # part before them and reattaches the FP32 NMS after them (calibration/split.py).
        boxes, scores, labels = (g.rename_output(t, name) for t, name in zip((boxes, scores, labels), NMS_INPUTS))
        tensors = NMS_APPENDERS[nms](g, boxes, scores, labels, spec)
        classes_type = onnx.TensorProto.FLOAT if float_classes else onnx.TensorProto.INT32
        if float_classes:
            tensors = (*tensors[:3], g.cast(tensors[3], classes_type))
        d = spec.detections_per_img
        outputs = [
            (CONTRACT_OUTPUTS[0], onnx.TensorProto.INT32, ["batch", 1]),
            (CONTRACT_OUTPUTS[1], onnx.TensorProto.FLOAT, ["batch", d, 4]),
            (CONTRACT_OUTPUTS[2], onnx.TensorProto.FLOAT, ["batch", d]),
            (CONTRACT_OUTPUTS[3], classes_type, ["batch", d]),
        ]
    else:
        tensors = (boxes, scores, g.cast(labels, onnx.TensorProto.INT32))
        outputs = [
            (CANDIDATE_OUTPUTS[0], onnx.TensorProto.FLOAT, ["batch", "candidates", 4]),
            (CANDIDATE_OUTPUTS[1], onnx.TensorProto.FLOAT, ["batch", "candidates"]),
            (CANDIDATE_OUTPUTS[2], onnx.TensorProto.INT32, ["batch", "candidates"]),
        ]
    if nms in ("plugin", "efficient"):
        onnx_model.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN if nms == "plugin" else "TRT", 1))
    for tensor, (name, dtype, shape) in zip(tensors, outputs):
        g.rename_output(tensor, name)
        g.graph.output.append(onnx.helper.make_tensor_value_info(name, dtype, shape))
    return outputs


# long function: the export in order (checks, trace, postprocess, metadata, simplify, write)
def export_onnx(
    model: RetinaNet | str | os.PathLike,
    path: str | os.PathLike,
    *,
    nms: str = "onnx",
    batch: Sequence[int] = (1, 1, 8),
    input_size: Sequence[int] | None = None,
    dynamic_shapes: bool = False,
    opset: int | None = None,
    simplify: bool = True,
    input_dtype: str = "uint8",
    image_sizes_input: bool = True,
    classes_dtype: str = "int32",
) -> Path:
    """Export ``model`` to ONNX at ``path`` (written to a temporary name, then renamed).

    Args:
        model: a RetinaNet, or a checkpoint path for :func:`~retina_trt.load_checkpoint`.
        path: output ``.onnx`` file.
        nms: ``"onnx"`` (NonMaxSuppression in the graph, output contract; ONNX Runtime and
            TensorRT 10/11), ``"graph"`` (exact greedy NMS from plain operators, output
            contract; every TensorRT flavour, TensorRT-RTX included), ``"none"`` (merged pre-NMS
            candidates; the runtime finishes on the host), ``"plugin"`` (the retina_trt NMS
            plugin's three nodes; TensorRT 10/11, and ONNX Runtime through
            onnxruntime-extensions) or ``"efficient"`` (TensorRT's EfficientNMS_TRT; TensorRT
            10/11 only; README lists where it differs).
        batch: (min, opt, max) batch sizes; the batch axis is dynamic, the range is recorded in
            the metadata for the TensorRT optimization profile.
        input_size: fixed (H, W) network input, multiples of ``spec.size_divisible``; default
            ``min_size x max_size`` rounded up (landscape). Exclusive with ``dynamic_shapes``.
        dynamic_shapes: dynamic H and W; anchors are computed in the graph.
        opset: ONNX opset (default 17).
        simplify: run onnxslim on the result (constant folding, dead-node removal).
        input_dtype: ``"uint8"`` (default) or ``"float32"`` (raw 0-255 BGR values as float, for
            pipelines such as DeepStream's nvinfer that feed float tensors).
        image_sizes_input: False drops the ``image_sizes`` input: boxes are clipped to the network
            input instead of each image's valid region (for single-input consumers, DeepStream).
        classes_dtype: ``"int32"`` (the contract) or ``"float32"``: ``detection_classes`` as float,
            which DeepStream's stock BatchedNMS parsers read (``serving.deepstream``).

    Returns:
        The path written.

    Raises:
        ValueError: bad arguments. ExportError: the export or its checks failed.
    """
    path = check_output_file(path, "ONNX output")  # before the slow export
    refuse_overwrite(path, [] if isinstance(model, RetinaNet) else [model], "ONNX output")
    if not isinstance(model, RetinaNet):
        model = load_checkpoint(model)
    spec = model.spec
    batch, input_size, opset = _check_arguments(model, nms, batch, input_size, dynamic_shapes, opset, input_dtype)
    _check_classes_dtype(classes_dtype, nms)
    start = time.perf_counter()
    shape = "dynamic shapes" if dynamic_shapes else f"input {input_size[0]}x{input_size[1]}"
    logger.info(
        "exporting %s/%d classes to %s (nms=%s, batch=%s, %s, opset %d)",
        spec.backbone,
        spec.num_classes,
        path,
        nms,
        batch,
        shape,
        opset,
    )
    onnx_model = _traced_network(model, batch, input_size, opset, dynamic_shapes, input_dtype)
    logger.info("traced the network in %.1f s", time.perf_counter() - start)
    outputs = _append_postprocess(onnx_model, spec, nms, input_size, opset, image_sizes_input, classes_dtype)
    if simplify:
        onnx_model = _simplified_or_kept(onnx_model)
    export_options = {
        "nms": nms,
        "batch": list(batch),
        "input_size": None if input_size is None else list(input_size),
        "dynamic_shapes": bool(dynamic_shapes),
        "opset": opset,
        "input_layout": "NHWC",
        "input_format": f"{input_dtype} BGR",
        "inputs": list(INPUT_NAMES) if image_sizes_input else ["images"],
        "outputs": [o[0] for o in outputs],
        "classes_dtype": classes_dtype,
        "simplified": bool(simplify),
        "retina_trt_version": __version__,
    }
    _finish_and_save(onnx_model, spec, export_options, path)
    logger.info(
        "wrote %s (%.1f MB, %d nodes) in %.1f s",
        path,
        path.stat().st_size / 1e6,
        len(onnx_model.graph.node),
        time.perf_counter() - start,
    )
    return path


def _traced_network(
    model: RetinaNet, batch, input_size, opset: int, dynamic_shapes: bool, input_dtype: str
) -> onnx.ModelProto:
    """The network traced to ONNX: the per-level head outputs are the graph's outputs."""
    spec = model.spec
    core = _TracedCore(model.eval()).eval()
    example_hw = input_size or (2 * spec.size_divisible, 3 * spec.size_divisible)
    example = torch.zeros((batch[1], *example_hw, 3), dtype=torch.uint8 if input_dtype == "uint8" else torch.float32)
    try:
        return _trace(core, example, opset, dynamic_shapes)
    except Exception as err:  # the exporter raises many types
        raise ExportError(f"torch.onnx.export failed: {type(err).__name__}: {err}") from err


def _append_postprocess(
    onnx_model: onnx.ModelProto, spec, nms: str, input_size, opset: int, image_sizes_input: bool, classes_dtype: str
):
    """The candidates and the NMS kind appended after the head outputs; returns the outputs."""
    graph = onnx_model.graph
    levels = [o.name for o in graph.output]
    del graph.output[:]
    g = GraphBuilder(graph, "postprocess", opset)
    boxes, scores, labels = append_candidates(
        g,
        cls_levels=levels[0::2],
        box_levels=levels[1::2],
        images="images",
        image_sizes=_image_sizes(g, image_sizes_input),
        spec=spec,
        input_size=input_size,
    )
    return _append_outputs(g, onnx_model, boxes, scores, labels, nms, spec, classes_dtype == "float32")


def _simplified_or_kept(onnx_model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return _simplify(onnx_model)
    except ImportError as err:
        raise ExportError("simplify=True needs onnxslim: pip install onnxslim (or pass simplify=False)") from err
    except Exception as err:  # onnxslim raises many types; the unsimplified model is valid
        logger.warning("onnxslim failed (%s: %s); keeping the unsimplified graph", type(err).__name__, err)
        return onnx_model


def _finish_and_save(onnx_model: onnx.ModelProto, spec, export_options: dict, path: Path) -> None:
    """Metadata, the checker and the TensorRT operator check, then the file (temporary name first)."""
    write_metadata(onnx_model, spec, export_options)
    onnx_model.producer_name = "retina_trt"
    onnx_model.producer_version = __version__
    try:
        onnx.checker.check_model(onnx_model)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"the exported model fails onnx.checker: {err}") from err
    check_trt_compatible(onnx_model, allowed_custom=PLUGIN_NODES)
    with atomic_path(path) as tmp:
        onnx.save(onnx_model, str(tmp))
