"""Event clips with pre-roll (``retina-trt analyze --clips DIR --pre S --post S``).

Each source keeps a ring buffer of its last ``pre_s`` seconds of frames, JPEG-encoded (a 720p
frame is a tenth of a megabyte or so instead of 2.7 MB raw; docs/operating.md#clips measures the
buffer), and never more than ``MAX_PRE_ROLL_BYTES`` of them (then the pre-roll is shorter). A
line crossing or zone entry or exit starts a clip with the buffered frames and the frames of the
next ``post_s`` seconds; an event while a clip is open extends it to ``post_s``
after that event, so overlapping events share one clip. A finished clip is written by a
background thread (temporary name, then renamed: ``io/writers.VideoOutput``) and announced by a
``clip_ready`` event naming the file, the source time it covers and the events it holds.

The events a clip holds carry ``"clip"``: the path it will have once ready.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from retina_trt.analytics.snapshots import SNAPSHOT_EVENTS, event_stem, safe_name
from retina_trt.io.writers import VideoOutput

logger = logging.getLogger(__name__)

CLIP_JPEG_QUALITY = 80
MAX_PRE_ROLL_BYTES = 20_000_000  # per source: beyond it the oldest buffered frames go (a shorter pre-roll)


@dataclass
class _Clip:
    path: Path
    end_t: float
    frames: list[tuple[float, bytes]]
    events: list[dict] = field(default_factory=list)


class SourceClips:
    """One source's ring buffer and open clip (module docstring)."""

    def __init__(self, source_id: str, folder: Path, pre_s: float, post_s: float, fps: float) -> None:
        self.source_id, self.folder = source_id, folder
        self.pre_s, self.post_s, self.fps = float(pre_s), float(post_s), float(fps)
        self.ring: deque[tuple[float, bytes]] = deque()
        self.ring_bytes = 0
        self.peak_ring_bytes = 0
        self.clip: _Clip | None = None

    def frame(self, frame: np.ndarray, t: float) -> _Clip | None:
        """Buffer ``frame`` (source time ``t``); returns the open clip when it just ended."""
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, CLIP_JPEG_QUALITY])
        if not ok:
            return None
        item = (float(t), data.tobytes())
        if self.clip is not None:
            if t > self.clip.end_t:
                done, self.clip = self.clip, None
                self._remember(item)
                return done
            self.clip.frames.append(item)
        self._remember(item)
        return None

    def event(self, event: dict, t: float) -> dict:
        """Open (or extend) the clip for ``event``; the event with the clip's path."""
        if self.clip is None:
            name = f"{event_stem(event)}.mp4"
            self.clip = _Clip(self.folder / safe_name(self.source_id) / name, t + self.post_s, list(self.ring))
        self.clip.end_t = max(self.clip.end_t, t + self.post_s)
        self.clip.events.append({k: event.get(k) for k in ("type", "frame", "t", "track_id", "class")})
        return {**event, "clip": str(self.clip.path)}

    def _remember(self, item: tuple[float, bytes]) -> None:
        self.ring.append(item)
        self.ring_bytes += len(item[1])
        while self.ring and (self.ring[0][0] < item[0] - self.pre_s - 1e-6 or self.ring_bytes > MAX_PRE_ROLL_BYTES):
            self.ring_bytes -= len(self.ring.popleft()[1])
        self.peak_ring_bytes = max(self.peak_ring_bytes, self.ring_bytes)


class Clips:
    """Every source's clips, and the thread that writes finished ones (module docstring).

    ``frame`` per analysed frame and ``event`` per event, from the analytics loop; ``ready()``
    hands back the ``clip_ready`` events of the clips written since the last call."""

    def __init__(self, folder: str | Path, *, pre_s: float = 5.0, post_s: float = 5.0, fps: float = 15.0) -> None:
        for name, value in (("pre", pre_s), ("post", post_s)):
            if not 0 <= float(value) <= 600:
                raise ValueError(f"--{name} must be in [0, 600] seconds, got {value!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pre_s, self.post_s, self.fps = float(pre_s), float(post_s), float(fps)
        self.sources: dict[str, SourceClips] = {}
        self._todo: queue.Queue = queue.Queue()
        self._ready: queue.Queue = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="retina_trt-clips", daemon=True)
        self._writer.start()

    def frame(self, source_id: str, frame: np.ndarray, t: float) -> None:
        done = self._source(source_id).frame(frame, t)
        if done is not None:
            self._todo.put((source_id, done))

    def event(self, event: dict, frame_t: float) -> dict:
        if event.get("type") not in SNAPSHOT_EVENTS:
            return event
        return self._source(str(event["source"])).event(event, frame_t)

    def ready(self) -> list[dict]:
        events = []
        while True:
            try:
                events.append(self._ready.get_nowait())
            except queue.Empty:
                return events

    def close(self, timeout_s: float = 60.0) -> list[dict]:
        """Finish the open clips (with the frames they have), wait for the writer; the last
        ``clip_ready`` events."""
        for source_id, clips in self.sources.items():
            if clips.clip is not None:
                self._todo.put((source_id, clips.clip))
                clips.clip = None
        self._todo.put(None)
        self._writer.join(timeout_s)
        return self.ready()

    def _source(self, source_id: str) -> SourceClips:
        if source_id not in self.sources:
            self.sources[source_id] = SourceClips(source_id, self.folder, self.pre_s, self.post_s, self.fps)
        return self.sources[source_id]

    def _write_loop(self) -> None:
        while (item := self._todo.get()) is not None:
            source_id, clip = item
            try:
                self._ready.put(_write_clip(source_id, clip, self.fps))
            except Exception as err:  # one failing clip never stops the others
                logger.warning("clip %s not written: %s: %s", clip.path, type(err).__name__, err)


def _write_clip(source_id: str, clip: _Clip, fps: float) -> dict:
    """Decode the clip's JPEGs into a playable video; its ``clip_ready`` event."""
    from retina_trt.analytics.events import stamp

    clip.path.parent.mkdir(parents=True, exist_ok=True)
    span = clip.frames[-1][0] - clip.frames[0][0] if clip.frames else 0.0
    out = VideoOutput(clip.path, (len(clip.frames) - 1) / span if span > 0 else fps)  # the source's own rate
    try:
        for _, data in clip.frames:
            out.write(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    finally:
        out.close()
    event = {
        "type": "clip_ready",
        "clip": str(clip.path),
        "frames": len(clip.frames),
        "start_t": clip.frames[0][0] if clip.frames else None,
        "end_t": clip.frames[-1][0] if clip.frames else None,
        "events": clip.events,
    }
    return stamp(event, source_id)
