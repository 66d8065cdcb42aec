"""A retina_trt ONNX model in Triton Inference Server's Python backend (copied as ``model.py``
into a model version folder by ``export_triton(..., backend="python")``; ``retina-trt serve``).

It serves exactly the engine's contract: ``images`` uint8 [B, H, W, 3] (and ``image_sizes`` int32
[B, 2]) in; ``num_detections``, ``detection_boxes``, ``detection_scores``, ``detection_classes``
out, computed by ONNX Runtime on the model's own graph (retina_trt's ``OnnxRuntimeBackend``
session), so a client cannot tell it from a ``tensorrt_plan`` or ``onnxruntime_onnx`` entry.

Requests the dynamic batcher hands over together are run as one batch when their images have
the same size (as many as the model's max batch at a time), and split back per request. A
request that fails (a wrong dtype or rank the server did not catch, the session raising) gets a
Triton error response; the others in the batch are answered normally.

Runs inside Triton's Python backend stub (its own process), never imported by retina_trt itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from retina_trt.runtime.onnxruntime_backend import OnnxRuntimeBackend

        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / str(args["model_version"])
        # ONNX Runtime's own thread count unless the config's retina_trt.threads parameter says otherwise
        threads = int(config.get("parameters", {}).get("retina_trt.threads", {}).get("string_value", "0") or 0)
        self.backend = OnnxRuntimeBackend(folder / "model.onnx", num_threads=threads or None)
        self.inputs = list(self.backend.input_names)
        self.outputs = list(self.backend.output_names)
        self.max_batch = int(config.get("max_batch_size") or self.backend.max_batch)
        self.dtypes = {"images": np.float32 if self.backend.float_input else np.uint8, "image_sizes": np.int32}

    def _feeds(self, request) -> dict[str, np.ndarray]:
        feeds = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name!r}")
            array = tensor.as_numpy()
            if array.dtype != self.dtypes[name]:
                raise ValueError(f"input {name!r} must be {np.dtype(self.dtypes[name])}, got {array.dtype}")
            rank = 4 if name == "images" else 2
            if array.ndim != rank:
                raise ValueError(f"input {name!r} must have rank {rank} (batch first), got shape {array.shape}")
            feeds[name] = array
        if len(feeds["images"]) > self.max_batch:
            raise ValueError(f"batch {len(feeds['images'])} exceeds the model's maximum {self.max_batch}")
        return feeds

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.backend.session.run(self.outputs, feeds)

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, dict]]] = {}
        for position, request in enumerate(requests):
            try:
                feeds = self._feeds(request)
            except Exception as err:
                responses[position] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err)))
                continue
            groups.setdefault(feeds["images"].shape[1:], []).append((position, feeds))
        for members in groups.values():
            start = 0
            while start < len(members):  # chunks of at most max_batch images
                chunk, size = [], 0
                while start < len(members) and size + len(members[start][1]["images"]) <= self.max_batch:
                    chunk.append(members[start])
                    size += len(members[start][1]["images"])
                    start += 1
                if not chunk:  # a single request larger than max_batch was refused above
                    chunk, start = [members[start]], start + 1
                self._answer(chunk, responses)
        return responses

    def _answer(self, chunk: list[tuple[int, dict]], responses: list) -> None:
        try:
            merged = {name: np.concatenate([feeds[name] for _, feeds in chunk]) for name in self.inputs}
            outputs = self._run(merged)
        except Exception as err:
            for position, _ in chunk:
                responses[position] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err)))
            return
        offset = 0
        for position, feeds in chunk:
            n = len(feeds["images"])
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[offset : offset + n]))
                for name, out in zip(self.outputs, outputs)
            ]
            responses[position] = pb_utils.InferenceResponse(output_tensors=tensors)
            offset += n
