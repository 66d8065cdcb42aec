"""Event snapshots (``retina-trt analyze --snapshots DIR``): a JPEG of the frame with the
object's box drawn, or a crop around it (``crop=True``), for each line crossing and zone
entry or exit whose track is in the frame.

Each picture is written under a temporary name and renamed, before its event is emitted, so the
path in the event (``"snapshot"``) names a whole file. The folder is bounded: at most
``budget_mb`` of snapshots (those already there from earlier runs included), the oldest removed
first. Files are ``DIR/SOURCE/FRAME-TYPE-TRACK.jpg``. docs/operating.md#snapshots.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from retina_trt.utils import atomic_path

logger = logging.getLogger(__name__)

SNAPSHOT_EVENTS = ("line_crossing", "zone_enter", "zone_leave")
CROP_MARGIN = 0.25  # of the box's size, on each side


class Snapshots:
    """JPEG snapshots of events in ``folder``, at most ``budget_mb`` in all (module docstring)."""

    def __init__(self, folder: str | Path, *, budget_mb: float = 1000.0, crop: bool = False, quality: int = 85) -> None:
        if not budget_mb > 0:
            raise ValueError(f"the snapshot budget must be > 0 MB, got {budget_mb!r}")
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {quality!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.budget = int(budget_mb * 1e6)
        self.crop, self.quality = bool(crop), int(quality)
        self.written = self.removed = self.failed = 0
        existing = sorted(self.folder.glob("*/*.jpg"), key=lambda p: p.stat().st_mtime)
        self._files: deque[tuple[Path, int]] = deque((p, p.stat().st_size) for p in existing)
        self.total_bytes = sum(size for _, size in self._files)

    def attach(self, event: dict, frame: np.ndarray, tracked) -> dict:
        """``event`` with ``"snapshot": path`` when it is a counted event whose track is in
        ``tracked`` (the frame's tracked detections); otherwise unchanged."""
        if event.get("type") not in SNAPSHOT_EVENTS or tracked.tracker_ids is None:
            return event
        hits = np.flatnonzero(tracked.tracker_ids == int(event.get("track_id", -1)))
        if not len(hits):
            return event
        box = tracked.boxes_xyxy[hits[0]]
        picture = self._crop(frame, box) if self.crop else self._boxed(frame, box, event.get("class", ""))
        name = f"{int(event.get('frame', 0)):08d}-{event['type']}-{int(event['track_id'])}.jpg"
        path = self.folder / _safe(str(event.get("source", "source"))) / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write(path, picture)
        except Exception as err:  # a full disk never stops the analytics
            self.failed += 1
            logger.warning("snapshot %s not written: %s: %s", path, type(err).__name__, err)
            return event
        self._account(path)
        return {**event, "snapshot": str(path)}

    def _write(self, path: Path, picture: np.ndarray) -> None:
        with atomic_path(path) as tmp:
            ok, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise OSError("JPEG encoding failed")
            tmp.write_bytes(data.tobytes())

    def _account(self, path: Path) -> None:
        size = path.stat().st_size
        self._files.append((path, size))
        self.total_bytes += size
        self.written += 1
        while self.total_bytes > self.budget and len(self._files) > 1:
            old, old_size = self._files.popleft()
            old.unlink(missing_ok=True)
            self.total_bytes -= old_size
            self.removed += 1

    def _boxed(self, frame: np.ndarray, box: np.ndarray, label: str) -> np.ndarray:
        picture = frame.copy()
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(picture, (x1, y1), (x2, y2), (0, 255, 255), 2)
        cv2.putText(picture, str(label), (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
        return picture

    def _crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in box)
        mx, my = CROP_MARGIN * (x2 - x1), CROP_MARGIN * (y2 - y1)
        left, top = int(max(0, x1 - mx)), int(max(0, y1 - my))
        right, bottom = int(min(width, x2 + mx + 1)), int(min(height, y2 + my + 1))
        return frame[top : max(bottom, top + 1), left : max(right, left + 1)].copy()

    def stats(self) -> dict:
        return {"written": self.written, "removed": self.removed, "failed": self.failed, "bytes": self.total_bytes}


def _safe(name: str) -> str:
    """A source id as one folder name (no separators, no dot-dot)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "source"
