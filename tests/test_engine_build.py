"""The engine file format, the builder's TensorRT-free parts, and `retina-trt build-engine`.

No TensorRT runs here: the engine files written in these tests carry placeholder plan bytes to
exercise the header format; `gpu` tests build real engines.
"""

from __future__ import annotations

import onnx
import pytest
from helpers import TINY_SPEC

from retina_trt.cli import main
from retina_trt.contract.engine_file import make_header, read_plan, write_engine
from retina_trt.contract.onnx_metadata import read_metadata
from retina_trt.errors import ModelFormatError
from retina_trt.trt import (
    BuildOptions,
    EngineMismatchError,
    build_plan,
    check_engine_compatible,
    read_engine_header,
)
from retina_trt.trt.builder import plugin_nodes, profile_shapes

PLAN = b"placeholder plan bytes, not a TensorRT plan" * 10


def _engine(tmp_path, **changes):
    fields = {
        "spec": TINY_SPEC,
        "tensorrt_version": "10.13.3.9",
        "device_name": "NVIDIA L4",
        "compute_capability": (8, 9),
        "precision": "int8",
        "onnx_sha256": "ab" * 32,
        "export": {"nms": "onnx", "input_size": [256, 384], "batch": [1, 1, 8]},
        "build": {"batch": [1, 4, 8], "hardware_compat": "none", "version_compatible": False},
        "plan": PLAN,
    }
    fields.update(changes)
    path = tmp_path / "model.engine"
    write_engine(path, make_header(**fields), fields["plan"])
    return path


def test_header_roundtrip_without_tensorrt(tmp_path):
    path = _engine(tmp_path)
    header = read_engine_header(path)
    assert header.spec == TINY_SPEC
    assert header.tensorrt_version == "10.13.3.9" and header.compute_capability == (8, 9)
    assert header.precision == "int8" and header.max_batch == 8 and header.input_size == (256, 384)
    assert read_plan(path, header) == PLAN
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left behind


def test_foreign_and_damaged_engine_files(tmp_path):
    bare = tmp_path / "trtexec.engine"
    bare.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFormatError, match="not a retina_trt engine"):
        read_engine_header(bare)
    path = _engine(tmp_path)
    data = path.read_bytes()
    (tmp_path / "cut.engine").write_bytes(data[:30])
    with pytest.raises(ModelFormatError, match="damaged header"):
        read_engine_header(tmp_path / "cut.engine")
    (tmp_path / "tampered.engine").write_bytes(data[:-1] + b"!")
    with pytest.raises(ModelFormatError, match="does not match its header"):
        read_plan(tmp_path / "tampered.engine")
    with pytest.raises(ModelFormatError, match="not found"):
        read_engine_header(tmp_path / "missing.engine")


def test_loading_checks_version_and_device(tmp_path):
    path = _engine(tmp_path)
    header = read_engine_header(path)
    check_engine_compatible(path, header, tensorrt_version="10.13.3.9", compute_capability=(8, 9))
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.13\.3\.9, this is 10\.14.*retina-trt build-engine"):
        check_engine_compatible(path, header, tensorrt_version="10.14.1.0", compute_capability=(8, 9))
    with pytest.raises(EngineMismatchError, match=r"compute capability 8\.9\), this GPU is 9\.0.*rebuild"):
        check_engine_compatible(path, header, tensorrt_version="10.13.3.9", compute_capability=(9, 0))

    compat = _engine(tmp_path, build={"batch": [1, 1, 8], "hardware_compat": "ampere_plus", "version_compatible": True})
    header = read_engine_header(compat)
    check_engine_compatible(compat, header, tensorrt_version="10.14.1.0", compute_capability=(9, 0))
    with pytest.raises(EngineMismatchError, match="later 10.x"):
        check_engine_compatible(compat, header, tensorrt_version="11.4.0.106", compute_capability=(9, 0))
    with pytest.raises(EngineMismatchError, match="8.0 or later"):
        check_engine_compatible(compat, header, tensorrt_version="10.13.3.9", compute_capability=(7, 5))


