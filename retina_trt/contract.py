"""The contract every exported graph, engine and backend keeps (no heavy imports here).

Inputs: ``images`` uint8 [B, H, W, 3] BGR (NHWC, as decoders give frames) and ``image_sizes``
int32 [B, 2], the (h, w) of each image's valid (unpadded) region.

Outputs of every NMS kind but ``none`` (mirrors TensorRT's EfficientNMS_TRT):
``num_detections`` int32 [B, 1], ``detection_boxes`` float32 [B, D, 4] xyxy in network-input
pixels, ``detection_scores`` float32 [B, D], ``detection_classes`` int32 [B, D]; rows past
num_detections are 0. ``nms="none"`` exports give the merged pre-NMS candidates instead.
"""

from __future__ import annotations

INPUT_NAMES = ("images", "image_sizes")
CONTRACT_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
CANDIDATE_OUTPUTS = ("candidate_boxes", "candidate_scores", "candidate_classes")
# Inside exports with NMS: the merged candidates NMS starts from (boxes [B, N, 4] float32,
# scores [B, N] float32, labels [B, N] int64), named so tools can split the graph there.
NMS_INPUTS = ("nms_input_boxes", "nms_input_scores", "nms_input_labels")

# Where NMS runs, by export kind, and which runtimes can carry it.
NMS_KINDS = {
    "onnx": "ONNX NonMaxSuppression in the graph (ONNX Runtime; TensorRT 10/11's INMSLayer)",
    "graph": "exact greedy NMS from plain ONNX operators (every TensorRT flavour, TensorRT-RTX included)",
    "none": "no NMS in the graph: merged candidates out, NMS on the host",
    "plugin": "the retina_trt NMS plugin, Triton kernels embedded as PTX (TensorRT 10.9+/11)",
    "efficient": "TensorRT's EfficientNMS_TRT plugin (TensorRT 10/11 only)",
}
NMS_CHOICES = tuple(NMS_KINDS)
# What each TensorRT flavour can build (TensorRT-RTX has no INMSLayer runner and no plugins).
NMS_BY_FLAVOUR = {
    "tensorrt": ("onnx", "graph", "none", "plugin", "efficient"),
    "tensorrt_rtx": ("graph", "none"),
}
DEFAULT_NMS_BY_FLAVOUR = {"tensorrt": "onnx", "tensorrt_rtx": "graph"}
