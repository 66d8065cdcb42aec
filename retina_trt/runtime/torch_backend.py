"""The PyTorch reference backend of ``Detector`` (``.pt`` / ``.pth`` checkpoints, on the CPU).

The only runtime module that imports torch; ``open_backend`` imports it for checkpoints only.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import torch

from retina_trt.contract import RawDetections
from retina_trt.image import PreprocessedBatch
from retina_trt.model.checkpoint import load_checkpoint
from retina_trt.model.normalize import PixelNormalizer
from retina_trt.runtime.backend import check_threads
from retina_trt.runtime.input_memory import check_input_fits
from retina_trt.spec import ModelSpec

_THREADS_LOCK = threading.Lock()


def _from_torch(result: dict[str, torch.Tensor]) -> RawDetections:
    return RawDetections(
        result["boxes"].float().numpy(), result["scores"].float().numpy(), result["labels"].long().numpy()
    )


@dataclass(frozen=True, kw_only=True)
class TorchOptions:
    """The PyTorch reference's options.

    Attributes:
        num_threads: torch's intra-op threads (default: torch's choice).
    """

    num_threads: int | None = None

    def __post_init__(self) -> None:
        check_threads(self.num_threads)


class TorchBackend:
    """The PyTorch reference on the CPU (``.pt`` checkpoints)."""

    name = "torch"
    precision = "fp32"

    def __init__(self, path: str | os.PathLike, *, num_threads: int | None = None) -> None:
        self.model = load_checkpoint(path)
        self.spec: ModelSpec = self.model.spec
        check_input_fits(self.spec, None, str(path))
        self.normalizer = PixelNormalizer(self.spec)
        self.input_size: tuple[int, int] | None = None
        self.max_batch = 64
        check_threads(num_threads)
        self.num_threads = num_threads

    @torch.no_grad()
    def run(self, batch: PreprocessedBatch) -> list[RawDetections]:
        if self.num_threads is None:
            return self._run(batch)
        # torch's thread count is process-wide: set it for this run only, then put it back
        # (runs with a thread count are serialized, so two Detectors never see each other's).
        with _THREADS_LOCK:
            previous = torch.get_num_threads()
            torch.set_num_threads(self.num_threads)
            try:
                return self._run(batch)
            finally:
                torch.set_num_threads(previous)

    def _run(self, batch: PreprocessedBatch) -> list[RawDetections]:
        images = self.normalizer(torch.from_numpy(batch.pixels))
        sizes = [tuple(int(v) for v in s) for s in batch.image_sizes]
        return [_from_torch(r) for r in self.model.detect(images, sizes)]

    def close(self) -> None:
        pass
