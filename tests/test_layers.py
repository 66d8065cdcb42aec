"""The package's layers (docs/ARCHITECTURE.md): imports run one way, without cycles, and the
runtime deploys without torch.

The import graph is read from the source (``ast``): module-level imports, imports inside functions,
and modules named by string (``importlib.import_module("retina_trt....")``, and names of our
modules in the tables that feed it). Only imports under ``TYPE_CHECKING`` are not edges. An
upward or forbidden edge is allowed only where ``ALLOWED`` names it, with the reason.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "retina_trt": ROOT / "retina_trt",
    "retina_trt.calibration": ROOT / "calibration",
    "retina_trt.plugins": ROOT / "plugins",
}

# Lower layers never import higher ones (same layer: allowed, no cycles).
LAYERS = [
    (
        "contract",
        ["retina_trt._version", "retina_trt.errors", "retina_trt.spec", "retina_trt.utils", "retina_trt.contract"],
    ),
    ("image", ["retina_trt.image"]),
    ("io", ["retina_trt.io"]),
    ("model", ["retina_trt.model"]),
    ("runtime", ["retina_trt.runtime"]),
    ("streams", ["retina_trt.streams"]),
    ("analytics", ["retina_trt.analytics"]),
    ("export", ["retina_trt.export"]),
    ("precision", ["retina_trt.calibration"]),
    ("trt", ["retina_trt.trt"]),
    ("serving", ["retina_trt.serving"]),
    ("plugins", ["retina_trt.plugins"]),
    ("pipeline", ["retina_trt.pipeline"]),
    ("data", ["retina_trt.data"]),
    (
        "applications",
        ["retina_trt.train", "retina_trt.evaluate", "retina_trt.argtypes", "retina_trt.bench", "retina_trt"],
    ),
    ("cli", ["retina_trt.cli"]),
]
# Layers that must not see each other although one is "above" the other: the runtime, streams and
# analytics never import the model, export, precision, trt or plugin code.
FORBIDDEN = {
    "io": {"model"},
    "runtime": {"model", "export", "precision", "trt", "plugins"},
    "streams": {"model", "export", "precision", "trt", "plugins"},
    "analytics": {"model", "export", "precision", "trt", "plugins"},
}
# The only upward or forbidden edges, each imported on demand, never at module level.
ALLOWED = {
    # the torch backend is the PyTorch reference: it runs the model, and the table loads it for .pt only
    ("retina_trt.runtime.torch_backend", "retina_trt.model.checkpoint"),
    ("retina_trt.runtime.torch_backend", "retina_trt.model.normalize"),
    # the table of backends names the TensorRT backend, which stays in trt/ (the only code importing tensorrt)
    ("retina_trt.runtime.backends", "retina_trt.trt.runtime"),
    # an ONNX with the NMS plugin's nodes runs them in ONNX Runtime as the plugin's own Python operators
    ("retina_trt.runtime.onnxruntime_backend", "retina_trt.plugins.ort_ops"),
    # Detector.stream / Detector.streams: the convenience entries into the streams layer
    ("retina_trt.runtime.detector", "retina_trt.streams"),
    # an engine with the NMS plugin: the builder registers the plugin's AOT implementation first
    ("retina_trt.trt.builder", "retina_trt.plugins.registration"),
    # calibration's "synthetic" data is the training distribution's own generator
    ("retina_trt.calibration.data", "retina_trt.data.synthetic"),
}
# Modules that import at module level what others only import on demand (edges ALLOWED above are
# on-demand imports; these must stay so).
MODULE_LEVEL_ALLOWED: set[tuple[str, str]] = {
    ("retina_trt.runtime.torch_backend", "retina_trt.model.checkpoint"),
    ("retina_trt.runtime.torch_backend", "retina_trt.model.normalize"),
}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def layer_of(module: str) -> tuple[int, str]:
    best = None
    for index, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[2]:
                    best = (index, name, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0], best[1]


def _resolve(node: ast.ImportFrom, package: str) -> str:
    base = node.module or ""
    if node.level:
        anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{anchor}.{base}" if base else anchor
    return base


def imports_of(module: str, path: Path, known: set[str]) -> dict[str, bool]:
    """Every module of ours that ``module`` imports -> whether at module level (True) or only on
    demand (False: inside a function, or named by string)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: dict[str, bool] = {}

    def add(names, top: bool) -> None:
        for name in names:
            if name in known and name != module:
                found[name] = found.get(name, False) or top

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            add([alias.name for alias in node.names], top)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            add([base, *(f"{base}.{alias.name}" for alias in node.names)], top)
        elif isinstance(node, (ast.Call, ast.Tuple, ast.List)) or isinstance(node, ast.Dict):
            values = (
                node.args if isinstance(node, ast.Call) else node.values if isinstance(node, ast.Dict) else node.elts
            )
            add([v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)], False)
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    for node in tree.body:
        visit(node, True)
    return found


