"""Precision preparation on the CPU: calibration data, FP16 and INT8 ONNX, the precision cache."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
from helpers import TINY_SPEC, count_matched
from retina_trt.calibration import (
    CalibrationConfig,
    CalibrationDataError,
    fp32_island_nodes,
    load_calibration_data,
    prepare_precision,
)

from retina_trt import Detector
from retina_trt.contract.onnx_metadata import read_metadata

SIZE = (256, 384)


@pytest.fixture(scope="module")
def fp32_onnx(onnx_models):
    return onnx_models[("onnx", False)]


@pytest.fixture(scope="module")
def prepared(demo_onnx, tmp_path_factory):
    """FP16 and INT8 (entropy, 32 synthetic images) versions of the trained demo model."""
    root = tmp_path_factory.mktemp("prepared")
    calibration = CalibrationConfig(source="synthetic", num_images=32, batch_size=8)
    return {
        precision: prepare_precision(
            demo_onnx, precision, root / f"demo.{precision}.onnx", calibration=calibration, cache_dir=root / "cache"
        )
        for precision in ("fp16", "int8")
    }


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def test_islands_are_everything_after_the_last_convolutions(fp32_onnx):
    model = onnx.load(str(fp32_onnx))
    islands = set(fp32_island_nodes(model))
    by_name = {n.name: n for n in model.graph.node}
    assert not any(by_name[n].op_type == "Conv" for n in islands)
    ops = {by_name[n].op_type for n in islands}
    assert {"Sigmoid", "Exp", "TopK", "NonMaxSuppression"} <= ops
    # besides the postprocess, only the head outputs' reshapes (and their shape arithmetic)
    reshaping = {"Reshape", "Transpose", "Identity", "Shape", "Gather", "Unsqueeze", "Concat"}
    assert all(n.startswith("postprocess/") or by_name[n].op_type in reshaping for n in islands)
    # and the normalizer + backbone are not islands
    assert any(n.name.startswith("/normalizer") and n.name not in islands for n in model.graph.node)


def test_calibration_data_from_folder_coco_and_synthetic(image_dir, tmp_path):
    folder = load_calibration_data(image_dir, TINY_SPEC, SIZE, num_images=2, seed=0)
    assert folder.images.shape == (2, *SIZE, 3) and folder.images.dtype == np.uint8
    assert folder.image_sizes.dtype == np.int32
    again = load_calibration_data(image_dir, TINY_SPEC, SIZE, num_images=2, seed=0)
    other = load_calibration_data(image_dir, TINY_SPEC, SIZE, num_images=2, seed=5)
    assert folder.sha256() == again.sha256()
    assert folder.sha256() != other.sha256()  # a different seeded subset/order

    from retina_trt.data.synthetic import SyntheticConfig, generate_dataset

    annotations = generate_dataset(
        tmp_path / "coco",
        num_images=3,
        seed=3,
        split="val",
        config=SyntheticConfig(min_height=64, max_height=64, min_width=64, max_width=96),
    )
    coco = load_calibration_data(annotations, TINY_SPEC, SIZE, num_images=10)
    assert len(coco) == 3  # fewer images than asked: all of them
    synthetic = load_calibration_data("synthetic", TINY_SPEC, SIZE, num_images=3)
    assert len(synthetic) == 3 and synthetic.images.shape[1:3] == SIZE
    assert (synthetic.image_sizes[:, 0] <= SIZE[0]).all()


def test_calibration_data_skips_corrupt_images(image_dir, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for src in sorted(image_dir.glob("*.jpg")):
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    data = load_calibration_data(folder, TINY_SPEC, SIZE, num_images=10)
    assert len(data) == 3 and data.skipped == 1


@pytest.mark.parametrize(
    ("source", "message"),
    [("missing-dir", "not found"), ("empty", "no images"), ("file.txt", "neither an image folder")],
)
def test_calibration_source_errors(source, message, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CalibrationDataError, match=message):
        load_calibration_data(tmp_path / source, TINY_SPEC, SIZE)


def test_fp16_graph_keeps_fp32_islands(prepared):
    result = prepared["fp16"]
    model = onnx.load(str(result.path))
    types = _elem_types(model)
    fp16 = onnx.TensorProto.FLOAT16
    conv_weights = [n.input[1] for n in model.graph.node if n.op_type == "Conv"]
    assert sum(types.get(w) == fp16 for w in conv_weights) > len(conv_weights) // 2
    for node in model.graph.node:
        if node.op_type in ("Sigmoid", "Exp", "NonMaxSuppression"):
            assert all(types.get(i) != fp16 for i in node.input if i), node.name
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.UINT8, onnx.TensorProto.INT32]
    meta = read_metadata(result.path)
    assert meta.precision == "fp16" and meta.spec.num_classes == 6


def test_int8_graph_has_qdq_only_in_the_network(prepared):
    result = prepared["int8"]
    model = onnx.load(str(result.path))
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(q) >= len(convs)  # weights and activations of every convolution
    assert not any(n.name.startswith("postprocess/") for n in q)
    info = read_metadata(result.path).precision_info
    assert info["precision"] == "int8" and info["method"] == "entropy"
    assert info["calibration"]["images"] == 32 and len(info["calibration"]["sha256"]) == 64
    assert "nvidia-modelopt" in info["tools"]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_prepared_models_detect_like_fp32(precision, prepared, demo_onnx):
    """Both run in ONNX Runtime and find the trained FP32 model's confident detections
    (the AP figures of README come from `make precision`)."""
    from retina_trt.data.synthetic import SyntheticConfig, generate_image

    config = SyntheticConfig(min_height=256, max_height=256, min_width=256, max_width=256)
    strong_total = matched = 0
    with Detector(demo_onnx) as ref, Detector(prepared[precision].path) as det:
        for index in range(16):
            image = generate_image(1, index, config)[0]  # the held-out split's images
            m, n = count_matched(ref(image), det(image), min_score=0.4)
            matched, strong_total = matched + m, strong_total + n
    assert strong_total >= 20
    assert matched >= 0.9 * strong_total, (precision, matched, strong_total)


def test_cache_reuses_and_says_why_it_rebuilds(fp32_onnx, tmp_path, caplog):
    cache = tmp_path / "cache"
    calibration = CalibrationConfig(source="synthetic", num_images=4, batch_size=4, method="max")
    run = lambda cal=calibration: prepare_precision(  # noqa: E731
        fp32_onnx, "int8", tmp_path / "m.int8.onnx", calibration=cal, cache_dir=cache
    )
    caplog.set_level(logging.INFO, logger="retina_trt.calibration")
    first = run()
    assert not first.reused
    first_bytes = first.path.read_bytes()
    second = run()
    assert second.reused and second.path.read_bytes() == first_bytes
    assert "reusing" in caplog.text

    caplog.clear()
    changed = run(CalibrationConfig(source="synthetic", num_images=4, batch_size=4, method="max", seed=1))
    assert not changed.reused
    assert "calib_sha256" in caplog.text  # the log names what differs

    # a damaged entry is never used
    seed0 = first.info["calibration"]["sha256"]
    target = next(
        p
        for p in cache.glob("*.onnx")
        if json.loads(p.with_suffix(".json").read_text())["key"]["calib_sha256"] == seed0
    )
    target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
    caplog.clear()
    again = run()
    assert not again.reused and "modified or damaged" in caplog.text
    assert run().reused  # rebuilt and stored again

    # a foreign record (its key does not match the entry's name) is never used
    record_path = target.with_suffix(".json")
    foreign = json.loads(record_path.read_text())
    foreign["key"]["tools"]["onnx"] = "0.0.0"
    record_path.write_text(json.dumps(foreign))
    caplog.clear()
    assert not run().reused and "does not belong" in caplog.text


def test_percentile_method_and_bad_arguments(fp32_onnx, tmp_path):
    result = prepare_precision(
        fp32_onnx,
        "int8",
        tmp_path / "p.onnx",
        calibration=CalibrationConfig(
            source="synthetic", num_images=4, batch_size=4, method="percentile", percentile=99.9
        ),
        cache_dir=tmp_path / "cache",
    )
    info = read_metadata(result.path).precision_info
    assert info["method"] == "percentile" and info["percentile"] == 99.9
    with pytest.raises(ValueError, match="calibration data"):
        prepare_precision(fp32_onnx, "int8", tmp_path / "x.onnx", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="already a prepared"):
        prepare_precision(result.path, "fp16", tmp_path / "y.onnx", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="calibration method"):
        CalibrationConfig(method="kl")
    with pytest.raises(ValueError, match="precision"):
        prepare_precision(fp32_onnx, "int4", tmp_path / "z.onnx")


def test_calibration_sees_the_runtime_preprocessing(image_dir):
    """One implementation: calibration tensors equal the Detector's own preprocessing."""
    from retina_trt.image import preprocess_batch, read_image

    data = load_calibration_data(image_dir, TINY_SPEC, SIZE, num_images=1, seed=0)
    path = sorted(image_dir.glob("*.jpg"))[np.random.default_rng(0).permutation(3)[0]]
    batch = preprocess_batch([read_image(path)], min_size=256, max_size=384, size_divisible=128, input_size=SIZE)
    np.testing.assert_array_equal(data.images[0], batch.pixels[0])
    np.testing.assert_array_equal(data.image_sizes[0], batch.image_sizes[0])


