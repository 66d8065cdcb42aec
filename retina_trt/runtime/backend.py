"""The interface every backend keeps, and what backends share.

A backend runs a preprocessed batch (``image.PreprocessedBatch``: uint8 BGR NHWC, padded, with
each image's valid size) and returns one :class:`~retina_trt.contract.RawDetections` per image, in
network-input pixels, highest score first. ``Detector`` maps them back to original pixels.

:class:`Backend` is what every backend has; :class:`AsyncBackend` adds ``submit`` for a backend
that runs several requests at once (OpenVINO's infer requests, TensorRT's execution contexts).
Each backend module also defines its own options dataclass (``OpenVinoOptions``, ...); the table
of backends is ``runtime/backends.py``.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from typing import Protocol, runtime_checkable

import numpy as np

from retina_trt.contract import RawDetections
from retina_trt.contract.nms import finish_candidates
from retina_trt.image import PreprocessedBatch
from retina_trt.spec import ModelSpec

MAX_THREADS = 1024  # more threads than any CPU has cores: a typo, refused before a backend allocates them


@runtime_checkable
class Backend(Protocol):
    """What ``Detector`` needs of a backend.

    Attributes:
        name: the table's name of the backend (``"openvino"``, ...).
        spec: the model's :class:`~retina_trt.spec.ModelSpec` (from the file's metadata).
        input_size: (H, W) of a fixed-size model, None for dynamic shapes.
        max_batch: the largest batch one ``run`` takes.
        precision: what runs: ``fp32``/``fp16``/``int8`` (the graph's) or OpenVINO's
            ``f32``/``bf16``/``int8+f32``/``int8+bf16``.
    """

    name: str
    spec: ModelSpec
    input_size: tuple[int, int] | None
    max_batch: int

    @property
    def precision(self) -> str: ...

    def run(self, batch: PreprocessedBatch) -> list[RawDetections]:
        """Detections of every image of ``batch``, in network-input pixels."""
        ...

    def close(self) -> None:
        """Release the backend's resources (idempotent)."""
        ...


@runtime_checkable
class AsyncBackend(Backend, Protocol):
    """A backend that runs up to ``parallel_requests`` batches at once."""

    parallel_requests: int

    def submit(self, batch: PreprocessedBatch) -> Future:
        """Start ``batch`` without waiting; the future's result is ``run``'s."""
        ...


def check_threads(num_threads) -> None:
    """Raise ValueError unless ``num_threads`` is None or a positive integer up to MAX_THREADS."""
    if num_threads is None:
        return
    if (
        isinstance(num_threads, bool)
        or not isinstance(num_threads, (int, np.integer))
        or not 1 <= num_threads <= MAX_THREADS
    ):
        raise ValueError(
            f"num_threads must be a positive integer up to {MAX_THREADS} (or None for the backend's "
            f"default; this machine has {os.cpu_count()} cores), got {num_threads!r}"
        )


def outputs_to_detections(outputs: list[np.ndarray], nms: str, spec: ModelSpec) -> list[RawDetections]:
    """Per image :class:`RawDetections` from a model's outputs in contract order (``nms="none"``:
    the merged candidates, finished by the reference NMS in numpy)."""
    if nms == "none":
        return finish_candidates(*outputs, spec)
    num, boxes, scores, classes = outputs
    results = []
    for i in range(len(num)):
        n = int(num[i, 0])
        results.append(RawDetections(boxes[i, :n], scores[i, :n], classes[i, :n].astype(np.int64)))
    return results
