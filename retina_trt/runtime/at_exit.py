"""What is left open at interpreter exit is closed while the interpreter is still whole: first
the streaming pipelines (their threads stop and their outputs are finalized under their names),
then the Detectors (a backend's in-flight requests finish and its runtime objects are released).

Left to the interpreter's teardown, a runtime's C++ objects were destroyed with their worker
threads still joinable, which aborted the process ("terminate called without an active
exception"): a stream never closed, or an OpenVINO Detector whose asynchronous requests had run
(docs/failure-behaviour.md).
"""

from __future__ import annotations

import atexit
import contextlib
import weakref

_PIPELINES: weakref.WeakSet = weakref.WeakSet()
_DETECTORS: weakref.WeakSet = weakref.WeakSet()


def close_at_exit(pipeline=None, detector=None) -> None:
    """Close ``pipeline`` / ``detector`` at exit unless it was closed before (held weakly)."""
    if pipeline is not None:
        _PIPELINES.add(pipeline)
    if detector is not None:
        _DETECTORS.add(detector)


@atexit.register
def _close_left_open() -> None:
    for group in (_PIPELINES, _DETECTORS):  # pipelines first: they use the detectors
        for item in list(group):
            with contextlib.suppress(Exception):
                item.close()