def test_profile_shapes_fixed_and_dynamic(onnx_models):
    fixed = read_metadata(onnx_models[("onnx", False)])
    shapes = profile_shapes(fixed, BuildOptions(batch=(1, 4, 8)))
    assert shapes["images"] == ((1, 256, 384, 3), (4, 256, 384, 3), (8, 256, 384, 3))
    assert shapes["image_sizes"] == ((1, 2), (4, 2), (8, 2))
    assert profile_shapes(fixed, BuildOptions())["images"][2] == (8, 256, 384, 3)  # the export's range

    dynamic = read_metadata(onnx_models[("onnx", True)])
    shapes = profile_shapes(dynamic, BuildOptions(opt_hw=(256, 384)))
    assert shapes["images"] == ((1, 128, 128, 3), (1, 256, 384, 3), (8, 384, 384, 3))
    with pytest.raises(ValueError, match="multiples of 128"):
        profile_shapes(dynamic, BuildOptions(opt_hw=(250, 384)))
    with pytest.raises(ValueError, match="ordered"):
        profile_shapes(dynamic, BuildOptions(opt_hw=(512, 512)))


def test_build_options_are_validated():
    for bad in ({"batch": (2, 1, 4)}, {"optimization_level": 6}, {"workspace_mib": 0}, {"hardware_compat": "turing"}):
        with pytest.raises(ValueError):
            BuildOptions(**bad)


def test_plugin_nodes_are_found_by_namespace(onnx_models):
    model = onnx.load(str(onnx_models[("none", False)]))
    assert plugin_nodes(model) == []
    node = onnx.helper.make_node("RetinaNMS", ["a"], ["b"], name="nms", plugin_namespace="retina_trt", aot=1)
    model.graph.node.append(node)
    assert [n.name for n in plugin_nodes(model)] == ["nms"]


def test_build_plan_needs_no_tensorrt(onnx_models):
    plan = build_plan(
        onnx_models[("onnx", False)], BuildOptions(batch=(1, 2, 4), version_compatible=True, flavour="tensorrt")
    )
    assert plan["precision"] == "fp32" and plan["strongly_typed"] is True
    assert plan["profile"]["images"] == "min 1x256x384x3 / opt 2x256x384x3 / max 4x256x384x3"
    assert plan["version_compatible"] is True


def test_build_plan_says_what_the_build_will_use(onnx_models, tmp_path):
    """No 'flavour: None' or empty targets: the plan names the TensorRT, its targets, and what
    happens to a timing cache (TensorRT-RTX has none; TensorRT creates or loads one)."""
    onnx_path = onnx_models[("onnx", False)]
    rtx = build_plan(onnx_path, BuildOptions(flavour="tensorrt_rtx", timing_cache=str(tmp_path / "t.cache")))
    assert rtx["tensorrt"] == "TensorRT-RTX" and rtx["targets"] == "8.0, 8.6, 8.9, 12.0, 12.1 (TensorRT-RTX's defaults)"
    assert (
        "not used" in rtx["timing_cache / compatibility"]
        and "--timing-cache ignored" in rtx["timing_cache / compatibility"]
    )
    assert "flavour" not in rtx and "compute_capabilities" not in rtx and "hardware_compat" not in rtx
    named = build_plan(onnx_path, BuildOptions(flavour="tensorrt_rtx", compute_capabilities=((8, 6),)))
    assert named["targets"] == "8.6"
    trt = build_plan(onnx_path, BuildOptions(flavour="tensorrt", timing_cache=str(tmp_path / "t.cache")))
    assert trt["timing_cache"].endswith("(created by the build)") and "GPU the build runs on" in trt["targets"]
    (tmp_path / "t.cache").write_bytes(b"x")
    again = build_plan(onnx_path, BuildOptions(flavour="tensorrt", timing_cache=str(tmp_path / "t.cache")))
    assert again["timing_cache"].endswith("(loaded, then updated)")
    installed = build_plan(onnx_path, BuildOptions())  # this machine: TensorRT-RTX only
    assert installed["tensorrt"] == "TensorRT-RTX (the one installed)"


