"""Scale-out configurations: a Triton Inference Server model repository entry (``triton``) and a
DeepStream nvinfer configuration (``deepstream``), both read from an export's or engine's typed
record (``retina_trt.contract.ExportInfo``). See docs/serving.md."""
