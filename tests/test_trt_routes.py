"""The TensorRT 10/11 build and load routes, run as far as the real bindings allow on this machine
(issue #15's findings, each with a test that failed before its fix).

* Under the real TensorRT 10.x / 11.x bindings over stub libraries (tests/trt_bindings.py), the
  builder's ``build_engine`` / ``parse_errors`` and the runtime's ``TensorRTBackend`` run in a
  subprocess (tests/trt_route_probe.py); a recording seam (tests/trt_seam.py) logs the binding
  calls they make, in order, until the first native call a stub cannot serve (``Builder`` /
  ``Runtime`` creation, the plugin registry).
* Under the real TensorRT-RTX, the runtime's load path runs up to ``deserialize_cuda_engine``,
  which needs a CUDA driver this machine lacks; the engine I/O check runs on the tensors of a
  network the real parser produced.
What runs on a GPU (deserialization, CUDA graphs, the setters) is in tests/test_trt_gpu.py and
``make gpu-check``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from trt_bindings import BINDINGS, BindingsMissing, bindings_env
from trt_seam import Watched, first, skip_calls

from retina_trt import export_onnx
from retina_trt.contract import NMS_CHOICES, ExportInfo
from retina_trt.contract.engine_file import make_header, write_engine
from retina_trt.contract.onnx_metadata import read_metadata
from retina_trt.errors import ModelFormatError
from retina_trt.trt import runtime as trt_runtime
from retina_trt.trt.builder import BuildOptions, profile_shapes

PROBE = Path(__file__).with_name("trt_route_probe.py")
NOT_A_PLAN = b"not a plan: nothing deserializes it on this machine"


@pytest.fixture(scope="module")
def exports(tiny_model, onnx_models, artifacts) -> dict[str, Path]:
    """One fixed-size (256x384) export of the tiny model per NMS kind."""
    found = {"onnx": onnx_models[("onnx", False)], "none": onnx_models[("none", False)]}
    for nms in ("graph", "plugin", "efficient"):
        found[nms] = export_onnx(tiny_model, artifacts / f"routes_{nms}.onnx", nms=nms, input_size=(256, 384))
    assert set(found) == set(NMS_CHOICES)
    return found


def engine_file(onnx_path: Path, out: Path, *, flavour: str, version: str, version_compatible: bool = False) -> Path:
    """An engine file whose header is what ``build_engine`` records for ``onnx_path``; its plan is
    not a TensorRT plan (nothing here can deserialize one)."""
    meta = read_metadata(onnx_path)
    shapes = profile_shapes(meta, BuildOptions(batch=(1, 1, 2)))
    build = {
        "batch": [s[0] for s in shapes["images"]],
        "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
        "version_compatible": version_compatible,
    }
    header = make_header(
        spec=meta.spec,
        tensorrt_flavour=flavour,
        tensorrt_version=version,
        device_name=None,
        compute_capability=(8, 6),
        precision=meta.precision,
        onnx_sha256="0" * 64,
        export=meta.export,
        build=build,
        plan=NOT_A_PLAN,
    )
    return write_engine(out, header, NOT_A_PLAN)


@pytest.fixture(scope="module", params=sorted(BINDINGS))
def routes(request, exports, tmp_path_factory):
    """What the builder and runtime called, per route, under the real {10, 11}.x bindings."""
    major = request.param
    try:
        env = bindings_env(major)
    except BindingsMissing as err:
        pytest.fail(str(err))
    tmp = tmp_path_factory.mktemp(f"routes{major}")
    version = BINDINGS[major][1]
    plan = {
        "builds": {"plugin": str(exports["plugin"]), "efficient": str(exports["efficient"])},
        "parses": {"efficient": str(exports["efficient"])},
        "loads": {
            nms: {
                "engine": str(
                    engine_file(
                        path, tmp / f"{nms}.engine", flavour="tensorrt", version=version, version_compatible=True
                    )
                ),
                "device": 1,
            }
            for nms, path in exports.items()
        },
        "acquire_device": 1,
    }
    (tmp / "plan.json").write_text(json.dumps(plan))
    result = subprocess.run(
        [sys.executable, str(PROBE), str(tmp / "plan.json")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return major, json.loads(result.stdout.strip().splitlines()[-1])


def names(route: dict) -> list[str]:
    return [name for name, _ in route["calls"]]


def test_plugin_build_registers_the_plugin_in_the_registry_after_tensorrts_own(routes):
    """Findings 1, 2, 4: the builder imports the registration (no "install triton"), registers
    TensorRT's plugins, then ours non-lazily: tensorrt.plugin writes the creators into the plugin
    registry (get_plugin_registry), where the ONNX parser looks them up. Lazy registration never
    touches the registry; the parser would then fail with "plugin not found"."""
    major, data = routes
    route = data["build:plugin"]
    called = names(route)
    assert called[0] == "init_libnvinfer_plugins", route
    assert first(route["calls"], "get_plugin_registry") > 0, route
    assert "install triton" not in (route["error"] or "")
    # The stub registry is None: registration stops there, before a Builder exists.
    assert "Builder" not in called and "NoneType" in route["error"], route


@pytest.mark.parametrize("route_name", ["build:efficient", "parse:efficient"])
def test_efficientnms_parsing_is_preceded_by_init_plugins(routes, route_name):
    """Finding 4: EfficientNMS_TRT is only in the registry after init_libnvinfer_plugins, which
    comes before the Builder (and so before the parser) on both the build and parse routes."""
    _, data = routes
    route = data[route_name]
    called = names(route)
    assert called[:2] == ["init_libnvinfer_plugins", "Builder"], route
    assert "get_plugin_registry" not in called  # no retina_trt plugin node in this export
    assert "nullptr" in route["error"], route  # the stub's createInferBuilder: where it ends here


@pytest.mark.parametrize("nms", NMS_CHOICES)
def test_every_nms_kind_loads_up_to_the_runtime(routes, nms):
    """Findings 8, 4, 12: engines of every NMS kind are loaded (none refused by kind); the device
    is set first, TensorRT's plugins are registered before the Runtime deserializes, and no
    Python plugin registration is needed (AOT plugin engines carry their kernels)."""
    _, data = routes
    route = data[f"load:{nms}"]
    called = names(route)
    assert route["calls"][0] == ["cudaSetDevice", [1]], route
    assert called[1:] == ["init_libnvinfer_plugins", "Runtime"], route
    assert "nullptr" in route["error"], route  # the stub's createInferRuntime


def test_worker_thread_sets_its_device_before_taking_a_context(routes):
    """Finding 12: a worker thread's first call selects the Detector's device."""
    _, data = routes
    assert data["acquire"]["calls"] == [["cudaSetDevice", [1]], ["acquired", [True]]]


def _rtx():
    return pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is installed by `make`")


@pytest.mark.parametrize("version_compatible", [True, False])
def test_version_compatible_engine_allows_host_code_before_deserializing(
    exports, tmp_path, monkeypatch, version_compatible
):
    """Finding 5, with the real TensorRT-RTX Runtime: a version-compatible plan carries host code,
    which the runtime must allow before deserialize_cuda_engine. Deserialization itself needs a
    CUDA driver; here it returns None and the load ends with a clear error."""
    rtx = _rtx()
    log: list = []
    real_runtime = rtx.Runtime
    monkeypatch.setattr(rtx, "Runtime", lambda logger: Watched(real_runtime(logger), "Runtime", log))
    monkeypatch.setattr(trt_runtime, "cuda_device", lambda index=None: ("no GPU (seam)", (8, 6)))
    cudart = trt_runtime.import_cudart()
    monkeypatch.setattr(trt_runtime, "import_cudart", lambda: skip_calls(cudart, ["cudaSetDevice"], log))
    path = engine_file(
        exports["graph"],
        tmp_path / "graph.engine",
        flavour="tensorrt_rtx",
        version=rtx.__version__,
        version_compatible=version_compatible,
    )
    with pytest.raises(ModelFormatError, match="could not deserialize"):
        trt_runtime.TensorRTBackend(path)
    allowed = first(log, "Runtime.engine_host_code_allowed=")
    deserialize = first(log, "Runtime.deserialize_cuda_engine")
    assert deserialize > 0, log
    if version_compatible:
        assert 0 < allowed < deserialize and log[allowed][1] == [True], log
    else:
        assert allowed == -1, log


def _parsed_io(onnx_path: Path) -> dict[str, tuple[bool, np.dtype]]:
    """Name -> (is input, dtype) of the network TensorRT-RTX's real parser makes of ``onnx_path``."""
    rtx = _rtx()
    from retina_trt.trt.compat import make_logger, network_flags

    logger = make_logger(rtx)
    builder = rtx.Builder(logger)
    network = builder.create_network(network_flags(rtx))
    parser = rtx.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path))
    tensors = [(network.get_input(i), True) for i in range(network.num_inputs)]
    tensors += [(network.get_output(i), False) for i in range(network.num_outputs)]
    return {t.name: (is_input, np.dtype(rtx.nptype(t.dtype))) for t, is_input in tensors}


