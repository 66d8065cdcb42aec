"""A DeepStream ``nvinfer`` configuration for a retina_trt model.

``retina-trt export-deepstream MODEL --out DIR`` writes ``DIR/config_infer_primary_retina_trt.txt``,
``DIR/labels.txt`` and ``DIR/model.onnx`` (and ``DIR/model.plan`` with ``--engine``).

nvinfer feeds one float input tensor and no per-image sizes, so the ONNX for DeepStream is exported
with ``input_dtype="float32"`` (raw 0-255 BGR values, NHWC; the graph still normalizes) and without
the ``image_sizes`` input (``maintain-aspect-ratio=1`` and ``symmetric-padding=0``: nvinfer pads
bottom/right like retina_trt; boxes are clipped to the network input before NMS, not to the
picture, so on letterboxed frames boxes reaching into the padding can differ from ``Detector``'s:
docs/serving.md#deepstream). Everything else is the regular export: the output
contract with NMS inside the engine, hence ``cluster-mode=4`` (no clustering in nvinfer).

**Precision lives in the ONNX.** nvinfer's ``network-mode=1/2`` builds weakly typed with TensorRT's
INT8/FP16 flags, which would also run the postprocess (``exp`` of the box decoding, the 0.05
score threshold, NMS) in reduced precision, and TensorRT 11 has no such flags at all. So
``--precision fp16/int8`` ships the prepared ONNX (``retina_trt.calibration``: FP16 network with
FP32 postprocess, or INT8 Q/DQ) and the config says ``network-mode=0``: TensorRT takes the
precisions the graph states.

**The bbox parser ships with DeepStream.** ``NvDsInferParseYoloV5CustomBatchedNMSTLT`` in
DeepStream's own ``libnvds_infercustomparser.so`` (source:
``sources/libs/nvdsinfer_customparser/nvdsinfer_custombboxparser.cpp``) reads four outputs by
position: the keep count (int32), boxes (float32 ``x1, y1, x2, y2`` in network-input pixels),
scores (float32) and classes (float32). That is the contract's order with pixel boxes, so the
DeepStream export differs only in ``detection_classes``, cast to float32 at the end of the graph
(``export_onnx(classes_dtype="float32")``). The parser drops scores below class 0's
``pre-cluster-threshold`` and classes at or above ``num-detected-classes``, clips boxes to
``width - 1`` and ``height - 1``, and stops after about 200 objects, so ``detections_per_img`` is
capped at 200 (``MAX_DETECTIONS``). ``NvDsInferParseCustomBatchedNMSTLT`` in the same library
multiplies boxes by the network size (normalised boxes) and does not fit. docs/serving.md says
what was checked here and what was not.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from retina_trt.contract import CONTRACT_OUTPUTS
from retina_trt.contract.engine_file import read_engine_header, read_plan
from retina_trt.contract.onnx_metadata import read_metadata
from retina_trt.errors import ModelFormatError
from retina_trt.utils import atomic_path, check_output_file, refuse_overlap

CONFIG_NAME = "config_infer_primary_retina_trt.txt"
PRECISIONS = ("fp32", "fp16", "int8")  # what model.onnx can be prepared in
NETWORK_MODE = 0  # FP32 flags only: the prepared graph states its own precisions
PARSER_FUNCTION = "NvDsInferParseYoloV5CustomBatchedNMSTLT"
PARSER_LIBRARY = "/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so"
MAX_DETECTIONS = 200  # the parser's keep_top_k


def check_deepstream_onnx(path: Path):
    """The metadata of a DeepStream ONNX (one float input, fixed size), or ModelFormatError."""
    meta = read_metadata(path)
    if meta.info.inputs != ("images",) or not meta.info.float_input:
        raise ModelFormatError(
            f"{path} takes uint8 images and image_sizes; DeepStream needs the single float input export: "
            "pass the checkpoint (.pt) to export-deepstream instead"
        )
    if meta.input_size is None:
        raise ModelFormatError(f"{path} has dynamic H and W; export-deepstream needs a fixed input size")
    if meta.info.output_dtype("detection_classes") != np.float32:
        raise ModelFormatError(
            f"{path} has int32 detection_classes; DeepStream's parser reads float32: "
            "pass the checkpoint (.pt) to export-deepstream to re-export it"
        )
    if meta.spec.detections_per_img > MAX_DETECTIONS:
        raise ModelFormatError(
            f"{path} keeps {meta.spec.detections_per_img} detections per image; DeepStream's parser keeps "
            f"{MAX_DETECTIONS}: pass the checkpoint (.pt) to export-deepstream, which caps it"
        )
    return meta


def export_deepstream(
    onnx: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    batch: int = 1,
    engine: str | os.PathLike | None = None,
    gie_id: int = 1,
) -> Path:
    """Write the nvinfer config and labels beside a DeepStream ONNX (see the module docstring).

    The writer takes an export, as ``export_triton`` does: ``retina_trt.pipeline.deepstream_onnx``
    (what ``retina-trt export-deepstream`` runs) exports a checkpoint and prepares its precision.

    Args:
        onnx: an ONNX exported with ``input_dtype="float32"``, ``image_sizes_input=False`` and a
            fixed input size; copied to ``out_dir/model.onnx`` unless it is that file.
        batch: nvinfer's batch size.
        engine: a retina_trt engine built from that ONNX; its raw plan becomes ``model.plan``.

    Returns:
        The config file's path.
    """
    if int(batch) < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    onnx, out = Path(onnx), Path(out_dir)
    check_outputs(out, onnx, engine)
    meta = check_deepstream_onnx(onnx)
    onnx_path = out / "model.onnx"
    if onnx.resolve() != onnx_path.resolve():
        with atomic_path(onnx_path) as tmp:
            shutil.copyfile(onnx, tmp)
    lines = _header_lines(meta, gie_id)
    if engine is not None:
        _write_plan(Path(engine), out)
        lines.append("model-engine-file=model.plan")
    lines += _property_lines(meta, batch)
    with atomic_path(out / "labels.txt") as tmp:
        tmp.write_text("\n".join(meta.spec.class_names) + "\n")
    config = out / CONFIG_NAME
    with atomic_path(config) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return config


def check_outputs(out: Path, model, engine=None, calibration=None) -> None:
    """Before any work: ``out`` can be written, and none of the files written there is an input
    (``model`` may be ``out/model.onnx`` itself: it is then kept as it is)."""
    check_output_file(out / CONFIG_NAME, "--out")
    written = [("--out", out / name) for name in ("model.plan", "labels.txt", CONFIG_NAME)]
    inputs = [model, engine, calibration]
    refuse_overlap(written, inputs, folders=[calibration])
    refuse_overlap([("--out", out / "model.onnx")], inputs[1:], folders=[calibration])


def _write_plan(engine: Path, out: Path) -> None:
    header = read_engine_header(engine)
    if header.info.inputs != ("images",):
        raise ModelFormatError(f"{engine} was not built from a DeepStream ONNX (it has the image_sizes input)")
    if header.info.output_dtype("detection_classes") != np.float32:
        raise ModelFormatError(
            f"{engine} has int32 detection_classes, which DeepStream's parser reads as float: "
            "rebuild it from the model.onnx export-deepstream writes"
        )
    with atomic_path(out / "model.plan") as tmp:
        tmp.write_bytes(read_plan(engine, header))


def _header_lines(meta, gie_id: int) -> list[str]:
    return [
        "# nvinfer configuration written by retina-trt export-deepstream.",
        "# The graph takes raw 0-255 BGR pixels (NHWC, float) and normalizes them itself.",
        f"# model.onnx is {meta.precision.upper()}: its precisions are in the graph (FP32 postprocess), hence",
        "# network-mode=0; nvinfer's FP16/INT8 modes would also lower the postprocess.",
        "# NMS runs inside the engine (cluster-mode=4). The four outputs (count, pixel boxes, scores,",
        "# float classes) are what DeepStream's own NvDsInferParseYoloV5CustomBatchedNMSTLT reads.",
        "[property]",
        "gpu-id=0",
        f"gie-unique-id={gie_id}",
        "onnx-file=model.onnx",
    ]


def _property_lines(meta, batch: int) -> list[str]:
    spec = meta.spec
    height, width = meta.input_size
    return [
        "labelfile-path=labels.txt",
        f"batch-size={batch}",
        f"network-mode={NETWORK_MODE}",
        "network-type=0",
        f"num-detected-classes={spec.num_classes}",
        f"infer-dims=3;{height};{width}",
        "network-input-order=1",
        "model-color-format=1",
        "net-scale-factor=1.0",
        "offsets=0;0;0",
        "maintain-aspect-ratio=1",
        "symmetric-padding=0",
        f"output-blob-names={';'.join(CONTRACT_OUTPUTS)}",
        "cluster-mode=4",
        f"parse-bbox-func-name={PARSER_FUNCTION}",
        f"custom-lib-path={PARSER_LIBRARY}",
        "",
        "[class-attrs-all]",
        f"pre-cluster-threshold={spec.score_thresh}",
        f"topk={spec.detections_per_img}",
    ]
