import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import TINY_SPEC

from retina_trt import ExportError, ModelSpec, export_onnx
from retina_trt.contract.onnx_metadata import read_metadata
from retina_trt.export.trt_ops import TRT_SUPPORTED_OPS, check_trt_compatible


@pytest.mark.parametrize("nms", ["onnx", "none"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed", "dynamic"])
def test_export_is_valid_and_carries_metadata(onnx_models, nms, dynamic):
    path = onnx_models[(nms, dynamic)]
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    check_trt_compatible(model)
    assert {n.op_type for n in model.graph.node} <= TRT_SUPPORTED_OPS
    meta = read_metadata(path)
    assert meta.spec == TINY_SPEC
    assert meta.nms == nms and meta.export["batch"] == [1, 1, 8]
    assert meta.input_size == (None if dynamic else (256, 384))
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == ["images", "image_sizes"]
    assert inputs["images"].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inputs["images"].type.tensor_type.shape.dim]
    assert dims == (["batch", "height", "width", 3] if dynamic else ["batch", 256, 384, 3])
    ops = {n.op_type for n in model.graph.node}
    assert ("NonMaxSuppression" in ops) == (nms == "onnx")
    assert "TopK" in ops and "Sigmoid" in ops
    # anchors: constants for fixed shapes, computed in the graph (Range) for dynamic ones
    assert ("Range" in ops) == dynamic


def test_output_contract_shapes_and_dtypes(onnx_models):
    sess = ort.InferenceSession(str(onnx_models[("onnx", False)]), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).integers(0, 255, (2, 256, 384, 3), dtype=np.uint8)
    sizes = np.array([[256, 384], [128, 200]], np.int32)
    num, boxes, scores, classes = sess.run(None, {"images": pixels, "image_sizes": sizes})
    d = TINY_SPEC.detections_per_img
    assert num.shape == (2, 1) and num.dtype == np.int32
    assert boxes.shape == (2, d, 4) and boxes.dtype == np.float32
    assert scores.shape == (2, d) and scores.dtype == np.float32
    assert classes.shape == (2, d) and classes.dtype == np.int32
    for i in range(2):
        n = int(num[i, 0])
        assert 0 < n <= d
        assert np.all(scores[i, :n] > TINY_SPEC.score_thresh)
        assert np.all(np.diff(scores[i, :n]) <= 0)
        assert not boxes[i, n:].any() and not scores[i, n:].any() and not classes[i, n:].any()
        assert boxes[i, :n, 2].max() <= sizes[i, 1] and boxes[i, :n, 3].max() <= sizes[i, 0]


def test_dynamic_batch_and_shapes(onnx_models):
    sess = ort.InferenceSession(str(onnx_models[("onnx", True)]), providers=["CPUExecutionProvider"])
    for batch, h, w in [(1, 128, 128), (4, 256, 512), (2, 384, 256)]:
        pixels = np.zeros((batch, h, w, 3), np.uint8)
        sizes = np.tile(np.array([[h, w]], np.int32), (batch, 1))
        num, boxes, _, _ = sess.run(None, {"images": pixels, "image_sizes": sizes})
        assert num.shape == (batch, 1) and boxes.shape == (batch, TINY_SPEC.detections_per_img, 4)


def test_bad_arguments(tiny_model, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match="nms must be one of"):
        export_onnx(tiny_model, out, nms="fast")
    with pytest.raises(ValueError, match="min <= opt <= max"):
        export_onnx(tiny_model, out, batch=(4, 2, 8))
    with pytest.raises(ValueError, match="multiples of the model's size_divisible"):
        export_onnx(tiny_model, out, input_size=(300, 400))
    with pytest.raises(ValueError, match="not both"):
        export_onnx(tiny_model, out, input_size=(256, 256), dynamic_shapes=True)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_model, out, input_size=(256, 256), opset=9)
    assert not any(tmp_path.iterdir()), "a failed export leaves nothing behind"


def test_export_from_checkpoint_path_and_opset(tiny_checkpoint, tmp_path):
    path = export_onnx(
        tiny_checkpoint, tmp_path / "m.onnx", input_size=(128, 128), nms="none", opset=13, simplify=False
    )
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 13
    assert json.loads({p.key: p.value for p in model.metadata_props}["retina_trt.export"])["simplified"] is False
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_trt_check_rejects_unsupported_operators():
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Unique", ["x"], ["u"], name="bad_unique"),
            onnx.helper.make_node("TopK", ["x", "k"], ["v", "i"], name="big_topk"),
        ],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [5000])],
        [onnx.helper.make_tensor_value_info("u", onnx.TensorProto.FLOAT, None)],
        initializer=[onnx.numpy_helper.from_array(np.array([4000], np.int64), "k")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    with pytest.raises(ExportError, match=r"bad_unique: Unique(.|\n)*big_topk: TopK K=4000"):
        check_trt_compatible(model)


def test_group_norm_and_p5_variant_exports(tmp_path):
    from retina_trt import RetinaNet

    spec = ModelSpec(backbone="resnet18", num_classes=2, fpn_channels=64, head_norm="group_norm", p6_from="p5")
    path = export_onnx(RetinaNet(spec), tmp_path / "gn.onnx", input_size=(128, 128))
    check_trt_compatible(onnx.load(str(path)))
