"""A real TensorRT in `make test`: TensorRT for RTX parses every export and the project's own
builder builds real engines of the demo model on this CPU-only machine ("CPU-only AOT").

What runs here is TensorRT itself: its ONNX parser and its builder, whose per-layer report gives
the precision every layer runs in. What cannot run here: deserializing or running an engine
(that needs a GPU); the `gpu` tests and `make gpu-check` do that.
"""

from __future__ import annotations

import json

import onnx
import pytest
from conftest import DEMO_MODEL
from retina_trt.calibration import CalibrationConfig, prepare_precision

from retina_trt import export_onnx
from retina_trt.cli import main
from retina_trt.contract import CONTRACT_OUTPUTS
from retina_trt.errors import BackendUnavailableError
from retina_trt.trt import BuildOptions, EngineBuildError, build_engine, read_engine_header
from retina_trt.trt.builder import parse_errors

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is installed by `make` (the trt-rtx extra)")

RTX = "tensorrt_rtx"
CONV_DTYPE = {"fp32": "Float", "fp16": "Half", "int8": "Int8"}


@pytest.fixture(scope="module")
def tiny_exports(tiny_model, onnx_models, artifacts):
    """Every NMS kind of the tiny model: the session's onnx/none exports plus graph, plugin,
    efficient (fixed 256x384), graph with dynamic shapes and a wide batch range."""
    exports = {f"{nms}-{'dynamic' if dyn else 'fixed'}": path for (nms, dyn), path in onnx_models.items()}
    for nms in ("graph", "plugin", "efficient"):
        exports[f"{nms}-fixed"] = export_onnx(tiny_model, artifacts / f"rtx_{nms}.onnx", nms=nms, input_size=(256, 384))
    exports["graph-dynamic-batch1:4:8"] = export_onnx(
        tiny_model, artifacts / "rtx_graph_dyn.onnx", nms="graph", dynamic_shapes=True, batch=(1, 4, 8)
    )
    return exports


def test_every_export_passes_the_real_parser_beyond_the_input(tiny_exports, tiny_model, artifacts):
    """uint8 pixels are cast before any other layer (TensorRT's UINT8 rule), so no export fails
    at the input any more; what TensorRT-RTX cannot parse is only the plugin nodes it lacks."""
    for name, path in tiny_exports.items():
        first = onnx.load(str(path), load_external_data=False).graph.node[0]
        assert first.op_type == "Cast" and first.input[0] == "images", f"{name}: first node {first.op_type}"
        errors = parse_errors(path, RTX)
        if name.startswith(("plugin", "efficient")):
            assert errors and all("plugin" in e.lower() or "Plugin" in e for e in errors), (name, errors)
            assert not any("UInt8" in e for e in errors), (name, errors)
        else:
            assert errors == [], (name, errors)
    assert parse_errors(_deepstream_flavour(tiny_model, artifacts), RTX) == []


def _deepstream_flavour(tiny_model, artifacts):
    """The DeepStream export's graph (float input, no image_sizes, float32 classes) with graph NMS,
    which TensorRT-RTX builds (export-deepstream's ONNX NMS needs TensorRT 10/11)."""
    path = artifacts / "rtx_float.onnx"
    if path.exists():
        return path
    options = {"input_dtype": "float32", "image_sizes_input": False, "classes_dtype": "float32"}
    return export_onnx(tiny_model, path, nms="graph", input_size=(256, 384), **options)


def test_deepstream_flavour_builds_with_float_classes_into_a_plan(tiny_model, artifacts, tmp_path):
    from retina_trt.serving.deepstream import export_deepstream

    onnx_path = _deepstream_flavour(tiny_model, artifacts)
    engine = build_engine(onnx_path, tmp_path / "ds.engine", BuildOptions(flavour=RTX))
    outputs = read_engine_header(engine).build["io"]["outputs"]
    assert [(t["name"], t["dtype"]) for t in outputs] == list(
        zip(CONTRACT_OUTPUTS, ["INT32", "FLOAT", "FLOAT", "FLOAT"])
    )  # the order and types DeepStream's parser reads
    config = export_deepstream(onnx_path, tmp_path / "ds", engine=engine)
    assert "model-engine-file=model.plan" in config.read_text()
    assert (tmp_path / "ds" / "model.plan").stat().st_size > 0


def test_rtx_refuses_nms_it_cannot_build_with_the_alternative(tiny_exports, tmp_path):
    for nms in ("onnx", "plugin", "efficient"):
        with pytest.raises(EngineBuildError, match="cannot build.*nms='graph'"):
            build_engine(tiny_exports[f"{nms}-fixed"], tmp_path / f"{nms}.engine", BuildOptions(flavour=RTX))
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def demo_graph(artifacts):
    return export_onnx(DEMO_MODEL, artifacts / "demo_graph.onnx", nms="graph")


@pytest.fixture(scope="module")
def demo_prepared(demo_graph, artifacts, tmp_path_factory):
    """The demo model's graph-NMS export at FP32, FP16 and INT8 (Model Optimizer Q/DQ)."""
    cache = tmp_path_factory.mktemp("precision-cache")
    calibration = CalibrationConfig(source="synthetic", num_images=16, batch_size=8)
    prepared = {"fp32": demo_graph}
    for precision in ("fp16", "int8"):
        prepared[precision] = prepare_precision(
            demo_graph, precision, artifacts / f"demo_graph.{precision}.onnx", calibration=calibration, cache_dir=cache
        ).path
    return prepared