@pytest.mark.parametrize(("nms", "precision"), [("plugin", "fp16"), ("efficient", "int8"), ("graph", "fp16")])
def test_precision_converts_the_network_and_reattaches_nms_unchanged(tiny_model, tmp_path, nms, precision):
    """Exports with NMS are split at the NMS inputs: Model Optimizer converts only the network
    (it cannot run the plugin / EfficientNMS nodes, nor type the graph NMS's Loop), and the NMS
    part comes back node for node, in FP32."""
    from retina_trt.calibration.split import split_at_nms

    from retina_trt import export_onnx
    from retina_trt.export.trt_ops import PLUGIN_NODES, check_trt_compatible

    source = export_onnx(tiny_model, tmp_path / f"{nms}.onnx", nms=nms, input_size=(256, 384))
    _, tail = split_at_nms(onnx.load(str(source)))
    calibration = CalibrationConfig(source="synthetic", num_images=4, batch_size=4)
    path = prepare_precision(
        source, precision, tmp_path / f"{nms}.{precision}.onnx", calibration=calibration, cache_dir=tmp_path / "cache"
    ).path
    model = onnx.load(str(path))
    nodes = {n.name: n for n in model.graph.node}
    for node in tail.nodes:  # the NMS part, unchanged
        assert node.name in nodes and nodes[node.name].op_type == node.op_type
        assert list(nodes[node.name].attribute) == list(node.attribute)
    assert [o.name for o in model.graph.output] == [o.name for o in onnx.load(str(source)).graph.output]
    assert all(t.data_type != onnx.TensorProto.FLOAT16 for t in tail.initializers)
    if precision == "fp16":
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    else:
        assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    check_trt_compatible(model, allowed_custom=PLUGIN_NODES)
    assert read_metadata(path).precision == precision
