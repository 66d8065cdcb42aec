"""Runtime: preprocessing (OpenCV), backends (ONNX Runtime, torch), Detector, Detections."""
