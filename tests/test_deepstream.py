"""The DeepStream export: its ONNX, the nvinfer config, and the buffers DeepStream's own bbox
parser reads (no DeepStream here: the parser's reading is reproduced in numpy, citing its source)."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import TINY_SPEC

from retina_trt import Detector, export_onnx, load_checkpoint, save_checkpoint
from retina_trt.cli import main
from retina_trt.contract import CONTRACT_OUTPUTS
from retina_trt.contract.onnx_metadata import read_metadata
from retina_trt.image import boxes_to_original, preprocess_batch
from retina_trt.serving.deepstream import CONFIG_NAME

PARSER_KEEP_TOP_K = 200


class _GError(ctypes.Structure):
    _fields_ = [("domain", ctypes.c_uint32), ("code", ctypes.c_int), ("message", ctypes.c_char_p)]


def _glib():
    glib = ctypes.CDLL(ctypes.util.find_library("glib-2.0") or "libglib-2.0.so.0")
    glib.g_key_file_new.restype = ctypes.c_void_p
    glib.g_key_file_load_from_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    glib.g_key_file_get_groups.restype = ctypes.POINTER(ctypes.c_char_p)
    glib.g_key_file_get_groups.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    glib.g_key_file_get_keys.restype = ctypes.POINTER(ctypes.c_char_p)
    glib.g_key_file_get_keys.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p]
    glib.g_key_file_get_string.restype = ctypes.c_char_p
    glib.g_key_file_get_string.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    return glib


def _strings(array) -> list[str]:
    out, i = [], 0
    while array[i] is not None:
        out.append(array[i].decode())
        i += 1
    return out


def read_key_file(path: Path) -> dict[str, dict[str, str]]:
    """The config as GLib's GKeyFile reads it (nvinfer loads its config with
    ``g_key_file_load_from_file``): group -> key -> string value. Raises on a parse error."""
    glib = _glib()
    key_file = glib.g_key_file_new()
    error = ctypes.POINTER(_GError)()
    if not glib.g_key_file_load_from_file(key_file, str(path).encode(), 0, ctypes.byref(error)):
        raise ValueError(f"GKeyFile refuses {path}: {error.contents.message.decode()}")
    groups = {}
    for group in _strings(glib.g_key_file_get_groups(key_file, None)):
        keys = _strings(glib.g_key_file_get_keys(key_file, group.encode(), None, None))
        groups[group] = {
            k: glib.g_key_file_get_string(key_file, group.encode(), k.encode(), None).decode() for k in keys
        }
    return groups


def parse_like_deepstream(outputs, network_hw, num_classes: int, threshold: float) -> list[tuple]:
    """``NvDsInferParseYoloV5CustomBatchedNMSTLT`` (DeepStream's
    ``sources/libs/nvdsinfer_customparser/nvdsinfer_custombboxparser.cpp``) for one image, in numpy.

    It reads the output layers by position (keep count as int*, boxes, scores and classes as
    float*), skips scores below ``perClassThreshold[0]``, classes at or above
    ``numClassesConfigured`` (cast to unsigned) and inverted boxes, clips x1, y1, x2, y2 to
    ``width - 1`` / ``height - 1``, and loops while it holds no more than ``keep_top_k`` (200).

    Returns [(class_id, score, left, top, width, height)] in network-input pixels.
    """
    count, boxes, scores, classes = (np.asarray(o)[0] for o in outputs)
    height, width = network_hw
    high = np.float32([width - 1, height - 1, width - 1, height - 1])
    objects = []
    for i in range(int(count.reshape(-1)[0])):
        if len(objects) > PARSER_KEEP_TOP_K:
            break
        cls = int(np.uint32(np.int64(classes[i]) & 0xFFFFFFFF))
        if scores[i] < np.float32(threshold) or cls >= num_classes:
            continue
        x1, y1, x2, y2 = boxes[i]
        if x2 < x1 or y2 < y1:
            continue
        left, top, right, bottom = np.clip(boxes[i], np.float32(0), high)
        if right - left < 0 or bottom - top < 0:
            continue
        objects.append((cls, float(scores[i]), left, top, right - left, bottom - top))
    return objects


def _full_frame(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``image`` at the top left of a black ``hw`` frame: a frame with the network's aspect, so no
    letterbox padding, on which the tiny model finds its 100 detections (edges of the picture)."""
    frame = np.zeros((*hw, 3), np.uint8)
    frame[: image.shape[0], : image.shape[1]] = image
    return frame


