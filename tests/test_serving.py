"""Triton model repositories (config.pbtxt validated with tritonclient's model-config protobuf),
the Triton client sample's request/response handling, and the DeepStream nvinfer export."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_SPEC

from retina_trt import Detector, export_onnx
from retina_trt.cli import main
from retina_trt.contract.engine_file import make_header, write_engine
from retina_trt.contract.onnx_metadata import read_metadata
from retina_trt.spec import ModelSpec

SAMPLES = Path(__file__).parent.parent / "samples"


def _parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)  # raises on anything the schema does not know
    return config


def test_triton_repository_for_onnx(onnx_models, tmp_path, capsys):
    model = onnx_models[("onnx", False)]
    assert main(["export-triton", str(model), "--repo", str(tmp_path / "repo"), "--name", "retina"]) == 0
    config = _parse_config(tmp_path / "repo" / "retina" / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert [i.name for i in config.input] == ["images", "image_sizes"]
    assert list(config.input[0].dims) == [256, 384, 3]
    assert [o.name for o in config.output] == [
        "num_detections",
        "detection_boxes",
        "detection_scores",
        "detection_classes",
    ]
    assert list(config.output[1].dims) == [TINY_SPEC.detections_per_img, 4]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.instance_group[0].kind == config.instance_group[0].KIND_CPU
    assert ModelSpec.from_json(config.parameters["retina_trt.spec"].string_value) == TINY_SPEC
    assert (tmp_path / "repo" / "retina" / "1" / "model.onnx").read_bytes() == model.read_bytes()
    # an existing entry is not replaced silently
    assert main(["export-triton", str(model), "--repo", str(tmp_path / "repo"), "--name", "retina"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export-triton", str(model), "--repo", str(tmp_path / "repo"), "--name", "retina", "--overwrite"]) == 0
    assert (
        main(
            [
                "export-triton",
                str(model),
                "--repo",
                str(tmp_path / "repo"),
                "--name",
                "r2",
                "--max-queue-delay-us",
                "-1",
            ]
        )
        == 2
    )
    assert not (tmp_path / "repo" / "r2").exists()


def test_triton_repository_for_the_python_backend(onnx_models, tmp_path, capsys):
    """--backend python: the same contract, served by Triton's Python backend (retina-trt serve)."""
    model = onnx_models[("onnx", False)]
    repo = tmp_path / "repo"
    assert (
        main(
            [
                "export-triton",
                str(model),
                "--repo",
                str(repo),
                "--name",
                "retina",
                "--backend",
                "python",
                "--max-batch",
                "4",
            ]
        )
        == 0
    )
    config = _parse_config(repo / "retina" / "config.pbtxt")
    assert config.backend == "python" and not config.platform and config.max_batch_size == 4
    assert [i.name for i in config.input] == ["images", "image_sizes"]
    version = repo / "retina" / "1"
    assert (version / "model.onnx").read_bytes() == model.read_bytes()
    assert "class TritonPythonModel" in (version / "model.py").read_text()
    assert main(["export-triton", str(model), "--repo", str(repo), "--name", "r2", "--max-batch", "9"]) == 2
    assert "max_batch must be in 1..8" in capsys.readouterr().err


