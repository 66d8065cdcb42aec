"""The RetinaNet model in torch: backbone + FPN, heads, anchors, box coder, losses, checkpoints."""

from retina_trt.model.checkpoint import load_checkpoint, save_checkpoint
from retina_trt.model.retinanet import HeadOutputs, RetinaNet

__all__ = ["HeadOutputs", "RetinaNet", "load_checkpoint", "save_checkpoint"]
