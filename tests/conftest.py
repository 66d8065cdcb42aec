"""Shared fixtures. Tests marked ``gpu`` skip unless CUDA and TensorRT are both present."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# The process defaults the retina-trt command sets (cli.process_defaults), before anything imports
# OpenCV or Triton: the plugin's kernels run under Triton's interpreter, OpenCV's pixel limit.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 27))

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import make_tiny_model


def _gpu_available() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # a broken CUDA install counts as no GPU
        return False


def pytest_collection_modifyitems(config, items):
    if _gpu_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA and TensorRT")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, artifacts) -> Path:
    from retina_trt import save_checkpoint

    return save_checkpoint(tiny_model, artifacts / "tiny.pt")


@pytest.fixture(scope="session")
def onnx_models(tiny_model, artifacts) -> dict[tuple[str, bool], Path]:
    """(nms, dynamic) -> exported ONNX of the tiny model (fixed exports are 256x384)."""
    from retina_trt import export_onnx

    models = {}
    for nms in ("onnx", "none"):
        for dynamic in (False, True):
            shape = {"dynamic_shapes": True} if dynamic else {"input_size": (256, 384)}
            path = artifacts / f"tiny_{nms}_{'dynamic' if dynamic else 'fixed'}.onnx"
            models[(nms, dynamic)] = export_onnx(tiny_model, path, nms=nms, **shape)
    return models


def scene(height: int, width: int, seed: int) -> np.ndarray:
    """A textured test image with a few filled shapes (HxWx3 uint8 BGR)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 3)
    for _ in range(6):
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(5, max(6, min(height, width) // 3)))
        cv2.circle(image, center, radius, color, -1)
    return image


@pytest.fixture(scope="session")
def images():
    """Three images of different sizes and aspect ratios."""
    return [scene(240, 320, 1), scene(300, 200, 2), scene(180, 400, 3)]


@pytest.fixture(scope="session")
def image_dir(images, artifacts) -> Path:
    folder = artifacts / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"img{i}.jpg"), image)
    return folder


@pytest.fixture(scope="session")
def video_file(artifacts) -> Path:
    """A short real MJPG/AVI video (12 frames, 160x120)."""
    path = artifacts / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for i in range(12):
        frame = scene(120, 160, 100)
        cv2.rectangle(frame, (10 + 5 * i, 20), (50 + 5 * i, 70), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    return path


DEMO_MODEL = Path(__file__).parent.parent / "samples" / "models" / "shapes_r18.pt"


@pytest.fixture(scope="session")
def demo_onnx(artifacts) -> Path:
    """The shipped demo model exported to ONNX (256x256, nms=onnx)."""
    from retina_trt import export_onnx

    return export_onnx(DEMO_MODEL, artifacts / "shapes_r18.onnx")
