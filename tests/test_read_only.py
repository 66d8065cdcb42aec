"""Every command that writes, pointed at a read-only file system: one line, exit 2, no traceback,
no input touched (issue #14, sec. 4).

A real read-only file system: a tmpfs mounted read-only inside a private mount namespace
(``unshare -rm``; user namespaces let this run without privileges). One folder of it exists
before it turns read-only, so both kernel answers are exercised: ``EROFS`` when a folder must
be created, and a read-only folder that exists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = """
import contextlib, io, json, sys
from retina_trt.cli import main

results = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
        except BaseException as exc:  # a leak: reported, not hidden
            code = f"raised {type(exc).__name__}: {exc}"
    results[name] = [code, err.getvalue()]
print(json.dumps(results))
"""


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def read_only_runs(tiny_checkpoint, onnx_models, image_dir, tmp_path_factory):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a private read-only mount")
    root = tmp_path_factory.mktemp("ro")
    mount = root / "mnt"
    mount.mkdir()
    onnx = str(onnx_models[("onnx", False)])
    pt = str(tiny_checkpoint)
    images = str(image_dir)
    annotations = root / "instances.json"  # never read: the output check comes first
    ro, missing = f"{mount}/existing", f"{mount}/missing/deeper"
    cases = {
        "export": ["export", "--weights", pt, "--output", f"{ro}/m.onnx"],
        "build-engine": ["build-engine", "--onnx", onnx, "--dry-run", "--output", f"{missing}/m.engine"],
        "detect": ["detect", onnx, images, "--output", f"{ro}/detect"],
        "detect-missing": ["detect", onnx, images, "--output", f"{missing}/detect"],
        "export-triton": ["export-triton", onnx, "--repo", f"{ro}/repo"],
        "export-deepstream": ["export-deepstream", pt, "--out", f"{missing}/ds"],
        "train": ["train", "--annotations", str(annotations), "--images", images, "--output", f"{ro}/m.pt"],
        "eval": ["eval", onnx, "--annotations", str(annotations), "--images", images, "--json", f"{missing}/m.json"],
        "bench": ["bench", onnx, "--iterations", "1", "--warmup", "0", "--out", f"{ro}/bench"],
        "bench-json": [
            "bench",
            onnx,
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--out",
            str(root / "bench"),
            "--json",
            f"{missing}/bench.json",
        ],
        "data": ["data", "synthetic", "--out", f"{missing}/data", "--images", "2"],
    }
    inputs = {p: _digest(Path(p).parent) for p in (onnx, pt)} | {images: _digest(Path(images))}
    script = (
        f"mount -t tmpfs -o size=4m tmpfs {mount} && mkdir {ro} && mount -o remount,ro {mount} && "
        f'exec {sys.executable} -c "$DRIVER" "$CASES"'
    )
    env = {**__import__("os").environ, "DRIVER": DRIVER, "CASES": json.dumps(cases)}
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs tmpfs {mount}"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here ({probe.stderr.strip()[:200]})")
    run = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    return results, run.stderr, inputs


@pytest.mark.parametrize(
    "case",
    [
        "export",
        "build-engine",
        "detect",
        "detect-missing",
        "export-triton",
        "export-deepstream",
        "train",
        "eval",
        "bench",
        "bench-json",
        "data",
    ],
)
def test_a_read_only_output_is_one_line_and_exit_2(read_only_runs, case):
    results, stderr, _ = read_only_runs
    code, err = results[case]
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith(f"retina-trt {case.replace('-missing', '').replace('-json', '')}"), (
        lines
    )
    assert any(word in lines[0] for word in ("Read-only file system", "not writable")), lines[0]


def test_no_traceback_and_inputs_untouched(read_only_runs):
    _, stderr, inputs = read_only_runs
    assert "Traceback" not in stderr, stderr[-3000:]
    for folder, digest in inputs.items():
        path = Path(folder)
        assert _digest(path if path.is_dir() else path.parent) == digest


def test_output_folders_blocked_by_a_file_are_one_line(onnx_models, tiny_checkpoint, image_dir, tmp_path, capsys):
    from retina_trt.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    onnx = str(onnx_models[("onnx", False)])
    for argv in (
        ["export-triton", onnx, "--repo", str(blocker)],
        ["export-triton", onnx, "--repo", str(blocker / "sub")],
        ["export-deepstream", str(tiny_checkpoint), "--out", str(blocker)],
        ["detect", onnx, str(image_dir), "--output", str(blocker / "out")],
    ):
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "is a file, not a folder" in lines[0], (argv, lines)
    assert blocker.read_text() == "x"
