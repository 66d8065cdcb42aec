"""Moved to :mod:`retina_trt.scaleout.deepstream` (this name works for one more release)."""

from retina_trt.scaleout.deepstream import CONFIG_NAME, NETWORK_MODE, PRECISIONS, export_deepstream  # noqa: F401
