"""The retina_trt NMS plugin (``retina_trt.plugins``): Triton kernels, run compiled on CUDA
tensors or under the Triton interpreter on CPU tensors. See plugins/README.md.

Triton decides between compiling and interpreting when it is first imported, from
``TRITON_INTERPRET``; ``import retina_trt`` sets it to 1 on machines without an NVIDIA driver, so
the kernels run on CPU tensors there. A process that needs both must run the CPU path in a
separate process.

``ort_ops`` runs the ``nms="plugin"`` export's three nodes in ONNX Runtime (onnxruntime-extensions).
``registration`` registers the three plugins with TensorRT (``tensorrt.plugin``, AOT PTX); it is
checked for API conformance only, never built into an engine here.
"""

import os
import sys

if "triton" not in sys.modules and "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

from .nms import (
    OUTPUT_NAMES,
    nms_from_mask,
    nms_from_order,
    rank_candidates,
    retina_nms,
    suppression_mask,
)

__all__ = ["OUTPUT_NAMES", "nms_from_mask", "nms_from_order", "rank_candidates", "retina_nms", "suppression_mask"]
