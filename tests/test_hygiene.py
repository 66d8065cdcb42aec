"""`import retina_trt` and `retina-trt --help` stay light: no tensorrt, triton, modelopt, cuda."""

import shutil
import subprocess
import sys

HEAVY = ("tensorrt", "tensorrt_rtx", "triton", "modelopt", "cuda", "pycuda")

CHECK = """
import sys
{code}
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})
print(heavy)
"""


def _loaded(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(code=code, heavy=HEAVY)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_import_loads_no_gpu_library():
    assert _loaded("import retina_trt; retina_trt.ModelSpec()") == "[]"


def test_cli_help_loads_no_gpu_library():
    code = "from retina_trt.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert _loaded(code) == "[]"


def test_console_script_is_installed():
    exe = shutil.which("retina-trt") or str(__import__("pathlib").Path(sys.executable).parent / "retina-trt")
    result = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "export" in result.stdout and "detect" in result.stdout


def test_public_api_has_docstrings():
    import retina_trt

    for name in retina_trt.__all__:
        obj = getattr(retina_trt, name)
        if callable(obj):
            assert obj.__doc__ and len(obj.__doc__.strip()) > 20, name


def test_import_changes_no_environment_variable():
    """Importing the package (and the plugins, the runtime and the CLI module) leaves os.environ
    as it was: the retina-trt command sets its own process's defaults, the library never does."""
    code = (
        "import os, json, cv2, torch  # third-party imports may set their own (OpenCV: LD_LIBRARY_PATH)\n"
        "before = dict(os.environ)\n"
        "import retina_trt, retina_trt.plugins, retina_trt.runtime.detector, retina_trt.cli\n"
        "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))"
    )
    env = {
        k: v for k, v in __import__("os").environ.items() if k not in ("TRITON_INTERPRET", "OPENCV_IO_MAX_IMAGE_PIXELS")
    }
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_no_long_function_without_a_reason():
    """No function of the package is over 60 lines unless the line above it says why
    (``# long function: <reason>``): functions short enough to read at once."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    unexplained = []
    for folder in ("retina_trt", "calibration", "plugins"):
        for path in sorted((root / folder).rglob("*.py")):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                    above = lines[first - 2].strip() if first >= 2 else ""
                    if not (above.startswith("# long function: ") and len(above) > len("# long function: ") + 10):
                        unexplained.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    assert not unexplained, "over 60 lines without a reason:\n" + "\n".join(unexplained)