def _export(args: list[str]) -> int:
    return main(["export-deepstream", *args])


@pytest.fixture(scope="module")
def ds_export(tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds")
    args = [str(tiny_checkpoint), "--out", str(out), "--batch", "4", "--input-size", "256x384", "--precision", "fp32"]
    assert _export(args) == 0
    return out


def test_config_reads_as_a_deepstream_key_file_naming_the_stock_parser(ds_export):
    config = read_key_file(ds_export / CONFIG_NAME)
    prop = config["property"]
    assert prop["parse-bbox-func-name"] == "NvDsInferParseYoloV5CustomBatchedNMSTLT"
    assert prop["custom-lib-path"] == "/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so"
    assert prop["output-blob-names"].split(";") == list(CONTRACT_OUTPUTS)  # the parser's positional order
    assert prop["cluster-mode"] == "4" and prop["network-mode"] == "0" and prop["batch-size"] == "4"
    assert prop["infer-dims"] == "3;256;384" and prop["network-input-order"] == "1"
    labels = (ds_export / prop["labelfile-path"]).read_text().splitlines()
    assert labels == list(TINY_SPEC.class_names)
    assert int(prop["num-detected-classes"]) == len(labels) == TINY_SPEC.num_classes
    assert float(config["class-attrs-all"]["pre-cluster-threshold"]) == TINY_SPEC.score_thresh
    assert int(config["class-attrs-all"]["topk"]) == TINY_SPEC.detections_per_img <= PARSER_KEEP_TOP_K
    bad = ds_export / "bad.txt"
    bad.write_text("[property]\nkey value without equals\n")
    with pytest.raises(ValueError, match="GKeyFile refuses"):  # the check can fail
        read_key_file(bad)


def test_onnx_outputs_are_what_the_parser_reads(ds_export):
    model = onnx.load(str(ds_export / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["images"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    session = ort.InferenceSession(str(ds_export / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(CONTRACT_OUTPUTS)
    outputs = session.run(None, {"images": np.zeros((2, 256, 384, 3), np.float32)})
    assert [o.dtype for o in outputs] == [np.int32, np.float32, np.float32, np.float32]
    assert read_metadata(ds_export / "model.onnx").export["batch"] == [1, 4, 4]


def test_parser_decoding_gives_the_detectors_detections(ds_export, onnx_models, images):
    """The buffers decoded as DeepStream's parser does, mapped back through the letterbox (here a
    scale of 2/3, no padding), are the detections ``Detector`` gives on the main export. With
    padding they may differ: the DeepStream graph has no ``image_sizes`` and clips boxes to the
    network input before NMS, not to the picture (docs/serving.md#deepstream)."""
    image = _full_frame(images[1], (384, 576))
    spec = TINY_SPEC
    batch = preprocess_batch(
        [image],
        min_size=spec.min_size,
        max_size=spec.max_size,
        size_divisible=spec.size_divisible,
        input_size=(256, 384),
    )
    assert tuple(batch.image_sizes[0]) == (256, 384)
    session = ort.InferenceSession(str(ds_export / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": batch.pixels.astype(np.float32)})
    objects = parse_like_deepstream(outputs, (256, 384), TINY_SPEC.num_classes, TINY_SPEC.score_thresh)
    with Detector(onnx_models[("onnx", False)], backend="onnxruntime") as det:
        want = det(image)
    assert len(objects) == len(want) > 0
    sy, sx = batch.scale_factors()[0]
    xyxy = np.array([[left, top, left + w, top + h] for _, _, left, top, w, h in objects], np.float32)
    got = boxes_to_original(xyxy, (sy, sx), tuple(batch.original_sizes[0]))
    # the parser clips to width - 1 and height - 1 of the network input; the Detector to the image
    edge = np.float32([(384 - 1) / sx, (256 - 1) / sy] * 2)
    np.testing.assert_allclose(got, np.minimum(want.boxes_xyxy, edge), atol=1e-3)
    np.testing.assert_array_equal([o[0] for o in objects], want.class_ids)
    np.testing.assert_allclose([o[1] for o in objects], want.scores, atol=1e-5)


def test_frames_filling_the_input_detect_like_the_regular_export(ds_export, onnx_models, images):
    frame = _full_frame(images[0], (256, 384))
    with (
        Detector(ds_export / "model.onnx", backend="onnxruntime") as ds,
        Detector(onnx_models[("onnx", False)], backend="onnxruntime") as regular,
    ):
        a, b = ds(frame), regular(frame)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.boxes_xyxy, b.boxes_xyxy, atol=1e-3)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)


def test_more_than_the_parsers_200_detections_are_capped_with_a_warning(tiny_model, tmp_path, caplog):
    model = load_checkpoint(save_checkpoint(tiny_model, tmp_path / "a.pt"))
    model.spec = dataclasses.replace(model.spec, detections_per_img=300)
    checkpoint = save_checkpoint(model, tmp_path / "many.pt")
    with caplog.at_level(logging.WARNING):
        assert (
            _export(
                [str(checkpoint), "--out", str(tmp_path / "ds"), "--input-size", "256x384"] + ["--precision", "fp32"]
            )
            == 0
        )
    assert "capped at 200" in caplog.text
    assert read_metadata(tmp_path / "ds" / "model.onnx").spec.detections_per_img == PARSER_KEEP_TOP_K
    assert int(read_key_file(tmp_path / "ds" / CONFIG_NAME)["class-attrs-all"]["topk"]) == PARSER_KEEP_TOP_K


def test_onnx_the_parser_cannot_read_is_refused(tiny_model, onnx_models, tmp_path, capsys):
    # the regular two-input export
    assert _export([str(onnx_models[("onnx", False)]), "--out", str(tmp_path / "x")]) == 2
    # a float-input, single-input export with the contract's int32 classes
    path = export_onnx(
        tiny_model, tmp_path / "f.onnx", input_dtype="float32", image_sizes_input=False, input_size=(256, 384)
    )
    assert read_metadata(path).info.output_dtype("detection_classes") == np.int32  # the main contract
    assert _export([str(path), "--out", str(tmp_path / "y")]) == 2
    assert "int32 detection_classes" in capsys.readouterr().err
    with pytest.raises(ValueError, match="classes_dtype"):
        export_onnx(tiny_model, tmp_path / "g.onnx", nms="none", classes_dtype="float32", input_size=(256, 384))


def test_fp16_export_keeps_float_classes_and_network_mode_0(ds_export, tmp_path):
    """FP16: the prepared ONNX (FP16 network, FP32 postprocess), never nvinfer's FP16 mode, which
    would lower the postprocess too; the float classes stay in the FP32 tail."""
    fp16 = tmp_path / "ds16"
    args = [str(ds_export / "model.onnx"), "--out", str(fp16), "--batch", "4", "--precision", "fp16"]
    assert _export(args + ["--cache-dir", str(tmp_path / "cache")]) == 0
    assert read_key_file(fp16 / CONFIG_NAME)["property"]["network-mode"] == "0"
    assert read_metadata(fp16 / "model.onnx").precision == "fp16"
    prepared = onnx.load(str(fp16 / "model.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in prepared.graph.initializer)
    assert prepared.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O types kept
    session = ort.InferenceSession(str(fp16 / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": np.zeros((1, 256, 384, 3), np.float32)})
    assert [o.dtype for o in outputs] == [np.int32, np.float32, np.float32, np.float32]
