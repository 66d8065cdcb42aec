"""The NMS plugin's PTX as TensorRT's AOT launcher gets it (plugins/aot.py, issue #16 part 1):
entries declare exactly the arguments TensorRT passes, family targets (no ``a`` suffix), a PTX ISA
capped to the driver, and Triton's own ``ptxas`` assembles every file for its target."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from retina_trt.plugins import aot


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("aot")
    run = subprocess.run(
        [sys.executable, "-m", "retina_trt.plugins.aot", "--out", str(out), "--batch", "8"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out, json.loads((out / "manifest.json").read_text())


def test_every_target_and_kernel_is_written_and_assembled(written):
    out, manifest = written
    kernels = manifest["kernels"]
    assert sorted({k["target"] for k in kernels}) == sorted(f"sm_{t}" for t in aot.TARGETS)
    assert len(kernels) == 3 * len(aot.TARGETS)
    for kernel in kernels:
        assert (
            kernel["params"]
            == kernel["trt_args"]
            == {"sort_kernel": 3, "mask_kernel": 5, "scan_kernel": 10}[kernel["entry"]]
        )
        assert kernel["triton_params"] == kernel["params"] + 2  # Triton 3.8's global/profile scratch, removed
        assert kernel["cubin_bytes"] > 0 and kernel["grid"][0] == 8
        ptx = (out / kernel["ptx"]).read_text()
        assert re.search(rf"^\.target {kernel['target']}$", ptx, flags=re.M), kernel["ptx"]  # no "a" suffix
        assert len(aot._entry(ptx)[1]) == kernel["trt_args"]


def test_assembled_again_here_for_its_target(written):
    out, manifest = written
    for kernel in manifest["kernels"][:4]:
        assert aot.assemble((out / kernel["ptx"]).read_text(), kernel["target"]) > 0


def _with_hidden(ptx: str, entry: str) -> str:
    """The PTX as Triton emits it: two more .params after TensorRT's."""
    names = aot._entry(ptx)[1]
    extra = "".join(f",\n\t.param .u64 .ptr .global .align 1 {entry}_param_{len(names) + i}" for i in range(2))
    start, end = aot._entry(ptx)[2:]
    return ptx[:start] + ptx[start:end].rstrip() + extra + "\n" + ptx[end:]


def _kernel(ptx: str, **metadata) -> SimpleNamespace:
    return SimpleNamespace(
        asm={"ptx": ptx}, metadata=SimpleNamespace(global_scratch_size=0, profile_scratch_size=0, **metadata)
    )


def test_hidden_parameters_are_removed_only_when_provably_unused(written):
    out, manifest = written
    record = next(k for k in manifest["kernels"] if k["entry"] == "sort_kernel" and k["target"] == "sm_80")
    clean = (out / record["ptx"]).read_text()
    raw = _with_hidden(clean, "sort_kernel")
    assert len(aot._entry(raw)[1]) == 5
    fixed = aot.launchable_ptx(_kernel(raw), trt_args=3)
    assert fixed.params == 3 and fixed.removed_params == 2
    assert aot.assemble(fixed.ptx, "sm_80") > 0
    # a body that reads a hidden parameter, or a kernel that needs scratch memory: refused
    body_start = raw.index("{", aot._entry(raw)[3])
    reads = raw[: body_start + 1] + "\n\tld.param.b64 \t%rd1, [sort_kernel_param_4];" + raw[body_start + 1 :]
    with pytest.raises(aot.PTXError, match=r"reads its hidden parameters \['sort_kernel_param_4'\]"):
        aot.launchable_ptx(_kernel(reads), trt_args=3)
    with pytest.raises(aot.PTXError, match="global_scratch"):
        aot.launchable_ptx(
            SimpleNamespace(asm={"ptx": raw}, metadata=SimpleNamespace(global_scratch_size=128)), trt_args=3
        )
    with pytest.raises(aot.PTXError, match="declares 5 parameters, TensorRT passes 9"):
        aot.launchable_ptx(_kernel(raw), trt_args=9)  # (the argument count TensorRT would pass another kernel)


def test_targets_and_ptx_isa():
    ptx = (
        ".version 8.8\n.target sm_90a\n.address_size 64\n.visible .entry k(\n\t.param .u32 k_param_0\n)\n{\n\tret;\n}\n"
    )
    family = aot.launchable_ptx(_kernel(ptx), trt_args=1, ptx_isa="8.4")
    assert family.target == "sm_90" and family.ptx_isa == "8.4" and ".version 8.4" in family.ptx
    assert aot.assemble(family.ptx, "sm_90") > 0
    same = aot.launchable_ptx(_kernel(ptx), trt_args=1, same_cc=True)
    assert same.target == "sm_90a" and same.ptx_isa == "8.8"
    with pytest.raises(aot.PTXError, match="older than sm_90 needs"):
        aot.launchable_ptx(_kernel(ptx), trt_args=1, ptx_isa="7.0")
    assert (
        aot.isa_for_cuda((12, 4)) == "8.4" and aot.isa_for_cuda((12, 7)) == "8.5" and aot.isa_for_cuda((13, 0)) == "9.0"
    )
    with pytest.raises(aot.PTXError, match="older than any driver"):
        aot.isa_for_cuda((11, 8))


def test_unknown_targets_are_a_usage_error(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "retina_trt.plugins.aot", "--arch", "sm_70", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "unsupported targets [70]" in run.stderr


@pytest.mark.parametrize("target, ok", [("sm_80", True), ("sm_90", False), ("sm_90a", False)])
def test_hardware_compatible_engines_refuse_plugin_ptx_later_gpus_cannot_run(tmp_path, target, ok):
    """An ampere_plus engine runs on any GPU from 8.0 on, so its plugin PTX must be sm_80 family
    PTX (the builder compiles it so); anything else is refused at load with the reason."""
    from helpers import TINY_SPEC

    from retina_trt.contract.engine_file import (
        EngineMismatchError,
        check_engine_compatible,
        make_header,
        read_engine_header,
        write_engine,
    )

    build = {
        "batch": [1, 1, 1],
        "hardware_compat": "ampere_plus",
        "plugin_ptx": [{"entry": "scan_kernel", "target": target, "ptx_isa": "8.4", "params": 10}],
    }
    header = make_header(
        spec=TINY_SPEC,
        tensorrt_version="10.13.3.9",
        device_name="H100",
        compute_capability=(9, 0),
        precision="fp16",
        onnx_sha256="0" * 64,
        export={"nms": "plugin", "input_size": [256, 384]},
        build=build,
        plan=b"plan",
    )
    path = write_engine(tmp_path / "p.engine", header, b"plan")
    read = read_engine_header(path)
    if ok:
        check_engine_compatible(path, read, tensorrt_version="10.13.3.9", compute_capability=(12, 0))
    else:
        with pytest.raises(EngineMismatchError, match=f"embeds {target} PTX"):
            check_engine_compatible(path, read, tensorrt_version="10.13.3.9", compute_capability=(12, 0))
