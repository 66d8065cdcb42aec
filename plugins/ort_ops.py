"""The three NMS plugin nodes as ONNX Runtime custom operators (onnxruntime-extensions Python ops)
calling the same Triton kernels, so an ``nms="plugin"`` export runs end to end on the CPU.

Importing this module defines the operators; sessions then need
``SessionOptions.register_custom_ops_library(onnxruntime_extensions.get_library_path())``.
"""

from __future__ import annotations

import numpy as np
import torch
from onnxruntime_extensions import PyCustomOpDef, onnx_op

from .nms import nms_from_mask, rank_candidates, suppression_mask

DOMAIN = "ai.onnx.contrib"  # onnxruntime-extensions' domain; TensorRT maps nodes by op_type
SORT_OP = "RetinaNMSSort"
MASK_OP = "RetinaNMSMask"
NMS_OP = "RetinaNMS"
_PLUGIN_ATTRS = {
    "plugin_namespace": PyCustomOpDef.dt_string,
    "plugin_version": PyCustomOpDef.dt_string,
    "aot": PyCustomOpDef.dt_int64,
}


@onnx_op(
    op_type=SORT_OP,
    inputs=[PyCustomOpDef.dt_float],
    outputs=[PyCustomOpDef.dt_int32],
    attrs={**_PLUGIN_ATTRS, "score_thresh": PyCustomOpDef.dt_float},
)
def _sort(scores, **attrs):
    return rank_candidates(torch.from_numpy(np.ascontiguousarray(scores)), score_thresh=attrs["score_thresh"]).numpy()


@onnx_op(
    op_type=MASK_OP,
    inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32, PyCustomOpDef.dt_int32],
    outputs=[PyCustomOpDef.dt_int64],
    attrs={**_PLUGIN_ATTRS, "nms_thresh": PyCustomOpDef.dt_float},
)
def _mask(boxes, classes, order, **attrs):
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (boxes, classes, order)]
    return suppression_mask(*tensors, nms_thresh=attrs["nms_thresh"]).numpy()


@onnx_op(
    op_type=NMS_OP,
    inputs=[
        PyCustomOpDef.dt_float,
        PyCustomOpDef.dt_float,
        PyCustomOpDef.dt_int32,
        PyCustomOpDef.dt_int32,
        PyCustomOpDef.dt_int64,
    ],
    outputs=[PyCustomOpDef.dt_int32, PyCustomOpDef.dt_float, PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32],
    attrs={**_PLUGIN_ATTRS, "detections_per_img": PyCustomOpDef.dt_int64, "block": PyCustomOpDef.dt_int64},
)
def _nms(boxes, scores, classes, order, mask, **attrs):
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (boxes, scores, classes, order, mask)]
    out = nms_from_mask(*tensors, detections_per_img=int(attrs["detections_per_img"]))
    return tuple(t.numpy() for t in out)
