"""The real TensorRT 10.x / 11.x Python bindings over stub native libraries, for the API
conformance tests (tests/test_trt_conformance.py; docs: README "What runs where").

The bindings wheels (``tensorrt-cu12-bindings``, ``tensorrt-cu13-bindings``) are real PyPI wheels
without TensorRT's native libraries. They import once ``libnvinfer``, ``libnvonnxparser`` and
``libnvinfer_plugin`` are replaced by a stub exporting the nine C symbols ``tensorrt.so`` needs;
then every class, method and enum can be inspected (nothing executes).

``make`` runs ``python tests/trt_bindings.py`` in its install step, so a test run needs no
network: it downloads both wheels once into ``.venv/trt-bindings`` (or
``$RETINA_TRT_BINDINGS_DIR``), unpacks them and builds the stubs with gcc. Idempotent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINDINGS = {
    "10": ("tensorrt-cu12-bindings", "10.13.3.9"),
    "11": ("tensorrt-cu13-bindings", "11.4.0.106"),
}
STUB_SYMBOLS = (
    "createInferBuilder_INTERNAL",
    "createInferRefitter_INTERNAL",
    "createInferRuntime_INTERNAL",
    "createNvOnnxParser_INTERNAL",
    "createNvOnnxParserRefitter_INTERNAL",
    "getNvOnnxParserVersion",
    "getBuilderPluginRegistry",
    "getPluginRegistry",
    "initLibNvInferPlugins",
)
STUB_LIBS = ("nvinfer", "nvonnxparser", "nvinfer_plugin")


class BindingsMissing(RuntimeError):
    """The bindings or stubs are not installed: run ``make venv``."""


def cache_dir() -> Path:
    env = os.environ.get("RETINA_TRT_BINDINGS_DIR")
    return Path(env) if env else ROOT / ".venv" / "trt-bindings"


def _home(major: str) -> Path:
    dist, version = BINDINGS[major]
    return cache_dir() / f"{dist}-{version}"


def install(major: str) -> Path:
    """Download and unpack the bindings wheel, build the stub libraries; returns their home."""
    dist, version = BINDINGS[major]
    home = _home(major)
    site, stubs = home / "site", home / "stubs"
    with tempfile.TemporaryDirectory() as tmp_root:
        tmp = Path(tmp_root)
        if not (site / "tensorrt_bindings" / "__init__.py").is_file():
            print(f"downloading {dist}=={version} (API conformance tests)", flush=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "--progress-bar",
                    "off",
                    "--only-binary=:all:",
                    f"{dist}=={version}",
                    "-d",
                    str(tmp),
                ],
                check=True,
            )
            (wheel,) = tmp.glob("*.whl")
            staging = home / "site.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(staging)
            # The wheel's package is `tensorrt_bindings`; the `tensorrt` meta-package re-exports it.
            (staging / "tensorrt").symlink_to("tensorrt_bindings")
            shutil.rmtree(site, ignore_errors=True)
            staging.rename(site)
        if not all((stubs / f"lib{lib}.so.{major}").is_file() for lib in STUB_LIBS):
            if shutil.which("gcc") is None:
                raise BindingsMissing("gcc is needed to build the TensorRT stub libraries (apt-get install gcc)")
            stubs.mkdir(parents=True, exist_ok=True)
            source = tmp / f"stub{major}.c"
            source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in STUB_SYMBOLS))
            for lib in STUB_LIBS:
                soname = f"lib{lib}.so.{major}"
                subprocess.run(
                    ["gcc", "-shared", "-fPIC", "-o", str(stubs / soname), str(source), f"-Wl,-soname,{soname}"],
                    check=True,
                )
    return home


def bindings_env(major: str) -> dict[str, str]:
    """Environment for a subprocess that imports the real ``tensorrt`` {major}.x bindings."""
    home = _home(major)
    site, stubs = home / "site", home / "stubs"
    if not (site / "tensorrt_bindings" / "__init__.py").is_file() or not (stubs / f"libnvinfer.so.{major}").is_file():
        raise BindingsMissing(
            f"the TensorRT {major}.x bindings are not installed in {home}: run `make venv` "
            f"(or `python tests/trt_bindings.py`) once with network access"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT / "tests")])
    env["TRITON_INTERPRET"] = "0"  # the plugin's aot_impl compiles real PTX
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(stubs), env.get("LD_LIBRARY_PATH")]))
    return env


if __name__ == "__main__":
    for major in sorted(BINDINGS):
        print(f"TensorRT {major}.x bindings ready in {install(major)}")
