"""One library tracker for every class, with each association kept inside one class.

The ``trackers`` library's trackers ignore classes. Running one per class keeps tracks from
jumping between classes, but every call costs the same fixed Python overhead, once per class in
the frame (measured in docs/analytics.md). Here one tracker follows all classes instead:

- each class's boxes are moved into a band of their own along x (``class * CLASS_SPAN``), so
  boxes of two classes never overlap (IoU 0 in the library's own second-chance association);
- the tracker's IoU (the library's public ``iou=`` extension point) gives every pair of a track
  and a box from two bands ``-CROSS_PENALTY``: far below any same-class score, so the optimal
  assignment holds the best assignment of each class (the per-class trackers' result, ties
  aside), and the library's IoU threshold then rejects the cross-class pairs it was forced to
  make.

Motion models are translation-invariant, so the bands change no state but the position.
"""

from __future__ import annotations

import numpy as np
from trackers.utils.iou import IoU

CLASS_SPAN = 1.0e6  # px between the bands of two classes; far beyond any frame
CROSS_PENALTY = 100.0  # a cross-class pair's score: it outweighs any sum of same-class scores in [0, 1]


def to_bands(boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Boxes (N, 4, xyxy) moved to their class's band (float64, so no pixel is lost)."""
    banded = np.asarray(boxes, np.float64).copy()
    banded[:, [0, 2]] += np.asarray(classes, np.float64)[:, None] * CLASS_SPAN
    return banded


def from_bands(boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_bands` (float32 pixels)."""
    plain = np.asarray(boxes, np.float64).copy()
    plain[:, [0, 2]] -= np.asarray(classes, np.float64)[:, None] * CLASS_SPAN
    return plain.astype(np.float32)


def band_of(boxes: np.ndarray) -> np.ndarray:
    """The class band each box's centre lies in."""
    return np.floor((boxes[:, 0] + boxes[:, 2]) / (2 * CLASS_SPAN) + 0.5).astype(np.int64)


class ClassGatedIoU(IoU):
    """IoU within a class band, ``-CROSS_PENALTY`` across bands."""

    def _compute(self, boxes_1: np.ndarray, boxes_2: np.ndarray) -> np.ndarray:
        same = band_of(boxes_1)[:, None] == band_of(boxes_2)[None, :]
        return np.where(same, super()._compute(boxes_1, boxes_2), -CROSS_PENALTY)
