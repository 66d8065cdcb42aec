"""Small shared helpers: atomic file output, timing."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    Nothing is left under ``path`` (or the temporary name) when the block raises, so a reader
    never sees a half-written file. The parent directory is created if needed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: writers such as cv2.imwrite pick the format from it.
    tmp = final.with_name(f".{final.stem}.tmp-{os.getpid()}{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class Timer:
    """Accumulates wall time per named stage: ``with timer("preprocess"): ...``."""

    def __init__(self) -> None:
        self.totals_s: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals_s[stage] = self.totals_s.get(stage, 0.0) + time.perf_counter() - start
            self.counts[stage] = self.counts.get(stage, 0) + 1

    def mean_ms(self) -> dict[str, float]:
        """Mean milliseconds per call of each stage."""
        return {k: 1000.0 * v / self.counts[k] for k, v in self.totals_s.items()}