def test_build_engine_dry_run_writes_the_prepared_onnx_and_reuses_the_cache(tiny_checkpoint, tmp_path, capsys):
    args = [
        "build-engine",
        "--weights",
        str(tiny_checkpoint),
        "--precision",
        "int8",
        "--calib-data",
        "synthetic",
        "--calib-images",
        "4",
        "--calib-batch",
        "4",
        "--batch",
        "1:2:4",
        "--dry-run",
        "--output",
        str(tmp_path / "out" / "tiny.engine"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    prepared = tmp_path / "out" / "tiny.int8.onnx"
    assert "int8 ONNX prepared" in out and "build plan:" in out and "dry run" in out
    assert not (tmp_path / "out" / "tiny.engine").exists()
    meta = read_metadata(prepared)
    assert meta.precision == "int8" and meta.export["batch"] == [1, 2, 4]
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(prepared)).graph.node)
    first = prepared.read_bytes()

    assert main(args) == 0
    assert "reused from the precision cache" in capsys.readouterr().out
    assert prepared.read_bytes() == first

    # the prepared ONNX is accepted as it is
    assert main(["build-engine", "--onnx", str(prepared), "--dry-run", "--output", str(tmp_path / "b.engine")]) == 0
    assert "using the prepared int8 ONNX" in capsys.readouterr().out


def test_build_engine_profile_sizes_of_a_dynamic_onnx(onnx_models, tmp_path, capsys):
    dynamic = onnx_models[("onnx", True)]
    d = read_metadata(dynamic).spec.size_divisible
    sizes = ["--min-input-size", f"{d}x{d}", "--input-size", f"{2 * d}x{3 * d}", "--max-input-size", f"{4 * d}x{4 * d}"]
    args = [
        "build-engine",
        "--onnx",
        str(dynamic),
        "--precision",
        "fp32",
        "--dry-run",
        "--output",
        str(tmp_path / "d.engine"),
    ]
    assert main([*args, *sizes, "--batch", "1:2:4"]) == 0
    out = capsys.readouterr().out
    assert f"min 1x{d}x{d}x3 / opt 2x{2 * d}x{3 * d}x3 / max 4x{4 * d}x{4 * d}x3" in out
    # max below opt: refused before any precision work, naming the order
    code = main([*args, "--input-size", f"{2 * d}x{2 * d}", "--max-input-size", f"{d}x{d}"])
    assert code == 2 and "ordered min <= opt <= max" in capsys.readouterr().err
    # a fixed-size model has no size range to set
    fixed = [
        "build-engine",
        "--onnx",
        str(onnx_models[("onnx", False)]),
        "--dry-run",
        "--output",
        str(tmp_path / "f.engine"),
    ]
    assert main([*fixed, "--max-input-size", "512x512"]) == 2
    assert "dynamic-shape models" in capsys.readouterr().err


