"""``Detector``: images in, detections in original-image pixels out, on any backend."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retina_trt.errors import BatchImageError, ModelFormatError, RetinaTrtError
from retina_trt.image import ImageLike, boxes_to_original, load_image, preprocess_batch
from retina_trt.runtime.backends import open_backend
from retina_trt.runtime.detections import Detections
from retina_trt.spec import ModelSpec
from retina_trt.utils import Timer

logger = logging.getLogger(__name__)


class Detector:
    """Run a RetinaNet on OpenCV images.

    Args:
        model_path: ``.engine`` (TensorRT), ``.onnx`` (ONNX Runtime), ``.pt``/``.pth`` (PyTorch
            reference); the backend is picked from the suffix with ``backend="auto"``.
        backend: ``"auto"``, ``"tensorrt"``, ``"onnxruntime"`` or ``"torch"``.
        cuda_graph: TensorRT only: replay captured CUDA graphs, one per input shape (engines with
            data-dependent shapes, nms="onnx", run without them and log it).
        min_score: drop detections below this score (default: keep all the model returns).
        providers: ONNX Runtime execution providers (default CPU).
        num_threads: intra-op threads of the backend (default: the backend's own choice).
        device: CUDA device index for TensorRT engines (the backend and its worker threads use it).
        session_config: ONNX Runtime session config entries, e.g.
            ``{"session.intra_op.allow_spinning": "0"}`` (recommended with :meth:`stream`, whose
            decode/encode threads need the cores ONNX Runtime's spinning threads would hold).

    ``det(image)`` returns :class:`Detections`; ``det.predict_batch(images)`` a list of them.
    An image is an ndarray (HxWx3 uint8 BGR; grayscale and BGRA are converted) or a path.
    ``det.timer`` accumulates per-stage wall time (preprocess, inference, postprocess).
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        backend: str = "auto",
        min_score: float | None = None,
        providers: list[str] | None = None,
        num_threads: int | None = None,
        cuda_graph: bool = False,
        session_config: dict[str, str] | None = None,
        device: int = 0,
    ) -> None:
        if min_score is not None and not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        if num_threads is not None and (isinstance(num_threads, bool) or int(num_threads) < 1):
            raise ValueError(f"num_threads must be a positive integer (or None for the backend's default), got {num_threads!r}")
        self._closed = False
        self.model_path = Path(model_path)
        if not self.model_path.exists():
            raise ModelFormatError(f"model not found: {self.model_path}")
        self._backend = open_backend(
            self.model_path, backend, providers=providers, num_threads=num_threads, cuda_graph=cuda_graph,
            session_config=session_config, device=device,
        )  # fmt: skip
        self.min_score = min_score
        self.timer = Timer()

    @property
    def spec(self) -> ModelSpec:
        return self._backend.spec

    @property
    def backend(self) -> str:
        """Name of the backend in use."""
        return self._backend.name

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) of a fixed-size model, None for dynamic shapes."""
        return self._backend.input_size

    @property
    def max_batch(self) -> int:
        return self._backend.max_batch

    def __call__(self, image: ImageLike) -> Detections:
        """Detections of one image (ndarray HxWx3 uint8 BGR, or a path)."""
        return self._run([load_image(image)])[0]

    def predict_batch(self, images: Sequence[ImageLike]) -> list[Detections]:
        """Detections of several images (any sizes), in order.

        Batches larger than the model's maximum batch are split. If some images cannot be
        read, the others are still processed and :class:`~retina_trt.errors.BatchImageError`
        is raised with ``.results`` (None for the failed ones) and ``.failures``.
        """
        if isinstance(images, (np.ndarray, str, os.PathLike)):
            raise TypeError("predict_batch expects a sequence of images; use det(image) for one")
        loaded: list[np.ndarray | None] = []
        failures: dict[int, Exception] = {}
        for index, image in enumerate(images):
            try:
                loaded.append(load_image(image, source=f"image #{index}"))
            except (RetinaTrtError, TypeError) as err:
                failures[index] = err
                loaded.append(None)
        good = [i for i, img in enumerate(loaded) if img is not None]
        results: list[Detections | None] = [None] * len(loaded)
        for start in range(0, len(good), self.max_batch):
            chunk = good[start : start + self.max_batch]
            for index, dets in zip(chunk, self._run([loaded[i] for i in chunk])):
                results[index] = dets
        if failures:
            raise BatchImageError(results, failures)
        return results  # type: ignore[return-value]

    def _run(self, images: list[np.ndarray]) -> list[Detections]:
        if self._closed:
            raise RetinaTrtError(f"{self!r} is closed; create a new Detector to run {self.model_path.name} again")
        spec = self.spec
        with self.timer("preprocess"):
            batch = preprocess_batch(
                images,
                min_size=spec.min_size,
                max_size=spec.max_size,
                size_divisible=spec.size_divisible,
                input_size=self.input_size,
            )
        with self.timer("inference"):
            raw = self._backend.run(batch)
        with self.timer("postprocess"):
            scales = batch.scale_factors()
            out = []
            for i, r in enumerate(raw):
                boxes = boxes_to_original(r.boxes, scales[i], tuple(batch.original_sizes[i]))
                dets = Detections(boxes, r.scores, r.class_ids, spec.class_names)
                out.append(dets.filter(min_score=self.min_score) if self.min_score else dets)
        return out

    def stream(self, source, **options):
        """Detections over a video file, stream URL, camera index or image folder, pipelined.

        Returns a :class:`~retina_trt.runtime.stream.DetectionStream`, an iterator of
        ``(frame_index, timestamp_s, frame, Detections)`` (see that class for the options:
        ``batch_size``, ``every``, ``max_frames``, ``drop_stale``, ``queue_size``, ``reconnect``,
        ``max_reconnects``, ``backoff_s``, ``output`` for an annotated video). Use it in a
        ``with`` block, or call ``close()``, to stop its threads early.
        """
        from retina_trt.runtime.stream import DetectionStream

        return DetectionStream(self, source, **options)

    def close(self) -> None:
        """Release the backend's resources (idempotent); every later call raises a clear error."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        size = "dynamic" if self.input_size is None else f"{self.input_size[0]}x{self.input_size[1]}"
        return f"Detector({self.model_path.name}, backend={self.backend}, input={size})"