def test_triton_repository_for_an_engine_strips_the_header(tmp_path):
    plan = b"raw tensorrt plan bytes" * 4
    header = make_header(
        spec=TINY_SPEC,
        tensorrt_version="10.13.3.9",
        device_name="NVIDIA L4",
        compute_capability=(8, 9),
        precision="fp16",
        onnx_sha256="0" * 64,
        export={"nms": "onnx", "input_size": None},
        build={"batch": [1, 2, 4]},
        plan=plan,
    )
    engine = write_engine(tmp_path / "m.engine", header, plan)
    assert main(["export-triton", str(engine), "--repo", str(tmp_path / "repo"), "--instances", "2"]) == 0
    config = _parse_config(tmp_path / "repo" / "m" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 4
    assert list(config.input[0].dims) == [-1, -1, 3]
    assert config.instance_group[0].count == 2 and config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    assert config.parameters["retina_trt.tensorrt_version"].string_value == "10.13.3.9"
    assert (tmp_path / "repo" / "m" / "1" / "model.plan").read_bytes() == plan


def test_triton_client_sample_builds_requests_and_reads_the_contract(onnx_models, images):
    """The request/response code of samples/triton_client.py against the ONNX model's own outputs
    (no Triton server runs here)."""
    import onnxruntime as ort
    import tritonclient.grpc as grpcclient

    sys.path.insert(0, str(SAMPLES))
    import triton_client

    model = onnx_models[("onnx", False)]
    config = {
        "parameters": {"retina_trt.spec": {"string_value": TINY_SPEC.to_json()}},
        "input": [{"dims": ["256", "384", "3"]}],
    }
    spec, size = triton_client.spec_from_config(config)
    assert spec == TINY_SPEC and size == (256, 384)
    from retina_trt.image import preprocess_batch

    batch = preprocess_batch(
        images[:2], min_size=spec.min_size, max_size=spec.max_size, size_divisible=spec.size_divisible, input_size=size
    )
    inputs = triton_client.build_inputs(grpcclient, batch)
    assert [i.name() for i in inputs] == ["images", "image_sizes"]
    assert inputs[0].shape() == [2, 256, 384, 3] and inputs[0].datatype() == "UINT8"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    arrays = dict(
        zip(
            triton_client.OUTPUTS,
            session.run(list(triton_client.OUTPUTS), {"images": batch.pixels, "image_sizes": batch.image_sizes}),
        )
    )
    got = triton_client.to_detections(arrays, batch, spec)
    with Detector(model, backend="onnxruntime") as det:
        want = det.predict_batch(images[:2])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.boxes_xyxy, w.boxes_xyxy, atol=1e-4)
        np.testing.assert_array_equal(g.class_ids, w.class_ids)


def test_float_single_input_export_is_valid_onnx(tiny_model, tmp_path):
    path = export_onnx(
        tiny_model, tmp_path / "f.onnx", input_dtype="float32", image_sizes_input=False, input_size=(256, 384)
    )
    meta = read_metadata(path)
    assert meta.export["inputs"] == ["images"] and meta.export["input_format"] == "float32 BGR"
    with pytest.raises(ValueError, match="input_dtype"):
        export_onnx(tiny_model, tmp_path / "g.onnx", input_dtype="float16")
    assert meta.export["outputs"][0] == "num_detections"
    # Triton config and the TensorRT profile follow the export's own inputs: float images, no image_sizes
    assert main(["export-triton", str(path), "--repo", str(tmp_path / "repo"), "--name", "f"]) == 0
    config = _parse_config(tmp_path / "repo" / "f" / "config.pbtxt")
    from tritonclient.grpc import model_config_pb2

    assert [(i.name, i.data_type) for i in config.input] == [("images", model_config_pb2.TYPE_FP32)]
    from retina_trt.trt import BuildOptions
    from retina_trt.trt.builder import profile_shapes

    assert set(profile_shapes(meta, BuildOptions())) == {"images"}


def test_triton_overwrite_replaces_only_the_version_written_and_names_are_checked(onnx_models, tmp_path, capsys):
    model, repo = onnx_models[("onnx", False)], tmp_path / "repo"
    assert main(["export-triton", str(model), "--repo", str(repo), "--name", "retina"]) == 0
    assert (
        main(["export-triton", str(model), "--repo", str(repo), "--name", "retina", "--version", "2", "--overwrite"])
        == 0
    )
    assert (repo / "retina" / "1" / "model.onnx").is_file() and (repo / "retina" / "2" / "model.onnx").is_file()
    assert (
        main(["export-triton", str(model), "--repo", str(repo), "--name", "retina", "--version", "2", "--overwrite"])
        == 0
    )
    assert sorted(p.name for p in (repo / "retina").iterdir()) == ["1", "2", "config.pbtxt", "labels.txt"]
    for bad in ("..", ".", "a/b", "-x", "has space"):
        assert main(["export-triton", str(model), "--repo", str(repo), f"--name={bad}"]) == 2
        assert "invalid Triton model name" in capsys.readouterr().err
    assert sorted(p.name for p in repo.iterdir()) == ["retina"]  # nothing else created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
