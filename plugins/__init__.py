"""The retina_trt NMS plugin (``retina_trt.plugins``): Triton kernels, run compiled on CUDA
tensors or under the Triton interpreter on CPU tensors. See plugins/README.md.

Triton decides between compiling and interpreting when it is imported, from ``TRITON_INTERPRET``.
On a machine without CUDA, importing this package sets ``TRITON_INTERPRET=1`` if Triton has not
been imported yet, so the kernels run on CPU tensors; a process that needs both must run the CPU
path in a separate process.

Not yet here (issue #6): the TensorRT ``tensorrt.plugin`` registration with AOT PTX, the
``nms="plugin"`` export, the ONNX Runtime custom operator and ``nms="efficient"``.
"""

import os
import sys

if "triton" not in sys.modules and "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

from .nms import OUTPUT_NAMES, retina_nms

__all__ = ["OUTPUT_NAMES", "retina_nms"]
