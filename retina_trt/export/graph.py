"""A minimal helper to append nodes to an ONNX graph with unique names."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    """Appends nodes and constant initializers to ``graph`` under a name ``prefix``."""

    def __init__(self, graph: onnx.GraphProto, prefix: str, opset: int = 17) -> None:
        self.graph = graph
        self.prefix = prefix
        self.opset = opset  # the model's ai.onnx opset (ReduceMax takes axes as an input from 18)
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def const(self, value, dtype=np.float32, hint: str = "const") -> str:
        """Add an initializer holding ``value`` and return its name."""
        name = self._name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], num_outputs: int = 1, hint: str | None = None, **attrs):
        """Add a node; returns its output name (or a list of names when num_outputs > 1)."""
        base = self._name(hint or op_type)
        outputs = [f"{base}:{i}" for i in range(num_outputs)]
        self.graph.node.append(helper.make_node(op_type, inputs, outputs, name=base, **attrs))
        return outputs[0] if num_outputs == 1 else outputs

    def rename_output(self, tensor: str, name: str) -> str:
        """Expose ``tensor`` under ``name`` (an Identity node)."""
        self.graph.node.append(helper.make_node("Identity", [tensor], [name], name=self._name(name)))
        return name

    # -- small compositions --------------------------------------------------------------------
    def cast(self, x: str, to: int) -> str:
        return self.op("Cast", [x], to=to)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", [x, self.const(axes, np.int64, "axes")])

    def squeeze(self, x: str, axes: list[int]) -> str:
        return self.op("Squeeze", [x, self.const(axes, np.int64, "axes")])

    def shape_dim(self, x: str, index: int) -> str:
        """Dimension ``index`` of ``x`` as an int64 tensor of shape [1]."""
        shape = self.op("Shape", [x])
        return self.op("Gather", [shape, self.const([index], np.int64, "index")], axis=0)

    def zeros(self, shape: str, dtype: int = TensorProto.FLOAT) -> str:
        """``ConstantOfShape`` of ``shape`` (an int64 tensor) filled with 0 of ``dtype`` (explicit
        value: some tools, Model Optimizer among them, do not apply the default)."""
        return self.op("ConstantOfShape", [shape], value=helper.make_tensor("value", dtype, [1], [0]))

    def reduce_max(self, x: str, axis: int) -> str:
        """``ReduceMax`` over ``axis``, that axis dropped (the form of this builder's opset)."""
        if self.opset >= 18:
            return self.op("ReduceMax", [x, self.const([axis], np.int64, "axes")], keepdims=0)
        return self.op("ReduceMax", [x], axes=[axis], keepdims=0)

    def reshape(self, x: str, shape: list[int] | str) -> str:
        target = shape if isinstance(shape, str) else self.const(shape, np.int64, "shape")
        return self.op("Reshape", [x, target])


INT64, INT32, FLOAT, BOOL = TensorProto.INT64, TensorProto.INT32, TensorProto.FLOAT, TensorProto.BOOL
