"""A real Triton Inference Server for ``retina-trt serve`` (docs/serving.md).

The server is NVIDIA's ``tritonserver`` binary that the ``nvidia-pytriton`` wheel bundles, with
its Python backend, from the serving environment ``make serve-env`` builds (``.venv-serve``, or
``$RETINA_TRT_SERVE_ENV``; its own venv because PyTriton pins numpy<2). An ``.onnx`` is served by
the Python backend through retina_trt's ONNX Runtime backend (``python_model.py``); a repository
made by ``export-triton`` is served as it is (``tensorrt_plan`` / ``onnxruntime_onnx`` entries need
Triton's TensorRT / ONNX Runtime backends, which the Triton container has and this wheel does not).

What the wheel's server needs, found the hard way (issue #20): the Python backend and the stub
for the environment's Python version copied into one backend folder; the environment's ``bin/``
first on ``PATH`` (the stub runs ``python3``); the wheel's bundled libraries and the
interpreter's own ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (a libpython of another patch release
breaks the stub); a bounded wait for readiness (a stub that cannot start leaves a model loading
for minutes without an error).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from retina_trt.errors import BackendUnavailableError, RetinaTrtError

ROOT = Path(__file__).resolve().parents[2]
SERVE_ENV_VAR = "RETINA_TRT_SERVE_ENV"


class ServerError(RetinaTrtError):
    """The Triton server did not start, or stopped: the message carries the end of its log."""


@dataclass(frozen=True)
class ServeEnv:
    """The serving environment: its python, site-packages, the tritonserver binary."""

    root: Path
    python: Path
    site: Path
    binary: Path
    libdir: str
    python_version: str


def serve_env() -> ServeEnv:
    """Locate the serving environment; BackendUnavailableError saying how to make it if absent."""
    root = Path(os.environ.get(SERVE_ENV_VAR) or ROOT / ".venv-serve")
    python = root / "bin" / "python"
    hint = f"the Triton serving environment is not installed at {root}: run `make serve-env` (or set {SERVE_ENV_VAR})"
    if not python.is_file():
        raise BackendUnavailableError(hint)
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import json, sys, sysconfig, pytriton, pathlib; print(json.dumps("
            "[sysconfig.get_config_var('LIBDIR'), f'{sys.version_info[0]}.{sys.version_info[1]}', "
            "str(pathlib.Path(pytriton.__file__).parent.parent)]))",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise BackendUnavailableError(f"{hint} ({probe.stderr.strip().splitlines()[-1:] or ''})")
    libdir, version, site = json.loads(probe.stdout)
    binary = Path(site) / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise BackendUnavailableError(f"{hint} (no tritonserver binary in {binary.parent})")
    return ServeEnv(root, python, Path(site), binary, libdir, version)


@dataclass
class TritonServer:
    """A running server: its URLs, process and log; ``stop()`` ends it (idempotent)."""

    process: subprocess.Popen
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    workdir: Path
    log: Path
    owned: list[Path] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def log_summary(self) -> str:
        """One line: the server's error lines (or its last line), for an error message."""
        tail = self.log_tail(1).splitlines()
        errors = [
            line for line in tail if line[:1] == "E" and line[1:5].isdigit() and "CudaDriverHelper" not in line
        ] or tail[-1:]  # (no driver on a CPU machine: always logged)
        text = " | ".join(line.split("] ", 1)[-1].strip() for line in errors)
        return (text[:1500] + " ...") if len(text) > 1500 else text

    def log_tail(self, lines: int = 8) -> str:
        """The server's error lines (``E...``, e.g. a model that failed to load) and its last lines."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [line for line in text if line[:1] == "E" and line[1:5].isdigit()]
        return "\n".join([*errors, *[line for line in text[-lines:] if line not in errors]])

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server's process group (its stubs included), SIGKILL after ``timeout_s``;
        remove the backend folder and temporary repository."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        for path in self.owned:
            shutil.rmtree(path, ignore_errors=True)
        self.owned.clear()

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` TCP ports free on ``host`` right now (for the server's HTTP, gRPC and metrics)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _ready(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


# long function: the Triton server's command line, start and readiness wait, whose process spans them
def start_server(
    repository: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    timeout_s: float = 120.0,
    env: ServeEnv | None = None,
    owned: list[Path] | None = None,
) -> TritonServer:
    """Start ``tritonserver`` on ``repository`` and wait until it is ready (``timeout_s``).

    Raises:
        BackendUnavailableError: no serving environment. ServerError: the server exited or did
            not become ready in time (with the end of its log).
    """
    env = env or serve_env()
    workdir = Path(tempfile.mkdtemp(prefix="retina_trt_serve_"))
    backends = workdir / "backends" / "python"
    tritonserver = env.binary.parent.parent
    shutil.copytree(tritonserver / "backends" / "python", backends, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(tritonserver / "python_backend_stubs" / env.python_version / "triton_python_backend_stub", backends)
    log = workdir / "tritonserver.log"
    variables = dict(os.environ)
    variables["PATH"] = os.pathsep.join([str(env.root / "bin"), variables.get("PATH", "")])
    libs = [env.libdir, str(env.site / "nvidia_pytriton.libs"), variables.get("LD_LIBRARY_PATH", "")]
    variables["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
    command = [
        str(env.binary),
        "--model-repository",
        str(repository),
        "--backend-directory",
        str(workdir / "backends"),
        "--http-address",
        host,
        "--http-port",
        str(http_port),
        "--grpc-address",
        host,
        "--grpc-port",
        str(grpc_port),
        "--metrics-address",
        host,
        "--metrics-port",
        str(metrics_port),
        "--exit-on-error=true",
        "--strict-readiness=true",
    ]
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=variables, start_new_session=True
        )
    server = TritonServer(process, host, http_port, grpc_port, metrics_port, workdir, log, [workdir, *(owned or [])])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            summary = server.log_summary()
            server.stop()
            raise ServerError(f"tritonserver exited with code {process.returncode}: {summary}")
        if _ready(host, http_port):
            return server
        time.sleep(0.2)
    summary = server.log_summary()
    server.stop()
    raise ServerError(f"tritonserver was not ready within {timeout_s:.0f} s: {summary}")


def serve_model(
    model: str | os.PathLike,
    *,
    name: str | None = None,
    instances: int = 1,
    max_batch: int | None = None,
    queue_delay_us: int = 100,
    **server_options,
) -> TritonServer:
    """Serve ``model``: an ``.onnx`` through the Python backend (a temporary repository), or a
    repository folder made by ``export-triton`` as it is. Returns the running server."""
    from .triton import export_triton

    model = Path(model)
    env = serve_env()  # before any work: a missing environment is one clear error
    if model.is_dir():
        return start_server(model, env=env, **server_options)
    if model.suffix.lower() != ".onnx":
        raise ValueError(
            f"retina-trt serve takes an .onnx or a repository from export-triton, got {model}; an .engine needs "
            "Triton's TensorRT backend (the Triton container on a GPU machine): export-triton it and serve that "
            "repository there"
        )
    repository = Path(tempfile.mkdtemp(prefix="retina_trt_repo_"))
    try:
        export_triton(
            model,
            repository,
            name=name or "retina",
            instances=instances,
            kind="cpu",
            max_queue_delay_us=queue_delay_us,
            backend="python",
            max_batch=max_batch,
        )
        return start_server(repository, env=env, owned=[repository], **server_options)
    except BaseException:
        shutil.rmtree(repository, ignore_errors=True)
        raise
