"""The per-layer precision of a built engine, read from TensorRT's own build report.

With ``ProfilingVerbosity.DETAILED`` the builder logs (at VERBOSE) a ``Layers:`` section, one
line per engine layer: its type, the datatypes of its inputs, constants and outputs, and in
``Metadata`` the ONNX nodes fused into it. TensorRT-RTX writes it without a GPU, so the precision
each layer really runs in is checked on the CPU. No ``tensorrt`` import here: pure parsing.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

# ONNX node-name prefixes of the postprocess (export/postprocess_graph.py), which stays FP32.
POSTPROCESS_PREFIXES = ("postprocess/", "graph_nms_body/")
CONVOLUTION_TYPES = frozenset({"correlation", "convolution", "Convolution", "CaskConvolution"})
LOW_PRECISION = frozenset({"Half", "Int8", "BFloat16", "FP8", "Int4"})
# The datatype a convolution's input has at each engine precision.
CONV_DTYPE = {"fp32": "Float", "fp16": "Half", "int8": "Int8"}

_DTYPE = re.compile(r"Datatype: (\w+)")
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
_TYPE = re.compile(r"LayerType: (\w+)")


@dataclass(frozen=True)
class EngineLayer:
    """One engine layer: name, type, datatypes of its inputs and outputs, the ONNX nodes in it."""

    name: str
    layer_type: str
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]
    onnx_nodes: tuple[str, ...]

    @property
    def is_convolution(self) -> bool:
        return self.layer_type in CONVOLUTION_TYPES

    @property
    def in_postprocess(self) -> bool:
        return any(node.startswith(POSTPROCESS_PREFIXES) for node in self.onnx_nodes)


def parse_layers(log: str) -> list[EngineLayer]:
    """The engine layers of a builder log (empty if it has no ``Layers:`` section)."""
    start = log.find("Layers:\n")
    if start < 0:
        return []
    layers = []
    for line in log[start + len("Layers:\n") :].splitlines():
        if not line.startswith("Name: "):
            break
        name = line[len("Name: ") : line.find(", LayerType:")]
        kind = _TYPE.search(line)
        inputs, _, rest = line.partition(", Constants: [")
        _, _, outputs = rest.partition(", Outputs: [")
        outputs, _, metadata = outputs.partition("], TacticName")
        layers.append(
            EngineLayer(
                name=name,
                layer_type=kind.group(1) if kind else "?",
                input_dtypes=tuple(_DTYPE.findall(inputs)),
                output_dtypes=tuple(_DTYPE.findall(outputs)),
                onnx_nodes=tuple(n.strip() for n in _ONNX_LAYER.findall(metadata)),
            )
        )
    return layers


def summarize(layers: list[EngineLayer]) -> dict[str, Any]:
    """Counts for the engine header: convolutions by input datatype, postprocess layers by
    output datatype, and the total."""
    convs = Counter(layer.input_dtypes[0] if layer.input_dtypes else "?" for layer in layers if layer.is_convolution)
    post = Counter(dtype for layer in layers if layer.in_postprocess for dtype in set(layer.output_dtypes))
    return {
        "layers": len(layers),
        "convolutions": dict(sorted(convs.items())),
        "postprocess_layers": sum(1 for layer in layers if layer.in_postprocess),
        "postprocess_output_dtypes": dict(sorted(post.items())),
    }


def precision_problems(layers: list[EngineLayer], precision: str) -> list[str]:
    """What contradicts the requested precision: a convolution not in ``precision``, or a
    postprocess layer producing a low-precision tensor (the FP32 island broken)."""
    want = CONV_DTYPE[precision]
    problems = [
        f"convolution {layer.name} runs in {layer.input_dtypes[0] if layer.input_dtypes else '?'}, not {want}"
        for layer in layers
        if layer.is_convolution and (not layer.input_dtypes or layer.input_dtypes[0] != want)
    ]
    problems += [
        f"postprocess layer {layer.name} ({', '.join(layer.onnx_nodes[:3])}) outputs "
        f"{sorted(set(layer.output_dtypes) & LOW_PRECISION)}"
        for layer in layers
        if layer.in_postprocess and set(layer.output_dtypes) & LOW_PRECISION
    ]
    if not any(layer.is_convolution for layer in layers):
        problems.append("the build report lists no convolution")
    return problems


def format_summary(summary: dict[str, Any]) -> str:
    """One line for people: ``263 layers; convolutions: 78 Half; postprocess: 21 layers, Float/Int64 out``."""
    convs = ", ".join(f"{n} {dtype}" for dtype, n in summary.get("convolutions", {}).items()) or "none"
    post = "/".join(summary.get("postprocess_output_dtypes", {})) or "none"
    return (
        f"{summary.get('layers', 0)} layers; convolutions: {convs}; "
        f"postprocess: {summary.get('postprocess_layers', 0)} layers with {post} outputs"
    )
