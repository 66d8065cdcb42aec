"""``Detector``: images in, detections in original-image pixels out, on any backend."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.errors import BatchImageError, ModelFormatError, RetinaTrtError
from retina_trt.image import ImageLike, boxes_to_original, load_image, preprocess_batch
from retina_trt.runtime.at_exit import close_at_exit
from retina_trt.runtime.backend import AsyncBackend, Backend, check_threads
from retina_trt.runtime.backends import is_server_url, open_backend, options_backend
from retina_trt.runtime.detections import Detections
from retina_trt.spec import ModelSpec
from retina_trt.utils import Timer

logger = logging.getLogger(__name__)

# Keywords of one backend's options that Detector still takes directly: each goes to the options of
# every backend that has a field of that name (``runtime/backends.open_backend``).
LEGACY_OPTIONS = (
    "providers",
    "session_config",
    "num_threads",
    "precision",
    "cache_dir",
    "static_shapes",
    "cuda_graph",
    "device",
    "timeout_s",
)


class Detector:
    """Run a RetinaNet on OpenCV images.

    Args:
        model_path: ``.engine`` (TensorRT), ``.onnx`` (OpenVINO where installed, else ONNX
            Runtime), ``.pt``/``.pth`` (PyTorch reference); the backend is picked from the suffix
            with ``backend="auto"`` (the log says which ran, and in which precision); or a model
            on a Triton server, ``"grpc://host:8001/name"`` / ``"http://host:8000/name"``.
        backend: ``"auto"``, ``"tensorrt"``, ``"openvino"``, ``"onnxruntime"``, ``"torch"`` or
            ``"triton"`` (a server URL).
        min_score: drop detections below this score (default: keep all the model returns).
        options: one backend's options, or several (the one of the backend that runs is used):
            ``OpenVinoOptions`` (precision, threads, cache, static shapes), ``OnnxRuntimeOptions``
            (providers, threads, session config), ``TensorRTOptions`` (CUDA graphs, device),
            ``TritonOptions`` (request deadline), ``TorchOptions`` (threads).
        **legacy: those options' fields by name (``precision="bf16"``, ``num_threads=2``,
            ``providers``, ``session_config``, ``cache_dir``, ``static_shapes``, ``cuda_graph``,
            ``device``, ``timeout_s``), as earlier releases took them; a field given here wins
            over the same field of ``options``.

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
        options: Any = (),
        **legacy: Any,
    ) -> None:
        if min_score is not None and not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        options = _options_tuple(options)
        _check_legacy(legacy, backend)
        self._closed = False
        served = is_server_url(model_path)
        self.model_path = _ServedModel(model_path) if served else Path(model_path)  # a Triton model URL, or a file
        if not served and not self.model_path.exists():
            raise ModelFormatError(f"model not found: {self.model_path}")
        self._backend = open_backend(model_path if served else self.model_path, backend, options=options, legacy=legacy)
        self._async = isinstance(self._backend, AsyncBackend)
        close_at_exit(detector=self)
        logger.info("%r runs in %s", self, self.precision)
        self.min_score = min_score
        self.timer = Timer()

    @property
    def backend_instance(self) -> Backend:
        """The backend object itself (:class:`~retina_trt.runtime.backend.Backend`)."""
        return self._backend

    @property
    def spec(self) -> ModelSpec:
        return self._backend.spec

    @property
    def backend(self) -> str:
        """Name of the backend in use."""
        return self._backend.name

    @property
    def precision(self) -> str:
        """What the backend runs: ``fp32``/``fp16``/``int8`` (the graph's) or OpenVINO's
        ``f32``/``bf16``/``int8+f32``/``int8+bf16`` (see :meth:`layer_precisions`)."""
        return self._backend.precision

    def layer_precisions(self) -> dict[str, dict[str, int]] | None:
        """OpenVINO: the executed precision of every convolution and of the postprocess island,
        read from OpenVINO's runtime model, e.g. ``{"convolutions": {"i8": 78}, "postprocess":
        {"f32": 120, "i32": 40}}``; None on backends that do not report it."""
        report = getattr(self._backend, "layer_precisions", None)  # an optional capability
        return report() if report is not None else None

    @property
    def parallel_requests(self) -> int:
        """How many batches the backend runs at once (:meth:`submit`); 1 where it runs one."""
        return int(self._backend.parallel_requests) if self._async else 1

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
        chunks = [good[start : start + self.max_batch] for start in range(0, len(good), self.max_batch)]
        done = [(chunk, self._run_parallel([loaded[i] for i in chunk])) for chunk in chunks]
        for chunk, detections in done:
            for index, dets in zip(chunk, detections):
                results[index] = dets
        if failures:
            raise BatchImageError(results, failures)
        return results  # type: ignore[return-value]

    def _run_parallel(self, images: list[np.ndarray]) -> list[Detections]:
        """One padded batch; split across the backend's parallel requests where it has several
        (the same padding as one request, so the same detections)."""
        parts = min(self.parallel_requests, len(images) // max(1, getattr(self._backend, "min_batch", 1)))
        if parts < 2:
            return self._run(images)
        self._check_open()
        batch = self._preprocess(images)
        bounds = np.linspace(0, len(images), parts + 1).round().astype(int)
        futures = [self._submit_batch(batch.slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
        return [dets for future in futures for dets in future.result()]

    def submit(self, images: Sequence[np.ndarray]) -> Future:
        """Start one batch (decoded HxWx3 uint8 BGR images, at most ``max_batch``) without
        waiting; the future's result is the list of :class:`Detections`.

        On a backend that runs several requests at once (OpenVINO) up to
        :attr:`parallel_requests` batches run together; elsewhere the batch runs now and the
        future is already done. The ``inference`` time it adds to :attr:`timer` is the wait."""
        self._check_open()
        return self._submit_batch(self._preprocess(list(images)))

    def _submit_batch(self, batch) -> Future:
        if not self._async:
            future: Future = Future()
            future.set_result(self._finish(batch, self._timed_run(batch)))
            return future
        started = time.perf_counter()
        raw = self._backend.submit(batch)
        out: Future = Future()

        def finish(done: Future) -> None:
            try:
                self.timer.add("inference", time.perf_counter() - started)
                out.set_result(self._finish(batch, done.result()))
            except BaseException as err:  # the waiter gets it
                out.set_exception(err)

        raw.add_done_callback(finish)
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise RetinaTrtError(f"{self!r} is closed; create a new Detector to run {self.model_path.name} again")

    def _preprocess(self, images: list[np.ndarray]):
        spec = self.spec
        with self.timer("preprocess"):
            return preprocess_batch(
                images,
                min_size=spec.min_size,
                max_size=spec.max_size,
                size_divisible=spec.size_divisible,
                input_size=self.input_size,
            )

    def _timed_run(self, batch):
        with self.timer("inference"):
            return self._backend.run(batch)

    def _finish(self, batch, raw) -> list[Detections]:
        """Boxes back to original-image pixels, the min_score filter applied."""
        with self.timer("postprocess"):
            scales = batch.scale_factors()
            out = []
            for i, r in enumerate(raw):
                boxes = boxes_to_original(r.boxes, scales[i], tuple(batch.original_sizes[i]))
                dets = Detections(boxes, r.scores, r.class_ids, self.spec.class_names)
                out.append(dets.filter(min_score=self.min_score) if self.min_score else dets)
        return out

    def _run(self, images: list[np.ndarray]) -> list[Detections]:
        self._check_open()
        batch = self._preprocess(images)
        return self._finish(batch, self._timed_run(batch))

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

    def streams(self, sources=(), **options):
        """Several sources at once, frames batched across them into one model call: a
        :class:`~retina_trt.streams.MultiStream` (list or mapping id -> source; options there:
        ``batch_size``, ``push_timeout_ms``, ``buffer``, the reconnect policy, ...), iterating
        :class:`~retina_trt.streams.MultiFrame` ``(source_id, index, timestamp_s, frame,
        detections, latency_s, generation)``; ``add()``/``remove()`` while it runs."""
        from retina_trt.streams import MultiStream

        return MultiStream(self, sources, **options)

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


class _ServedModel(str):
    """A model on a Triton server (``grpc://host:8001/name``): ``.name`` is the URL."""

    @property
    def name(self) -> str:
        return str(self)


def _options_tuple(options: Any) -> tuple:
    """``options`` as a tuple of backend options objects (TypeError for anything else); the
    options of a backend that does not run are ignored."""
    items = tuple(options) if isinstance(options, (list, tuple)) else (options,)
    for item in items:
        owner = options_backend(item)
        if owner is None:
            raise TypeError(
                f"options takes backend options objects (OpenVinoOptions, OnnxRuntimeOptions, TensorRTOptions, "
                f"TritonOptions, TorchOptions), got {type(item).__name__}"
            )
    return items


def _check_legacy(legacy: dict[str, Any], backend: str) -> None:
    unknown = sorted(set(legacy) - set(LEGACY_OPTIONS))
    if unknown:
        raise TypeError(f"Detector() got unexpected keyword argument(s) {', '.join(unknown)}")
    if legacy.get("precision") is not None and backend not in ("auto", "openvino"):
        raise ValueError(
            f"precision={legacy['precision']!r} is OpenVINO's option; backend={backend!r} runs the precision "
            "the model file has (prepare FP16/INT8 with prepare_precision)"
        )
    check_threads(legacy.get("num_threads"))
