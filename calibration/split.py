"""Split an export at its NMS inputs, so precision preparation never touches NMS.

Exports with NMS name the merged candidates NMS starts from (``contract.NMS_INPUTS``). Model
Optimizer converts and calibrates the part before them (the network and the candidate selection,
whose own FP32 islands it keeps); the NMS part (``Loop``-based graph NMS, ONNX
NonMaxSuppression, plugin or EfficientNMS nodes) is reattached unchanged in FP32. Calibration
then never runs NMS in ONNX Runtime (the graph NMS is slow there, the plugin nodes need custom
operators, EfficientNMS cannot run at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from retina_trt.contract import NMS_INPUTS

TAIL_SUFFIX = "__nms"


@dataclass(frozen=True)
class NmsTail:
    """The NMS part of a model: nodes, their initializers (renamed apart) and the outputs."""

    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    outputs: list[onnx.ValueInfoProto]


def has_nms_inputs(model: onnx.ModelProto) -> bool:
    produced = {out for node in model.graph.node for out in node.output}
    return all(name in produced for name in NMS_INPUTS)


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node reads, its subgraphs' outer-scope references included."""
    names = set(node.input)
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
            local |= {out for n in graph.node for out in n.output}
            for inner in graph.node:
                names |= {name for name in _subgraph_inputs(inner) if name and name not in local}
    return names


def _rename(node: onnx.NodeProto, mapping: dict[str, str]) -> None:
    for i, name in enumerate(node.input):
        if name in mapping:
            node.input[i] = mapping[name]
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            for inner in graph.node:
                _rename(inner, mapping)


def split_at_nms(model: onnx.ModelProto) -> tuple[onnx.ModelProto, NmsTail]:
    """(head, tail): the head computes ``NMS_INPUTS`` from the model's inputs; the tail is the rest.

    Raises:
        ValueError: the model has no named NMS inputs (``nms="none"``, or an older export), or its
            NMS part reads a tensor of the network other than the NMS inputs.
    """
    if not has_nms_inputs(model):
        raise ValueError(f"the model has no NMS inputs {NMS_INPUTS} to split at")
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    head_names: set[str] = set()
    stack = [producer[name] for name in NMS_INPUTS]
    while stack:
        node = stack.pop()
        if node.name in head_names:
            continue
        head_names.add(node.name)
        stack.extend(producer[i] for i in _subgraph_inputs(node) if i in producer)
    head_nodes = [n for n in graph.node if n.name in head_names]
    tail_nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in graph.node if n.name not in head_names]
    head_outputs = {out for n in head_nodes for out in n.output}
    tail_reads = set().union(*(_subgraph_inputs(n) for n in tail_nodes)) if tail_nodes else set()
    stray = sorted((tail_reads & head_outputs) - set(NMS_INPUTS))
    if stray:
        raise ValueError(f"the NMS part reads network tensors other than {NMS_INPUTS}: {stray[:5]}")

    initializers = {t.name: t for t in graph.initializer}
    head_reads = set().union(*(_subgraph_inputs(n) for n in head_nodes))
    # The tail gets its own copies of its initializers: preparation may convert the head's.
    mapping = {name: name + TAIL_SUFFIX for name in tail_reads if name in initializers}
    tail_inits = []
    for name, new_name in sorted(mapping.items()):
        copy = onnx.TensorProto.FromString(initializers[name].SerializeToString())
        copy.name = new_name
        tail_inits.append(copy)
    for node in tail_nodes:
        _rename(node, mapping)

    inferred = onnx.shape_inference.infer_shapes(model)
    value_info = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    head_graph = onnx.helper.make_graph(
        head_nodes,
        graph.name,
        list(graph.input),
        [value_info[name] for name in NMS_INPUTS],
        initializer=[initializers[name] for name in sorted(head_reads) if name in initializers],
    )
    head = onnx.helper.make_model(head_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    head.metadata_props.extend(model.metadata_props)
    head.producer_name, head.producer_version = model.producer_name, model.producer_version
    return head, NmsTail(tail_nodes, tail_inits, list(graph.output))


def reattach_nms(head: onnx.ModelProto, tail: NmsTail) -> onnx.ModelProto:
    """The prepared head with the untouched NMS tail after it: the full model's outputs."""
    graph = head.graph
    graph.node.extend(tail.nodes)
    graph.initializer.extend(tail.initializers)
    del graph.output[:]
    graph.output.extend(tail.outputs)
    opsets = {o.domain: o for o in head.opset_import}
    for node in tail.nodes:
        if node.domain not in opsets:
            head.opset_import.append(onnx.helper.make_opsetid(node.domain, 1))
            opsets[node.domain] = head.opset_import[-1]
    return head