def module_level_imports(module: str, path: Path, known: set[str]) -> set[str]:
    return {name for name, top in imports_of(module, path, known).items() if top}


def graph(*, module_level_only: bool = False) -> dict[str, set[str]]:
    found = modules()
    edges = {m: imports_of(m, p, set(found)) for m, p in found.items()}
    return {m: {t for t, top in e.items() if top or not module_level_only} for m, e in edges.items()}


def test_every_module_is_in_a_layer():
    for module in modules():
        layer_of(module)


def test_no_upward_or_forbidden_imports():
    """Module level, inside functions and by string: only the edges ALLOWED names go up."""
    problems = []
    found = modules()
    for module, targets in sorted(graph().items()):
        here, here_name = layer_of(module)
        level = imports_of(module, found[module], set(found))
        for target in sorted(targets):
            there, there_name = layer_of(target)
            if module.startswith(target + ".") or target == "retina_trt":
                continue  # a package's own __init__ (parents load first anyway)
            bad = there > here or there_name in FORBIDDEN.get(here_name, ())
            if not bad:
                continue
            if (module, target) not in ALLOWED:
                problems.append(f"{module} ({here_name}) imports {target} ({there_name})")
            elif level[target] and (module, target) not in MODULE_LEVEL_ALLOWED:
                problems.append(f"{module} imports {target} at module level; ALLOWED is for imports on demand")
    assert not problems, "\n".join(problems)


def test_every_allowed_edge_exists():
    """ALLOWED lists no edge that is gone (an allow-list that outlives its reason hides the next one)."""
    edges = graph()
    assert not [pair for pair in ALLOWED if pair[1] not in edges.get(pair[0], set())]


def test_no_import_cycles():
    """No cycle among module-level imports, nor among all imports (on demand and by string too)."""
    for only in (True, False):
        edges = graph(module_level_only=only)
        state: dict[str, int] = {}
        cycles = []

        def walk(node, stack, edges=edges, state=state, cycles=cycles):
            state[node] = 1
            for target in sorted(edges[node]):
                if node.startswith(target + ".") or target == "retina_trt" or node == "retina_trt":
                    continue
                if state.get(target) == 1:
                    cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
                elif target not in state:
                    walk(target, [*stack, target])
            state[node] = 2

        for node in sorted(edges):
            if node not in state:
                walk(node, [node])
        assert not cycles, "\n".join(cycles)


def test_the_checker_sees_imports_in_functions_and_by_string(tmp_path):
    """The graph reader finds module-level imports, imports inside functions and modules named by
    string, and tells them apart."""
    source = tmp_path / "x.py"
    source.write_text(
        "import retina_trt.trt.builder\nfrom retina_trt.model import retinanet\n"
        "def f():\n    import retina_trt.export.onnx_export\n"
        "TABLE = {'a': ('retina_trt.serving.triton', 'X')}\n"
        "def g():\n    return importlib.import_module('retina_trt.pipeline')\n"
    )
    found = imports_of("retina_trt.runtime.x", source, set(modules()))
    assert found == {
        "retina_trt.trt.builder": True,
        "retina_trt.model": True,
        "retina_trt.model.retinanet": True,
        "retina_trt.export.onnx_export": False,
        "retina_trt.serving.triton": False,
        "retina_trt.pipeline": False,
    }


# ---- the runtime without torch ----------------------------------------------------------------

BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = ("torch", "torchvision", "triton", "onnx", "modelopt")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed (blocked by the test)")
    sys.meta_path.insert(0, Block())