def test_info_on_an_engine_file(tmp_path, capsys):
    path = _engine(tmp_path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TensorRT 10.13.3.9" in out and "NVIDIA L4" in out and "int8" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "int8"], "INT8 needs calibration data"),
        (["--calib-data", "/nonexistent", "--precision", "int8"], "not found"),
        (["--output", "x.plan"], "must end in .engine"),
        (["--input-size", "256x384"], "fixed 256x384 input"),
        (["--dynamic-shapes"], "applies to --weights"),
        ([], "TensorRT"),  # no --dry-run and no TensorRT here
    ],
)
def test_build_engine_user_errors_exit_2(extra, message, onnx_models, tmp_path, capsys):
    output = ["--output", str(tmp_path / "m.engine")] if "--output" not in extra else []
    dry = ["--dry-run"] if extra else []
    code = main(["build-engine", "--onnx", str(onnx_models[("onnx", False)]), *output, *dry, *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_no_tensorrt_message_names_the_install_and_the_alternative(onnx_models, tmp_path, capsys, monkeypatch):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT 10/11 is installed")
    except ImportError:
        pass
    monkeypatch.setenv("RETINA_TRT_TENSORRT", "tensorrt")  # TensorRT 10/11 asked for, not installed here
    assert (
        main(["build-engine", "--onnx", str(onnx_models[("onnx", False)]), "--output", str(tmp_path / "m.engine")]) == 2
    )
    err = capsys.readouterr().err
    assert "retina-trt[trt-cu12]" in err and "retina-trt[trt-rtx]" in err and "ONNX Runtime" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m.engine").exists()


def test_prepared_onnx_with_another_precision_is_refused(tmp_path, capsys, onnx_models):
    from retina_trt.calibration import prepare_precision

    fp16 = prepare_precision(onnx_models[("onnx", False)], "fp16", tmp_path / "m.fp16.onnx", cache_dir=tmp_path / "c")
    code = main(
        [
            "build-engine",
            "--onnx",
            str(fp16.path),
            "--precision",
            "int8",
            "--dry-run",
            "--output",
            str(tmp_path / "m.engine"),
        ]
    )
    assert code == 2 and "already prepared as fp16" in capsys.readouterr().err


def test_loading_checks_the_tensorrt_flavour_and_rtx_targets(tmp_path):
    """A TensorRT-RTX engine runs only under TensorRT-RTX, on the compute capabilities it was
    built for; a TensorRT 10/11 engine not under TensorRT-RTX. Each refusal says what to do."""
    rtx = _engine(
        tmp_path,
        tensorrt_flavour="tensorrt_rtx",
        tensorrt_version="1.7.1.116",
        device_name=None,
        compute_capability=None,
        targets=((8, 6), (8, 9)),
    )
    header = read_engine_header(rtx)
    assert (
        header.tensorrt_flavour == "tensorrt_rtx" and header.targets == ((8, 6), (8, 9)) and header.device_name is None
    )
    check_engine_compatible(
        rtx, header, tensorrt_flavour="tensorrt_rtx", tensorrt_version="1.7.1.116", compute_capability=(8, 9)
    )
    with pytest.raises(
        EngineMismatchError, match=r"built with TensorRT-RTX 1\.7\.1\.116.*TensorRT 10/11 10\.13.*tensorrt-rtx-cu13"
    ):
        check_engine_compatible(
            rtx, header, tensorrt_flavour="tensorrt", tensorrt_version="10.13.3.9", compute_capability=(8, 9)
        )
    with pytest.raises(EngineMismatchError, match=r"compute capabilities it was built for: 8\.6, 8\.9.*rebuild"):
        check_engine_compatible(
            rtx, header, tensorrt_flavour="tensorrt_rtx", tensorrt_version="1.7.1.116", compute_capability=(9, 0)
        )
    trt10 = _engine(tmp_path)
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10/11 10\.13\.3\.9, and this is TensorRT-RTX"):
        check_engine_compatible(
            trt10,
            read_engine_header(trt10),
            tensorrt_flavour="tensorrt_rtx",
            tensorrt_version="1.7.1.116",
            compute_capability=(8, 9),
        )
    # headers from before the flavour and targets were recorded read as TensorRT 10/11 on their build GPU
    old = make_header(
        spec=TINY_SPEC,
        tensorrt_version="10.13.3.9",
        device_name="NVIDIA L4",
        compute_capability=(8, 9),
        precision="fp16",
        onnx_sha256="ab" * 32,
        export={"nms": "onnx"},
        build={"batch": [1, 1, 8]},
        plan=PLAN,
    )
    del old["tensorrt_flavour"], old["targets"]
    write_engine(tmp_path / "old.engine", old, PLAN)
    header = read_engine_header(tmp_path / "old.engine")
    assert header.tensorrt_flavour == "tensorrt" and header.targets == ((8, 9),)


ROUTES = [
    (nms, precision, source)
    for nms in ("onnx", "graph", "plugin", "efficient")
    for precision in ("fp32", "fp16", "int8")
    for source in ("weights", "onnx")
]
DEFAULT_ROUTES = [
    ("plugin", "fp16", "weights"),
    ("efficient", "int8", "onnx"),
    ("graph", "int8", "weights"),
    ("onnx", "fp16", "onnx"),
]


def _route(nms, precision, source, tiny_model, tiny_checkpoint, tmp_path, capsys):
    """build-engine --dry-run on one route reaches the prepared ONNX, with the NMS part intact."""
    from retina_trt import export_onnx

    if source == "weights":
        src = ["--weights", str(tiny_checkpoint), "--nms", nms, "--input-size", "256x384"]
    else:
        src = ["--onnx", str(export_onnx(tiny_model, tmp_path / f"{nms}.onnx", nms=nms, input_size=(256, 384)))]
    calib = ["--calib-data", "synthetic", "--calib-images", "4", "--calib-batch", "4"] if precision == "int8" else []
    output = tmp_path / "out" / "m.engine"
    code = main(
        [
            "build-engine",
            *src,
            "--precision",
            precision,
            *calib,
            "--dry-run",
            "--output",
            str(output),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    prepared = tmp_path / "out" / f"m.{precision}.onnx"
    meta = read_metadata(prepared)
    assert meta.nms == nms and meta.precision == precision
    ops = {n.op_type for n in onnx.load(str(prepared), load_external_data=False).graph.node}
    tail = {"onnx": "NonMaxSuppression", "graph": "Loop", "plugin": "RetinaNMS", "efficient": "EfficientNMS_TRT"}[nms]
    assert tail in ops
    assert "build plan:" in capsys.readouterr().out


@pytest.mark.parametrize(("nms", "precision", "source"), DEFAULT_ROUTES)
def test_build_engine_routes_reach_the_prepared_onnx(
    nms, precision, source, tiny_model, tiny_checkpoint, tmp_path, capsys
):
    _route(nms, precision, source, tiny_model, tiny_checkpoint, tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize(("nms", "precision", "source"), [r for r in ROUTES if r not in DEFAULT_ROUTES])
def test_every_build_engine_route_reaches_the_prepared_onnx(
    nms, precision, source, tiny_model, tiny_checkpoint, tmp_path, capsys
):
    """The whole matrix (--nms x --precision x --weights/--onnx); `make test-all` runs it."""
    _route(nms, precision, source, tiny_model, tiny_checkpoint, tmp_path, capsys)


def test_build_is_one_call_from_weights_to_a_prepared_onnx_or_an_engine(tiny_checkpoint, onnx_models, tmp_path):
    """retina_trt.build: a checkpoint to a prepared FP16 ONNX (which runs), an FP32 ONNX to a real
    TensorRT-RTX engine; bad requests fail before any work."""
    import retina_trt
    from retina_trt.contract.engine_file import read_engine_header

    fp16 = retina_trt.build(tiny_checkpoint, tmp_path / "tiny.fp16.onnx", precision="fp16", input_size=(256, 384))
    assert fp16 == tmp_path / "tiny.fp16.onnx" and read_metadata(fp16).precision == "fp16"
    with retina_trt.Detector(fp16, backend="onnxruntime") as det:
        assert det.precision == "fp16" and det.input_size == (256, 384)
    for bad, message in (
        ({"output": tmp_path / "x.plan"}, "must end in .engine"),
        ({"output": tmp_path / "x.onnx", "workspace_mib": 64}, "engine build settings"),
        ({"source": tmp_path / "x.txt"}, "checkpoint"),
    ):
        kwargs = {"source": tiny_checkpoint, "output": tmp_path / "y.onnx", **bad}
        with pytest.raises(ValueError, match=message):
            retina_trt.build(kwargs.pop("source"), kwargs.pop("output"), **kwargs)
    assert not (tmp_path / "y.onnx").exists() and not (tmp_path / "x.onnx").exists()
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is installed by `make`")
    engine = retina_trt.build(onnx_models[("none", False)], tmp_path / "tiny.engine", precision="fp16")
    assert engine.is_file() and read_engine_header(engine).precision == "fp16"
