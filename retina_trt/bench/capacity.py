"""How many cameras one model can serve, estimated from its batch throughput.

Where the multi-source benchmark cannot run (a GPU machine without the cameras' set-up, or a
GPU that has not been lent), the batched stream's total fps for N sources is estimated from the
single-stream model alone: its throughput at batch 1 and at batch 8 (``predict_batch`` back to
back on one frame size), interpolated linearly for the batch N sources fill, and capped by what
the cameras deliver:

    estimate(N) = min(N * camera_fps, T(min(N, 8)))

It leaves out decode, the cameras' own cost and waiting for the push timeout, so it is an upper
bound of what ``det.streams`` reaches; ``bench/multisource.py`` prints it beside the measured rows,
so the gap is known on the machine where both exist. Linear interpolation between batch 1 and 8
under-states the middle batches (throughput rises faster at small batches).
"""

from __future__ import annotations

import time

import numpy as np

BATCHES = (1, 8)


def batch_throughput(det, frame: np.ndarray, batches=BATCHES, seconds: float = 3.0) -> dict[int, float]:
    """Images per second of ``det.predict_batch`` at each batch size (one caller, back to back,
    after one warm-up call per size)."""
    rates = {}
    for batch in batches:
        frames = [frame] * batch
        det.predict_batch(frames)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or calls < 3:
            det.predict_batch(frames)
            calls += 1
        rates[batch] = calls * batch / (time.perf_counter() - started)
    return rates


def estimate_fps(rates: dict[int, float], sources: int, camera_fps: float) -> float:
    """Total fps of ``sources`` cameras at ``camera_fps`` through the batched stream (the module
    docstring's formula)."""
    (lo, t_lo), (hi, t_hi) = sorted(rates.items())[0], sorted(rates.items())[-1]
    batch = min(max(sources, lo), hi)
    throughput = t_lo if hi == lo else t_lo + (t_hi - t_lo) * (batch - lo) / (hi - lo)
    return min(sources * camera_fps, throughput)


def estimate_rows(rates: dict[int, float], sources: list[int], camera_fps: float, backend: str) -> list[dict]:
    """One ``route: "estimate"`` row per N (total fps only), for the multi-source table."""
    return [{"route": "estimate", "sources": n, "backend": backend, "total_fps": round(estimate_fps(rates, n, camera_fps), 1),
             "batch_throughput": {str(b): round(r, 1) for b, r in rates.items()}} for n in sources]  # fmt: skip
