"""The README's Python block runs as written, in a fresh process, in a folder holding the files
it names: export (nms="graph"), the Detector on the CPU, INT8 preparation with the batch sized to
this machine's memory, and a real TensorRT-RTX engine build (TensorRT 10/11 where installed).

The default run swaps two things and says so: the checkpoint is the demo model under the README's
file name (a ResNet-18: the block's code does not depend on the weights) and ``num_images=512``
becomes 8. ``test_readme_python_block_literally`` (marked slow, ``make readme-check``) runs the
block untouched on a seeded torchvision ResNet-50-FPN checkpoint with 512 calibration images.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from conftest import DEMO_MODEL, scene

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = "retinanet_resnet50_fpn_coco.pth"


def python_block() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^## Python\n.*?```python\n(.*?)```", text, flags=re.S | re.M)
    assert len(blocks) == 1, "README.md has one ```python block under '## Python'"
    return blocks[0]


def _folder(tmp_path: Path, checkpoint: Path, calib_images: int) -> Path:
    """The files the block names: the checkpoint, street.jpg, a.jpg, b.png, calib_images/."""
    shutil.copyfile(checkpoint, tmp_path / CHECKPOINT)
    for name, seed in (("street.jpg", 1), ("a.jpg", 2), ("b.png", 3)):
        cv2.imwrite(str(tmp_path / name), scene(240, 320, seed))
    (tmp_path / "calib_images").mkdir()
    for i in range(calib_images):
        cv2.imwrite(str(tmp_path / "calib_images" / f"{i:04d}.jpg"), scene(256, 256, 100 + i))
    return tmp_path


def _run(folder: Path, code: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "RETINA_TRT_CACHE": str(folder / "cache"), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run


def _check_outputs(folder: Path, run: subprocess.CompletedProcess) -> None:
    backend, _, precision = run.stdout.splitlines()[0].partition(" ")
    assert backend in ("openvino", "onnxruntime") and precision
    assert (folder / "street.out.jpg").is_file() and cv2.imread(str(folder / "street.out.jpg")) is not None
    from retina_trt.contract.onnx_metadata import read_metadata
    from retina_trt.trt import read_engine_header

    assert read_metadata(folder / "model.onnx").nms == "graph"
    assert read_metadata(folder / "model.int8.onnx").precision == "int8"
    header = read_engine_header(folder / "model.engine")
    assert header.info.batch == (1, 8) or tuple(header.info.batch)[-1] == 8


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is None and not __import__("importlib").util.find_spec("tensorrt_rtx"),
    reason="no TensorRT that builds here",
)
def test_readme_python_block_runs(tmp_path):
    code = python_block()
    assert code.count("num_images=512") == 1
    folder = _folder(tmp_path, DEMO_MODEL, calib_images=8)
    run = _run(folder, code.replace("num_images=512", "num_images=8"), timeout=900)
    _check_outputs(folder, run)


@pytest.mark.slow
def test_readme_python_block_literally(tmp_path):
    """As written: torchvision-layout ResNet-50-FPN (seeded weights), 512 calibration images at
    800x1344 (about 6 GB per image of batch; the batch comes from the memory here)."""
    subprocess.run([sys.executable, "-m", "retina_trt.bench.weights", str(tmp_path / "r50.pth")], check=True, cwd=ROOT)
    folder = _folder(tmp_path, tmp_path / "r50.pth", calib_images=512)
    _check_outputs(folder, _run(folder, python_block(), timeout=4 * 3600))