""")


def _without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


@pytest.mark.parametrize("nms", ["onnx", "none"])
def test_detector_on_onnx_without_torch(onnx_models, image_dir, nms):
    """Detector on an .onnx runs where torch, torchvision, onnx and triton cannot be imported
    (``nms="none"``: the numpy reference NMS on the host), and equals the same model with them."""
    from retina_trt import Detector

    model = onnx_models[(nms, False)]
    images = sorted(str(p) for p in image_dir.glob("*.jpg"))
    result = _without_torch(f"""
        import json, sys
        from retina_trt import Detector
        with Detector({str(model)!r}) as det:
            out = [det(p) for p in {images!r}]
            print("backend", det.backend)
        print(json.dumps([[d.scores.tolist(), d.class_ids.tolist()] for d in out]))
        assert not any(m.split(".")[0] in BLOCKED for m in sys.modules)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    got = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    import importlib.util

    # where OpenVINO is installed, the torch- and onnx-free run was on it (auto), not a fallback
    expected = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"
    assert f"backend {expected}" in result.stdout, result.stdout + result.stderr[-2000:]
    with Detector(model) as det:
        want = [det(p) for p in images]
    assert [g[1] for g in got] == [w.class_ids.tolist() for w in want]
    for g, w in zip(got, want):
        assert g[0] == pytest.approx(w.scores.tolist(), abs=0)
    assert sum(len(g[0]) for g in got) > 0


def test_detect_cli_without_torch(onnx_models, image_dir, tmp_path):
    result = _without_torch(f"""
        import sys
        from retina_trt.cli import main
        model, images, out = {str(onnx_models[("onnx", False)])!r}, {str(image_dir)!r}, {str(tmp_path / "out")!r}
        sys.exit(main(["detect", model, images, "--output", out]))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (tmp_path / "out" / "detections.jsonl").read_text().splitlines()
    assert len(lines) == len(list(image_dir.glob("*.jpg")))


def test_engine_load_without_torch_reaches_tensorrt(onnx_models, tmp_path):
    """Loading an .engine imports neither torch nor onnx nor the builder: without a GPU it ends
    at the clear "no CUDA GPU" error, after importing the real TensorRT-RTX."""
    rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is installed by `make`")
    from test_trt_routes import engine_file

    engine = engine_file(
        onnx_models[("none", False)], tmp_path / "none.engine", flavour="tensorrt_rtx", version=rtx.__version__
    )
    result = _without_torch(f"""
        import sys
        from retina_trt import Detector
        from retina_trt.errors import BackendUnavailableError
        try:
            Detector({str(engine)!r})
        except BackendUnavailableError as err:
            print(err)
        assert "tensorrt_rtx" in sys.modules and "retina_trt.trt.builder" not in sys.modules
        assert not any(m.split(".")[0] in BLOCKED for m in sys.modules)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no CUDA GPU is visible" in result.stdout


@pytest.mark.slow
def test_runtime_only_install_in_a_fresh_venv(onnx_models, image_dir, tmp_path):
    """`pip install .` (no extra, with its dependencies) is the runtime only: no torch, and it runs
    Detector and `retina-trt detect` on an .onnx. Needs the package index (or pip's cache); `make
    test-install` runs it (and `make test-all`). Prints the environment's size."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    source = tmp_path / "src"  # a copy of the tracked files: building in the work tree would leave build/ there
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), str(source)], check=True, timeout=900)
    python = str(venv / "bin" / "python")
    probe = subprocess.run(
        [python, "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "True"
    model = onnx_models[("none", False)]
    out = subprocess.run(
        [
            python,
            "-c",
            f"from retina_trt import Detector\nd = Detector({str(model)!r})\n"
            f"print(len(d({str(next(image_dir.glob('*.jpg')))!r}).scores))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0 and int(out.stdout.strip()) > 0, out.stderr[-3000:]
    detect = subprocess.run(
        [
            str(venv / "bin" / "retina-trt"),
            "detect",
            str(onnx_models[("onnx", False)]),
            str(image_dir),
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert detect.returncode == 0, detect.stderr[-3000:]
    assert (tmp_path / "out" / "detections.jsonl").read_text().count("\n") == len(list(image_dir.glob("*.jpg")))
    size = sum(f.stat().st_size for f in (venv / "lib").rglob("*") if f.is_file())
    print(f"runtime-only venv: {size / 2**20:.0f} MiB under lib/")


def test_setup_py_lists_every_package():
    """A package missing from setup.py's explicit list is missing from every installed copy
    (the fresh-venv test above found retina_trt.cli that way)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    listed = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "packages"
    )
    found = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert found == set(listed), f"missing: {sorted(found - set(listed))}, stale: {sorted(set(listed) - found)}"
