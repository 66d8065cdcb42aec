"""The retina_trt NMS plugin (``retina_trt.plugins``): Triton kernels, run compiled on CUDA
tensors or under the Triton interpreter on CPU tensors. See plugins/README.md.

Triton decides between compiling and interpreting when it is first imported, from
``TRITON_INTERPRET``: a process that runs the kernels on CPU tensors sets ``TRITON_INTERPRET=1``
before anything imports Triton (the ``retina-trt`` command does so on machines without an NVIDIA
driver; importing this package changes no environment variable). A process that needs both must run
the CPU path in a separate process.

``ort_ops`` runs the ``nms="plugin"`` export's three nodes in ONNX Runtime (onnxruntime-extensions).
``registration`` registers the three plugins with TensorRT (``tensorrt.plugin``, AOT PTX); it is
checked for API conformance only, never built into an engine here.
"""

from .nms import (
    OUTPUT_NAMES,
    nms_from_mask,
    nms_from_order,
    rank_candidates,
    retina_nms,
    suppression_mask,
)

__all__ = ["OUTPUT_NAMES", "nms_from_mask", "nms_from_order", "rank_candidates", "retina_nms", "suppression_mask"]
