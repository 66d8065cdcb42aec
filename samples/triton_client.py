"""Send frames to a retina_trt model served by Triton Inference Server and draw the detections.

  python samples/triton_client.py VIDEO_OR_IMAGE --model NAME [--url localhost:8001] [--protocol grpc|http] \
      [--out triton-output] [--max-frames N]

The model's config (written by `retina-trt export-triton`) carries the ModelSpec, so the client
preprocesses with retina_trt's own code (resize, pad, uint8 BGR NHWC + image_sizes) and maps
boxes back to the original frame exactly as the Detector does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from retina_trt.image import PreprocessedBatch, boxes_to_original, preprocess_batch
from retina_trt.runtime.detections import Detections
from retina_trt.spec import ModelSpec

OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


def spec_from_config(config: dict) -> tuple[ModelSpec, tuple[int, int] | None]:
    """The ModelSpec and fixed input size from a model config (as a dict, e.g. the HTTP JSON)."""
    params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    spec = ModelSpec.from_json(params["retina_trt.spec"])
    dims = [int(d) for d in config["input"][0]["dims"]]
    return spec, (None if dims[0] < 0 else (dims[0], dims[1]))


def build_inputs(client_module, batch: PreprocessedBatch) -> list:
    """tritonclient InferInput objects for one preprocessed batch."""
    images = client_module.InferInput("images", list(batch.pixels.shape), "UINT8")
    images.set_data_from_numpy(np.ascontiguousarray(batch.pixels))
    sizes = client_module.InferInput("image_sizes", list(batch.image_sizes.shape), "INT32")
    sizes.set_data_from_numpy(batch.image_sizes.astype(np.int32))
    return [images, sizes]


def to_detections(outputs: dict[str, np.ndarray], batch: PreprocessedBatch, spec: ModelSpec) -> list[Detections]:
    """The output contract -> Detections in original-image pixels."""
    results = []
    scales = batch.scale_factors()
    for i in range(len(batch.pixels)):
        n = int(outputs["num_detections"][i, 0])
        boxes = boxes_to_original(outputs["detection_boxes"][i, :n], scales[i], tuple(batch.original_sizes[i]))
        results.append(
            Detections(
                boxes,
                outputs["detection_scores"][i, :n],
                outputs["detection_classes"][i, :n].astype(np.int64),
                spec.class_names,
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="video file, stream URL, camera index or image")
    parser.add_argument("--model", required=True, help="model name in the Triton repository")
    parser.add_argument("--url", default="localhost:8001")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--out", type=Path, default=Path("triton-output"))
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--min-score", type=float, default=0.4)
    args = parser.parse_args(argv)
    if args.protocol == "grpc":
        import tritonclient.grpc as client_module

        client = client_module.InferenceServerClient(args.url)
        config = client.get_model_config(args.model, as_json=True)["config"]
    else:
        import tritonclient.http as client_module

        client = client_module.InferenceServerClient(args.url)
        config = client.get_model_config(args.model)
    spec, input_size = spec_from_config(config)
    outputs = [client_module.InferRequestedOutput(name) for name in OUTPUTS]
    capture = cv2.VideoCapture(int(args.source) if args.source.isdigit() else args.source)
    args.out.mkdir(parents=True, exist_ok=True)
    index = 0
    while args.max_frames is None or index < args.max_frames:
        ok, frame = capture.read()
        if not ok:
            break
        batch = preprocess_batch(
            [frame],
            min_size=spec.min_size,
            max_size=spec.max_size,
            size_divisible=spec.size_divisible,
            input_size=input_size,
        )
        result = client.infer(args.model, build_inputs(client_module, batch), outputs=outputs)
        arrays = {name: result.as_numpy(name) for name in OUTPUTS}
        dets = to_detections(arrays, batch, spec)[0].filter(min_score=args.min_score)
        cv2.imwrite(str(args.out / f"frame_{index:06d}.jpg"), dets.draw(frame))
        print(f"frame {index}: {len(dets)} detections")
        index += 1
    capture.release()
    return 0 if index else 2


if __name__ == "__main__":
    sys.exit(main())
