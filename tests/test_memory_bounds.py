"""Tampered files and flags are refused before anything is allocated from them: each case runs the
CLI in a fresh process and its peak memory stays well under 1 GB (issue #14, sec. 2 and 5; before
the checks these cases took 4.9-7.0 GB, or 6.3 GB for a 30000x30000 PNG).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from test_untrusted_files import _header, _png

from retina_trt.contract.engine_file import write_engine
from retina_trt.contract.onnx_metadata import SPEC_KEY

LIMIT_MIB = 1024
# Peak memory: VmHWM of this process (ru_maxrss would carry the parent's peak across exec).
DRIVER = """
import contextlib, io, json, sys
from retina_trt.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    try:
        code = main(json.loads(sys.argv[1]))
    except SystemExit as exit:
        code = exit.code
    except BaseException as exc:
        code = f"raised {type(exc).__name__}"
status = open("/proc/self/status").read()
peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
print(json.dumps([code, err.getvalue(), peak_kib // 1024]))
"""


@pytest.fixture(scope="module")
def tampered(tiny_checkpoint, onnx_models, tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """Their folder, and case name -> CLI arguments, each with one file or flag that asks for a
    huge allocation."""
    root = tmp_path_factory.mktemp("tampered")
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["spec"]["num_classes"] = 10**8
    torch.save(checkpoint, root / "huge_classes.pt")
    model = onnx.load(str(onnx_models[("onnx", False)]))
    for prop in model.metadata_props:
        if prop.key == SPEC_KEY:
            spec = json.loads(prop.value)
            spec["num_classes"] = 10**8
            prop.value = json.dumps(spec)
    onnx.save(model, str(root / "huge_classes.onnx"))
    write_engine(root / "huge_classes.engine", _header(**{"spec.num_classes": 10**8}), b"plan")
    images = root / "images"
    images.mkdir()
    (images / "big.png").write_bytes(_png(30000, 30000))
    onnx_model = str(onnx_models[("onnx", False)])
    return root, {  # case -> CLI arguments
        "pt spec": ["info", str(root / "huge_classes.pt")],
        "onnx spec": ["detect", str(root / "huge_classes.onnx"), str(images), "--output", str(root / "out1")],
        "engine spec": ["info", str(root / "huge_classes.engine")],
        "30000x30000 png": ["detect", onnx_model, str(images), "--output", str(root / "out2")],
        "input size flag": [
            "export",
            "--weights",
            str(tiny_checkpoint),
            "--input-size",
            "65536x65536",
            "--output",
            str(root / "m.onnx"),
        ],
        "pt spec export": ["export", "--weights", str(root / "huge_classes.pt"), "--output", str(root / "m2.onnx")],
    }


WHAT = {
    "pt spec": "num_classes",
    "onnx spec": "num_classes",
    "engine spec": "damaged header",
    "30000x30000 png": "1 input(s) failed",
    "input size flag": "each side must be in 1..8192",
    "pt spec export": "num_classes",
}


@pytest.mark.parametrize("case", sorted(WHAT))
def test_tampered_input_is_refused_in_well_under_a_gigabyte(tampered, case):
    root, cases = tampered
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    run = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(cases[case])], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    code, err, peak_mib = json.loads(run.stdout.strip().splitlines()[-1])
    assert code == 2, (code, err)
    assert "Traceback" not in err + run.stderr and WHAT[case] in err.strip().splitlines()[-1], err
    if case == "30000x30000 png":  # reported and skipped like any bad image, the run goes on
        assert "refused before decoding" in err
    print(f"{case}: peak {peak_mib} MiB")
    assert peak_mib < LIMIT_MIB, f"{case}: peak {peak_mib} MiB"
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert {p: t for p, t in after.items() if p in before} == before  # inputs unchanged
    left = [p.name for p in after if p not in before and not p.name.endswith(".jsonl")]
    assert not left and not [p for p in after if ".tmp" in p.name], left  # nothing partial or temporary
