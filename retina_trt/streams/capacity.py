"""How many cameras one model can serve, estimated from its batch throughput.

Where the multi-source benchmark cannot run (a GPU machine without the cameras' set-up, or a
GPU that has not been lent), the batched stream's total fps for N sources is estimated from the
single-stream model alone: its throughput at batch 1 and at batch 8 (batches of one frame size
submitted as the stream submits them), interpolated linearly for the batch N sources fill, and
capped by what the cameras deliver:

    estimate(N) = min(N * camera_fps, T(min(N, 8)))

It leaves out decode, the cameras' own cost and the push timeout: it is an estimate, not a bound.
``bench/multisource.py`` prints it beside the measured rows, so the gap is known where both exist
(docs/benchmarks.md). Linear interpolation between batch 1 and 8 under-states the middle batches
(throughput rises faster at small batches).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

BATCHES = (1, 8)


def batch_throughput(
    det, frame: np.ndarray, batches=BATCHES, seconds: float = 3.0, warmup_s: float = 1.0
) -> dict[int, float]:
    """Images per second at each batch size (capped at the model's maximum batch), submitted as
    ``det.streams`` submits them: ``det.submit`` with ``det.parallel_requests`` batches in flight.
    After ``warmup_s`` of the same calls (a backend's first calls at a new shape are slower); the
    median of three rounds of ``seconds / 3`` (a shared machine varies from second to second)."""
    rates = {}
    for batch in sorted({min(b, det.max_batch) for b in batches}):
        frames = [frame] * batch
        _calls_for(det, frames, warmup_s)
        rounds = []
        for _ in range(3):
            started = time.perf_counter()
            calls = _calls_for(det, frames, seconds / 3)
            rounds.append(calls * batch / (time.perf_counter() - started))
        rates[batch] = float(np.median(rounds))
    return rates


def _calls_for(det, frames: list[np.ndarray], seconds: float) -> int:
    """Batches of ``frames`` submitted back to back for ``seconds`` (at least 3), at most
    ``det.parallel_requests`` in flight; how many finished."""
    depth, pending, calls = max(1, det.parallel_requests), deque(), 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or calls + len(pending) < 3:
        pending.append(det.submit(frames))
        if len(pending) >= depth:
            pending.popleft().result()
            calls += 1
    for future in pending:
        future.result()
    return calls + len(pending)


def estimate_fps(rates: dict[int, float], sources: int, camera_fps: float) -> float:
    """Total fps of ``sources`` cameras at ``camera_fps`` through the batched stream (the module
    docstring's formula)."""
    (lo, t_lo), (hi, t_hi) = sorted(rates.items())[0], sorted(rates.items())[-1]
    batch = min(max(sources, lo), hi)
    throughput = t_lo if hi == lo else t_lo + (t_hi - t_lo) * (batch - lo) / (hi - lo)
    return min(sources * camera_fps, throughput)


def estimate_rows(rates: dict[int, float], sources: list[int], camera_fps: float, backend: str) -> list[dict]:
    """One ``route: "estimate"`` row per N (total fps only), for the multi-source table."""
    return [
        {
            "route": "estimate",
            "sources": n,
            "backend": backend,
            "total_fps": round(estimate_fps(rates, n, camera_fps), 1),
            "batch_throughput": {str(b): round(r, 1) for b, r in rates.items()},
        }
        for n in sources
    ]