def test_engine_tensors_are_checked_against_the_header_contract(tiny_model, exports, artifacts):
    """Finding 7: a float32-input (DeepStream) network under a uint8 header is refused; each
    network matches its own export's contract."""
    float_export = export_onnx(
        tiny_model,
        artifacts / "routes_float.onnx",
        nms="graph",
        input_size=(256, 384),
        input_dtype="float32",
        image_sizes_input=False,
        classes_dtype="float32",
    )
    uint8_io, float_io = _parsed_io(exports["graph"]), _parsed_io(float_export)
    uint8_meta, float_meta = read_metadata(exports["graph"]), read_metadata(float_export)
    inputs, outputs, dtypes = trt_runtime.check_io(uint8_io, uint8_meta.info, "uint8.engine")
    assert inputs == ["images", "image_sizes"] and dtypes["images"] == np.uint8
    inputs, _, dtypes = trt_runtime.check_io(float_io, float_meta.info, "float.engine")
    assert inputs == ["images"] and dtypes["images"] == np.float32
    assert dtypes["detection_classes"] == np.float32  # DeepStream's parser reads float classes
    int_classes = ExportInfo.from_record({**float_meta.info.record, "classes_dtype": "int32"})
    with pytest.raises(ModelFormatError, match=r"'detection_classes' is an output of float32, the contract says"):
        trt_runtime.check_io(float_io, int_classes, "float.engine")
    with pytest.raises(ModelFormatError, match=r"tensors .* are not the contract's"):
        trt_runtime.check_io(float_io, uint8_meta.info, "float.engine")  # no image_sizes
    with pytest.raises(ModelFormatError, match=r"'images' is an input of float32, the contract says an input of uint8"):
        trt_runtime.check_io({**float_io, "image_sizes": uint8_io["image_sizes"]}, uint8_meta.info, "float.engine")
    swapped = {**uint8_io, "num_detections": (True, uint8_io["num_detections"][1])}
    with pytest.raises(ModelFormatError, match="'num_detections' is an input"):
        trt_runtime.check_io(swapped, uint8_meta.info, "odd.engine")


