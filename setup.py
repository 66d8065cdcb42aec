"""retina-trt: deploy RetinaNet detectors with NVIDIA TensorRT."""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent


def _version() -> str:
    for line in (ROOT / "retina_trt" / "_version.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("retina_trt/_version.py has no __version__")


# ONNX Runtime: the GPU build also runs on the CPU, and NVIDIA Model Optimizer (the `int8`
# extra) depends on it. Installing both `onnxruntime` and `onnxruntime-gpu` breaks both, so
# Linux x86_64 gets only the GPU build and other platforms only the CPU build.
_ORT_GPU_PLATFORM = "platform_system == 'Linux' and platform_machine == 'x86_64'"
_ORT_CPU_PLATFORM = "platform_system != 'Linux' or platform_machine != 'x86_64'"

setup(
    name="retina-trt",
    version=_version(),
    description="Deploy RetinaNet object detectors with NVIDIA TensorRT: ONNX export, "
    "FP16/INT8 engines, custom NMS plugin, Python runtime.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        "retina_trt",
        "retina_trt.cli",
        "retina_trt.contract",
        "retina_trt.io",
        "retina_trt.model",
        "retina_trt.export",
        "retina_trt.runtime",
        "retina_trt.streams",
        "retina_trt.analytics",
        "retina_trt.trt",
        "retina_trt.serving",
        "retina_trt.data",
        "retina_trt.bench",
        "retina_trt.calibration",
        "retina_trt.plugins",
    ],
    package_dir={
        "retina_trt": "retina_trt",
        "retina_trt.calibration": "calibration",
        "retina_trt.plugins": "plugins",
    },
    # `pip install retina-trt` is the runtime only (Detector on .onnx / .engine files, `retina-trt
    # detect`): no torch. The `build` extra brings what exports, calibrates, trains and evaluates.
    install_requires=[
        "numpy>=1.24",
        f"onnxruntime-gpu>=1.18; {_ORT_GPU_PLATFORM}",
        f"onnxruntime>=1.18; {_ORT_CPU_PLATFORM}",
        "opencv-python-headless>=4.8",
        "tqdm>=4.60",
    ],
    extras_require={
        "build": [
            "torch>=2.4",
            "torchvision>=0.19",
            "onnx>=1.16",
            "onnxslim>=0.1.40",
            "faster-coco-eval>=1.6",
            "nvidia-modelopt[onnx]>=0.40",
        ],
        # Pick the extra whose CUDA major matches the driver stack: TensorRT 10.x on CUDA 12 ...
        "trt-cu12": [
            "tensorrt-cu12>=10.8,<11",
            "cuda-python>=12.4,<13",
        ],
        # ... TensorRT 11.x on CUDA 13 ...
        "trt-cu13": [
            "tensorrt-cu13>=11,<12",
            "cuda-python>=13,<14",
        ],
        # ("trt" is the CUDA 12 set, kept for existing installs)
        "trt": [
            "tensorrt-cu12>=10.8,<11",
            "cuda-python>=12.4,<13",
        ],
        "trt-rtx": [
            # TensorRT for RTX: a real ONNX parser and engine builder that runs without a GPU
            # (engines for RTX / Ampere+ GPUs; running them needs one). `make` installs it.
            "tensorrt-rtx-cu13>=1.7",
            # running its engines (on a GPU) also needs cuda.bindings: torch's CUDA build brings
            # it; else pip install "cuda-python>=13,<14"
        ],
        "int8": [
            "nvidia-modelopt[onnx]>=0.40",
        ],
        "openvino": [
            # the fastest CPU route: OpenVINO runs our FP32 and INT8 (Q/DQ) ONNX files directly
            "openvino>=2024.4",
        ],
        "plugin": [
            "onnxruntime-extensions>=0.12",  # nms="plugin" ONNX models in ONNX Runtime
        ],
        "triton": [
            "tritonclient[grpc,http]>=2.40",  # samples/triton_client.py
        ],
        "bench": [
            "matplotlib>=3.7",  # the benchmark's latency plot
        ],
        "analytics": [
            # retina-trt analyze: supervision interop, event sinks. The trackers library (ByteTrack,
            # SORT, OC-SORT) asks for opencv-python, which must not sit beside opencv-python-headless:
            # install it without its dependencies, `pip install --no-deps trackers==2.6.1`; these
            # are its other dependencies (make does both; docs/analytics.md).
            "supervision>=0.26",
            "scipy>=1.13",
            "rich>=13",
            "pydeprecate>=0.8",
            "requests>=2.28",
            "paho-mqtt>=2.0",
            "redis>=5",
            "prometheus-client>=0.20",  # analyze --metrics: the exposition comes from the library
        ],
        "dev": [
            "matplotlib>=3.7",
            "tritonclient[grpc,http]>=2.40",  # validates config.pbtxt with Triton's model-config schema
            "onnxruntime-extensions>=0.12",  # runs the NMS plugin nodes in ONNX Runtime
            "pytest>=8",
            "ruff>=0.6",
            "pycocotools>=2.0.7",  # cross-checks faster-coco-eval in the tests
            "selenium>=4.20",  # drives Debian's headless Chromium in the live-view test
        ],
    },
    entry_points={"console_scripts": ["retina-trt=retina_trt.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
