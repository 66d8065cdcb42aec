"""Reopening a lost live source: bounded exponential backoff and the limits that end it, shared by
``Detector.stream`` (``runtime/stream.py``) and the multi-source stream (``retina_trt/streams``)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from retina_trt.errors import VideoError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconnectPolicy:
    """When and how often a lost live source is reopened.

    Attributes:
        reconnect: reopen at all.
        max_reconnects: successful reconnects over the source's life (None: no cap).
        max_attempts: failed attempts in a row before giving up.
        max_outage_s: seconds without a frame before giving up (the clock runs from the last
            frame read, so a source that reconnects and stalls again uses up the same budget).
        backoff_s: (first, cap) delay between attempts, doubling.
    """

    reconnect: bool = True
    max_reconnects: int | None = None
    max_attempts: int = 10
    max_outage_s: float = 120.0
    backoff_s: tuple[float, float] = (0.5, 8.0)

    def __post_init__(self) -> None:
        if int(self.max_attempts) < 1 or not float(self.max_outage_s) > 0:
            raise ValueError(
                f"max_reconnect_attempts must be >= 1 and max_outage_s > 0, got "
                f"{self.max_attempts}, {self.max_outage_s}"
            )
        first, cap = self.backoff_s
        if not 0 <= float(first) <= float(cap) < float("inf"):
            raise ValueError(f"backoff_s must be (first, cap) with 0 <= first <= cap, finite; got {self.backoff_s}")
        if self.max_reconnects is not None and int(self.max_reconnects) < 0:
            raise ValueError(f"max_reconnects must be >= 0 or None, got {self.max_reconnects}")


def reopen(source, policy: ReconnectPolicy, stats, stop: threading.Event, last_frame: float | None) -> bool:
    """Reopen ``source`` (a ``FrameSource``) under ``policy``; False when giving up or stopped.

    ``stats`` gets ``reconnect_attempts`` and ``reconnects`` counted and ``gave_up`` set to why;
    ``last_frame`` is the monotonic time of the last frame read (None: now)."""
    delay, cap = policy.backoff_s
    started = last_frame if last_frame is not None else time.monotonic()
    failed = 0
    while not stop.is_set():
        if policy.max_reconnects is not None and stats.reconnects >= policy.max_reconnects:
            stats.gave_up = f"{stats.reconnects} reconnects made (max_reconnects)"
            return False
        if failed >= policy.max_attempts:
            stats.gave_up = f"{failed} reconnect attempts failed in a row"
            return False
        outage = time.monotonic() - started
        if outage + delay > policy.max_outage_s:
            stats.gave_up = f"the source stayed away {outage:.1f} s (max_outage_s {policy.max_outage_s:g})"
            return False
        stop.wait(delay)
        if stop.is_set():
            return False
        stats.reconnect_attempts += 1
        try:
            source.open()
        except VideoError as err:
            failed += 1
            logger.warning("reconnect attempt %d to %s failed: %s", failed, source.source, err)
            delay = min(cap, max(delay, 0.01) * 2)
            continue
        stats.reconnects += 1
        logger.info("reconnected to %s", source.source)
        return True
    return False
