"""ONNX export with the engine's output contract (see ``onnx_export``)."""
