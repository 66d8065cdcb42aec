"""Moved to :mod:`retina_trt.scaleout.triton` (this name works for one more release)."""

from retina_trt.scaleout.triton import KINDS, MODEL_NAME, config_pbtxt, export_triton  # noqa: F401