def _assert_contract_io(header, *, batch=-1, hw=(256, 256)):
    io = header.build["io"]
    assert [(t["name"], t["dtype"]) for t in io["inputs"]] == [("images", "UINT8"), ("image_sizes", "INT32")]
    assert io["inputs"][0]["shape"] == [batch, *hw, 3]
    d = header.spec.detections_per_img
    assert [(t["name"], t["dtype"], t["shape"]) for t in io["outputs"]] == [
        (CONTRACT_OUTPUTS[0], "INT32", [batch, 1]),
        (CONTRACT_OUTPUTS[1], "FLOAT", [batch, d, 4]),
        (CONTRACT_OUTPUTS[2], "FLOAT", [batch, d]),
        (CONTRACT_OUTPUTS[3], "INT32", [batch, d]),
    ]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_project_builder_builds_real_engines_in_each_precision(demo_prepared, precision, tmp_path):
    """Every convolution runs in the requested precision and the postprocess (decode, NMS) stays
    FP32, by TensorRT's own build report; the engine's I/O is the contract."""
    onnx_model = onnx.load(str(demo_prepared[precision]), load_external_data=False)
    num_convs = sum(1 for n in onnx_model.graph.node if n.op_type == "Conv")
    path = build_engine(
        demo_prepared[precision], tmp_path / f"demo.{precision}.engine", BuildOptions(flavour=RTX, batch=(1, 4, 8))
    )
    header = read_engine_header(path)
    assert header.tensorrt_flavour == RTX and header.tensorrt_version == trt.__version__
    assert header.device_name is None and header.compute_capability is None  # built without a GPU
    assert header.targets == ((8, 0), (8, 6), (8, 9), (12, 0), (12, 1))
    assert header.precision == precision and header.nms == "graph"
    summary = header.layer_precisions
    assert summary["convolutions"] == {CONV_DTYPE[precision]: num_convs}, summary
    assert summary["postprocess_layers"] > 0
    assert not set(summary["postprocess_output_dtypes"]) & {"Half", "Int8"}, summary
    assert header.build["precision_problems"] == []
    assert header.build["batch"] == [1, 4, 8]
    _assert_contract_io(header)
    assert header.plan_size > 1_000_000


def test_dynamic_shape_engine_and_targets(artifacts, tmp_path):
    source = export_onnx(DEMO_MODEL, artifacts / "demo_graph_dynamic.onnx", nms="graph", dynamic_shapes=True)
    options = BuildOptions(
        flavour=RTX, min_hw=(128, 128), opt_hw=(256, 256), max_hw=(384, 512), compute_capabilities=((8, 6),)
    )
    header = read_engine_header(build_engine(source, tmp_path / "dynamic.engine", options))
    assert header.targets == ((8, 6),) and header.input_size is None
    assert header.build["profile"]["images"] == [[1, 128, 128, 3], [1, 256, 256, 3], [8, 384, 512, 3]]
    assert set(header.layer_precisions["convolutions"]) == {"Float"}
    _assert_contract_io(header, hw=(-1, -1))


def test_build_engine_cli_writes_a_real_engine_and_says_it_cannot_run_it(tmp_path, capsys):
    output = tmp_path / "demo.engine"
    args = [
        "build-engine",
        "--weights",
        str(DEMO_MODEL),
        "--precision",
        "fp16",
        "--output",
        str(output),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--tensorrt",
        RTX,
        "--compute-capability",
        "8.6,8.9",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "TensorRT-RTX" in out and "convolutions: 78 Half" in out and "cannot run it" in out
    header = read_engine_header(output)
    assert header.nms == "graph" and header.targets == ((8, 6), (8, 9))  # the default NMS for TensorRT-RTX
    assert main(["info", str(output)]) == 0
    info = capsys.readouterr().out
    assert "TensorRT-RTX" in info and "8.6, 8.9" in info and "78 Half" in info and "nms=graph" in info
    # a route TensorRT-RTX cannot carry: one line naming the alternative, exit 2, nothing written
    assert main([*args[:-4], "--tensorrt", RTX, "--nms", "onnx", "--output", str(tmp_path / "x.engine")]) == 2
    assert "--nms graph" in capsys.readouterr().err
    assert not (tmp_path / "x.engine").exists()


def test_loading_an_engine_without_a_gpu_is_one_clear_line(demo_prepared, image_dir, tmp_path, capsys):
    from retina_trt import Detector

    path = build_engine(demo_prepared["fp32"], tmp_path / "demo.engine", BuildOptions(flavour=RTX))
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        Detector(path)
    assert main(["detect", str(path), str(image_dir), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0]


def test_engine_header_records_the_build(demo_prepared, tmp_path):
    path = build_engine(demo_prepared["fp16"], tmp_path / "demo.engine", BuildOptions(flavour=RTX))
    raw = read_engine_header(path).raw
    assert raw["tensorrt_flavour"] == RTX and raw["precision"] == "fp16"
    assert raw["build"]["layer_precisions"]["convolutions"] == {"Half": 78}
    json.dumps(raw)  # plain JSON
