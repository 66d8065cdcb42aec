"""Run by tests/test_trt_conformance.py in a subprocess whose ``tensorrt`` is a real bindings
wheel loaded over stub native libraries (nothing can execute inside TensorRT).

Prints one JSON object: the TensorRT version, every TensorRT name retina_trt's TensorRT-facing
code uses with whether it exists in this version, and the results of the version-gated helpers
(pure enum arithmetic, which runs with the stubs).

The names come from the source (``ast``): attribute chains on ``trt`` (``trt.BuilderFlag.X``),
methods and attributes used on variables that by convention hold TensorRT objects (``builder``,
``network``, ``config``, ...), methods that subclasses of TensorRT interfaces override, and names
read through ``getattr(<trt object>, "NAME", default)``, which are version-gated: they must exist
in at least one supported version, the others in every one.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import sys
from pathlib import Path

# Variable name -> TensorRT class it holds, across retina_trt/trt and plugins.
VAR_TYPES = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "config": "IBuilderConfig",
    "parser": "OnnxParser",
    "error": "ParserError",
    "profile": "IOptimizationProfile",
    "timing_cache": "ITimingCache",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "_engine": "ICudaEngine",
    "_runtime": "Runtime",
    "context": "IExecutionContext",
    "trt_logger": "ILogger",
}


def _chain(node: ast.AST, root: str = "trt") -> list[str] | None:
    """``trt.A.B`` -> ["A", "B"]; None when the chain is not rooted at ``root``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id == root:
        return parts[::-1]
    return None


def module_chains(source: str, root: str) -> set[str]:
    """Every longest attribute chain on the name ``root`` in ``source`` (e.g. ``cudart``)."""
    chains = {
        ".".join(p)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        for p in [_chain(node, root)]
        if p
    }
    return {c for c in chains if not any(o.startswith(c + ".") for o in chains)}


def _resolve(trt, parts: list[str]) -> bool:
    obj = trt
    for part in parts:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def uses_in_source(source: str, filename: str = "<source>") -> list[dict]:
    """Every TensorRT name ``source`` uses: {"name", "kind", "gated", "where"}."""
    tree = ast.parse(source, filename)
    uses: list[dict] = []
    gated_nodes: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            base = _chain(node.args[0])
            if base is not None:
                gated_nodes.add(id(node.args[0]))
                uses.append(
                    {
                        "name": ".".join([*base, node.args[1].value]),
                        "kind": "trt",
                        "gated": True,
                        "where": f"{filename}:{node.lineno}",
                    }
                )
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts = _chain(node)
            if parts is not None and id(node) not in gated_nodes:
                uses.append(
                    {"name": ".".join(parts), "kind": "trt", "gated": False, "where": f"{filename}:{node.lineno}"}
                )
                continue
            holder = node.value
            if isinstance(holder, ast.Attribute) and isinstance(holder.value, ast.Name) and holder.value.id == "self":
                holder = ast.Name(id=holder.attr)
            if isinstance(holder, ast.Name) and holder.id in VAR_TYPES:
                uses.append(
                    {
                        "name": f"{VAR_TYPES[holder.id]}.{node.attr}",
                        "kind": "var",
                        "gated": False,
                        "where": f"{filename}:{node.lineno}",
                    }
                )
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                parts = _chain(base)
                if parts is None:
                    continue
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                        uses.append(
                            {
                                "name": ".".join([*parts, item.name]),
                                "kind": "override",
                                "gated": False,
                                "where": f"{filename}:{item.lineno}",
                            }
                        )
    # A chain's prefixes are uses too (trt.A for trt.A.B); keep only the longest of each.
    names = {u["name"] for u in uses if u["kind"] == "trt"}
    return [u for u in uses if u["kind"] != "trt" or not any(n.startswith(u["name"] + ".") for n in names)]


def check(trt, uses: list[dict]) -> list[dict]:
    return [{**u, "exists": _resolve(trt, u["name"].split("."))} for u in uses]


def main() -> int:
    import tensorrt as trt

    import retina_trt

    root = Path(retina_trt.__file__).parent
    modules = []
    for package in ("retina_trt.trt", "retina_trt.plugins"):
        pkg = importlib.import_module(package)
        modules.append(package)
        for info in pkgutil.walk_packages(pkg.__path__, package + "."):
            importlib.import_module(info.name)
            modules.append(info.name)
    uses = []
    sources = sorted((root / "trt").rglob("*.py")) + sorted((root.parent / "plugins").rglob("*.py"))
    for path in sources:
        uses.extend(uses_in_source(path.read_text(), str(path.relative_to(root.parent))))

    from retina_trt.trt import compat

    helpers = {
        "major": compat.trt_major(trt),
        "network_flags": compat.network_flags(trt),
        "network_flags_aot": compat.network_flags(trt, aot_plugins=True),
        "strongly_typed_bit": 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),
        "hardware_compat": {name: str(compat.hardware_compat_level(trt, name)) for name in compat.HARDWARE_COMPAT},
        "severity_levels": [compat.severity_level(trt, s) for s in trt.ILogger.Severity.__members__.values()],
    }
    # The NMS plugins: registered (TensorRT validates the descriptor / aot_impl signatures), and
    # their aot_impl launch functions run with constant-shape descriptors (Triton compiles PTX).
    import tensorrt.plugin as trtp
    from retina_trt.plugins import aot, registration

    plugin_names = set()
    for path in sorted((root.parent / "plugins").rglob("*.py")):
        plugin_names |= module_chains(path.read_text(), "trtp")
    registration.register_plugin(lazy=True)
    scores = trtp.from_shape_expr((2, 5000), dtype=trt.float32)
    boxes = trtp.from_shape_expr((2, 5000, 4), dtype=trt.float32)
    sort_name, sort_ptx, sort_launch, _ = registration.sort_launch(trtp, scores, 0.05, cc=80)
    mask_name, mask_ptx, mask_launch, _ = registration.mask_launch(trtp, boxes, 0.5, cc=80)
    nms_name, nms_ptx, nms_launch, _ = registration.nms_launch(trtp, boxes, 100, 8192, cc=80)
    plugin = {
        "trtp_names": {n: _resolve(trtp, n.split(".")) for n in sorted(plugin_names)},
        "kernels": [sort_name, mask_name, nms_name],
        "ptx_targets": [".target sm_80" in ptx for ptx in (sort_ptx, mask_ptx, nms_ptx)],
        "launch_types": [type(launch).__name__ for launch in (sort_launch, mask_launch, nms_launch)],
        # what TensorRT's launcher gets: the PTX entries' parameter counts (aot.py drops Triton's hidden two)
        "ptx_params": [len(aot._entry(ptx)[1]) for ptx in (sort_ptx, mask_ptx, nms_ptx)],
        "embedded": [dict(k) for k in registration.embedded_ptx],
    }
    print(
        json.dumps(
            {
                "version": trt.__version__,
                "modules": modules,
                "uses": check(trt, uses),
                "helpers": helpers,
                "plugin": plugin,
            }
        )
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--source":
        import tensorrt as trt

        print(json.dumps(check(trt, uses_in_source(sys.stdin.read()))))
        sys.exit(0)
    sys.exit(main())