def test_cuda_graphs_are_not_captured_for_data_dependent_shapes():
    """Finding 6: nms="onnx" engines (INMSLayer: data-dependent output shapes) run without CUDA
    graphs; the other kinds are captured (and fall back if a capture fails: gpu tests)."""
    assert not trt_runtime.cuda_graph_capturable("onnx")
    assert all(trt_runtime.cuda_graph_capturable(nms) for nms in NMS_CHOICES if nms != "onnx")


def setup_extras() -> dict[str, list[str]]:
    """``extras_require`` as setup.py declares it (read from its source: an installed copy's
    metadata may be older than the file)."""
    tree = ast.parse((Path(__file__).parents[1] / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "extras_require":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no extras_require")


@pytest.mark.parametrize("extra, cuda_major", [("trt-cu12", 12), ("trt-cu13", 13), ("trt", 12)])
def test_tensorrt_extras_pin_a_matching_cuda_python(extra, cuda_major):
    """Finding 11: each TensorRT extra installs a cuda-python of the CUDA major its TensorRT
    wheels are built for (a cuda-python 13 beside tensorrt-cu12 needs another driver stack)."""
    by_name = {(r := Requirement(line)).name: r for line in setup_extras()[extra]}
    tensorrt = [name for name in by_name if name.startswith("tensorrt")]
    assert tensorrt and all(name.endswith(f"cu{cuda_major}") for name in tensorrt), by_name
    cuda_python = by_name["cuda-python"].specifier
    assert cuda_python.contains(f"{cuda_major}.9") and not any(
        cuda_python.contains(f"{other}.0") for other in (11, 12, 13, 14) if other != cuda_major
    ), cuda_python
