"""Event snapshots (``retina-trt analyze --snapshots DIR``): a JPEG of the frame with the
object's box drawn, or a crop around it (``crop=True``), for each line crossing and zone
entry or exit whose track is in the frame.

Each picture is written under a temporary name and renamed, before its event is emitted, so the
path in the event (``"snapshot"``) names a whole file. The folder is bounded: at most
``budget_mb`` of snapshots (those already there from earlier runs included), the oldest removed
first; only files of that name pattern are counted or removed, never anything else in the folder.
Files are ``DIR/SOURCE/TIME-FRAME-TYPE-TRACK.jpg`` (wall time first: no run writes over
another's). docs/operating.md#snapshots.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from retina_trt.utils import atomic_path

logger = logging.getLogger(__name__)

SNAPSHOT_EVENTS = ("line_crossing", "zone_enter", "zone_leave")
SNAPSHOT_NAME = re.compile(r"\d{8}-\d{6}\.\d{3}-\d{8}-(line_crossing|zone_enter|zone_leave)-\d+\.jpg")
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
        # only our own files count and are ever removed: the folder may hold the user's pictures
        existing = sorted(
            (p for p in self.folder.glob("*/*.jpg") if SNAPSHOT_NAME.fullmatch(p.name)), key=lambda p: p.stat().st_mtime
        )
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
        name = f"{event_stem(event)}-{int(event['track_id'])}.jpg"
        path = self.folder / safe_name(str(event.get("source", "source"))) / name
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


def event_stem(event: dict) -> str:
    """``TIME-FRAME-TYPE`` of an event's files: its wall time to the millisecond first, so a later
    run (whose frame numbers start again) never writes over an earlier run's file."""
    when = float(event.get("time") or time.time())
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when)) + f".{int(when % 1 * 1000):03d}"
    return f"{stamp}-{int(event.get('frame', 0)):08d}-{event['type']}"


def safe_name(name: str) -> str:
    """A source id as one folder name (no separators, no dot-dot)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "source"
