"""ONNX operators TensorRT's ONNX parser imports, checked before an export is accepted.

Source: onnx-tensorrt ``docs/operators.md``, the operator support matrix of TensorRT 10.15
(opset 9 to 24), all rows marked ``Y``. Restrictions that matter to our graphs are checked
separately in :func:`check_trt_compatible` (TopK: K < 3840 and sorted=1).
"""

from __future__ import annotations

import onnx

from retina_trt.errors import ExportError
from retina_trt.spec import MAX_TOPK

TRT_SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
    BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape
    Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum
    Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
    GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
    GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
    ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
    LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
    ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
    RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter
    ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
    Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose
    Trilu Unsqueeze Upsample Where Xor
    """.split()
)
TRT_MAX_OPSET = 24
PLUGIN_DOMAIN = "ai.onnx.contrib"  # onnxruntime-extensions' domain; TensorRT maps plugin nodes by op_type
# Custom nodes that map to TensorRT plugins: the retina_trt NMS plugin and TensorRT's EfficientNMS.
PLUGIN_NODES = frozenset(
    {
        (PLUGIN_DOMAIN, "RetinaNMSSort"),
        (PLUGIN_DOMAIN, "RetinaNMSMask"),
        (PLUGIN_DOMAIN, "RetinaNMS"),
        ("TRT", "EfficientNMS_TRT"),
    }
)
TRT_MIN_OPSET = 9


def check_trt_compatible(model: onnx.ModelProto, *, allowed_custom: frozenset[tuple[str, str]] = frozenset()) -> None:
    """Raise :class:`ExportError` naming every node TensorRT's ONNX parser would reject.

    Args:
        model: the model to check (subgraphs included).
        allowed_custom: (domain, op_type) pairs of custom nodes that map to TensorRT plugins.
    """
    problems: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not TRT_MIN_OPSET <= opset <= TRT_MAX_OPSET:
        problems.append(f"opset {opset} is outside TensorRT's {TRT_MIN_OPSET}..{TRT_MAX_OPSET}")
    for node in _all_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            if (node.domain, node.op_type) not in allowed_custom:
                problems.append(f"{node.name or '<unnamed>'}: custom op {node.domain}::{node.op_type}")
            continue
        if node.op_type not in TRT_SUPPORTED_OPS:
            problems.append(f"{node.name or '<unnamed>'}: {node.op_type} is not supported by TensorRT")
        elif node.op_type == "TopK":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("sorted", 1) != 1:
                problems.append(f"{node.name}: TopK needs sorted=1 in TensorRT")
            k = _constant_value(model, node.input[1])
            if k is not None and int(k) >= MAX_TOPK:
                problems.append(f"{node.name}: TopK K={int(k)} must be < {MAX_TOPK} in TensorRT")
    if problems:
        raise ExportError("the ONNX model uses operators TensorRT cannot import:\n  " + "\n  ".join(problems))


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def _constant_value(model: onnx.ModelProto, name: str):
    for init in model.graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init).reshape(-1)[0]
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return onnx.numpy_helper.to_array(attr.t).reshape(-1)[0]
    return None
