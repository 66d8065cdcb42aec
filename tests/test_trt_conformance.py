"""API conformance of the TensorRT-facing code against the real TensorRT 10.x and 11.x bindings.

The bindings wheels (``tensorrt-cu12-bindings``, ``tensorrt-cu13-bindings``) are real PyPI wheels
without native libraries; they import over stub ``libnvinfer``/``libnvonnxparser``/
``libnvinfer_plugin`` libraries built here with gcc (docs/engines.md, "Verification"). Then every class, method,
enum and flag can be inspected, nothing can execute: these tests check names and signatures, not
behaviour (the ``gpu`` tests do that on a GPU).

``make`` installs the wheels and stubs into ``.venv/trt-bindings`` (tests/trt_bindings.py), so
the test run itself downloads nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from trt_api_probe import _resolve
from trt_bindings import BINDINGS, BindingsMissing, bindings_env

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).with_name("trt_api_probe.py")


@pytest.fixture(scope="module", params=sorted(BINDINGS))
def bindings(request):
    try:
        return request.param, bindings_env(request.param)
    except BindingsMissing as err:
        pytest.fail(str(err))


def _probe(env: dict[str, str], *args: str, stdin: str | None = None):
    result = subprocess.run(
        [sys.executable, str(PROBE), *args], env=env, input=stdin, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report(bindings):
    major, env = bindings
    return major, _probe(env)


def test_real_bindings_are_loaded(report):
    major, data = report
    assert data["version"] == BINDINGS[major][1]


def test_every_module_imports(report):
    _, data = report
    assert "retina_trt.trt.builder" in data["modules"]
    assert "retina_trt.trt.compat" in data["modules"]
    assert "retina_trt.trt.runtime" in data["modules"]
    assert "retina_trt.plugins.registration" in data["modules"] and "retina_trt.plugins.ort_ops" in data["modules"]


def test_every_ungated_name_exists(report):
    major, data = report
    uses = [u for u in data["uses"] if not u["gated"]]
    assert len(uses) > 40  # the scan found the builder's calls
    missing = sorted({f"{u['name']} ({u['where']})" for u in uses if not u["exists"]})
    assert not missing, f"TensorRT {data['version']} lacks: {missing}"


def test_gated_names_exist_in_some_version(bindings):
    reports = [_probe(bindings_env(m)) for m in sorted(BINDINGS)]
    gated = {}
    for data in reports:
        for use in data["uses"]:
            if use["gated"]:
                gated.setdefault(use["name"], []).append(use["exists"])
    assert gated, "the code reads no version-gated name; update this test if that is intended"
    rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is installed by `make`")
    for name in gated:  # TensorRT-RTX-only names are gated too: the real module is here
        gated[name].append(_resolve(rtx, name.split(".")))
    unknown = sorted(name for name, found in gated.items() if not any(found))
    assert not unknown, f"gated names in no supported TensorRT version (typos?): {unknown}"


def test_nms_plugins_register_and_compile_their_aot_kernels(report):
    """tensorrt.plugin accepts both registrations (it validates the descriptor and aot_impl
    signatures), every tensorrt.plugin name the code uses exists, and the aot_impl launch
    functions return PTX for the target and KernelLaunchParams."""
    _, data = report
    plugin = data["plugin"]
    assert plugin["trtp_names"] and all(plugin["trtp_names"].values()), plugin["trtp_names"]
    assert {"register", "aot_impl", "KernelLaunchParams", "SymIntExprs", "from_shape_expr"} <= set(plugin["trtp_names"])
    assert plugin["kernels"] == ["sort_kernel", "mask_kernel", "scan_kernel"]
    assert plugin["ptx_targets"] == [True, True, True]
    assert plugin["launch_types"] == ["KernelLaunchParams"] * 3
    # the PTX handed to TensorRT declares exactly the arguments its AOT launcher passes
    assert plugin["ptx_params"] == [3, 5, 10], plugin["ptx_params"]
    assert [k["entry"] for k in plugin["embedded"]] == ["sort_kernel", "mask_kernel", "scan_kernel"]
    assert all(k["target"] == "sm_80" for k in plugin["embedded"])


def test_version_gates(report):
    major, data = report
    helpers = data["helpers"]
    assert helpers["major"] == int(major)
    if major == "10":  # strongly typed is a flag on 10.x ...
        assert helpers["network_flags"] == helpers["strongly_typed_bit"]
    else:  # ... and the only mode on 11.x
        assert helpers["network_flags"] == 0
    assert helpers["network_flags_aot"] != helpers["network_flags"]
    assert set(helpers["hardware_compat"]) == {"none", "ampere_plus", "same_cc"}
    assert sorted(helpers["severity_levels"]) == [10, 20, 30, 40, 50]


def test_the_scan_catches_a_removed_flag(bindings):
    """The checker can fail: FP16/INT8 builder flags exist on 10.x and are gone on 11.x."""
    major, env = bindings
    source = "def f(trt, config):\n    config.set_flag(trt.BuilderFlag.FP16)\n    config.int8_calibrator = None\n"
    result = {u["name"]: u["exists"] for u in _probe(env, "--source", stdin=source)}
    assert result["IBuilderConfig.set_flag"] is True
    assert result["BuilderFlag.FP16"] is (major == "10")
    assert result["IBuilderConfig.int8_calibrator"] is (major == "10")


def test_cuda_python_names_exist():
    """The runtime's CUDA calls exist in the installed CUDA Python binding (cuda.bindings.runtime)."""
    cudart = pytest.importorskip("cuda.bindings.runtime")
    sys.path.insert(0, str(PROBE.parent))
    from trt_api_probe import _resolve, module_chains

    source = "\n".join((ROOT / "retina_trt" / "trt" / name).read_text() for name in ("runtime.py", "compat.py"))
    names = module_chains(source, "cudart")
    assert len(names) > 15
    missing = sorted(n for n in names if not _resolve(cudart, n.split(".")))
    assert not missing, f"cuda.bindings.runtime lacks {missing}"
