"""Where results go: annotated videos, JSON lines, single files, and the lock that keeps one writer
per output folder. Every output is written under a temporary name (``utils.temp_path``) and renamed
when complete, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

import cv2
import numpy as np

from retina_trt.errors import ImageError, RetinaTrtError, VideoError
from retina_trt.utils import atomic_path, temp_path


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_image(path: Path, image) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise ImageError(f"cannot write {path}")


def letterbox_to(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` resized to fit ``size`` (H, W) keeping its aspect ratio, centred on black."""
    height, width = size
    scale = min(height / frame.shape[0], width / frame.shape[1])
    new_h, new_w = max(1, round(frame.shape[0] * scale)), max(1, round(frame.shape[1] * scale))
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return canvas


def _plays(path: Path) -> bool:
    """True when OpenCV decodes a first frame of the video at ``path``."""
    capture = cv2.VideoCapture(str(path))
    try:
        ok, _ = capture.read()
        return bool(ok)
    finally:
        capture.release()


class VideoOutput:
    """An annotated video written under a temporary name and renamed when closed (also when the
    run is interrupted: the partial file is finalized, so it stays playable)."""

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path)
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)
        self.frames = 0
        self.letterboxed = 0

    def write(self, frame: np.ndarray) -> None:
        """Append ``frame``; a frame of another size than the first is letterboxed to it (OpenCV's
        writer would drop it silently), and counted in ``letterboxed``."""
        if self._writer is not None and frame.shape[:2] != self._size:
            frame = letterbox_to(frame, self._size)
            self.letterboxed += 1
        if self._writer is None:
            height, width = frame.shape[:2]
            self._size = (height, width)
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self._writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise VideoError(f"cannot write video {self.path}")
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> Path | None:
        """Finalize and rename; None (and nothing left behind) when no frame was written.

        Raises:
            VideoError: the finished file does not play (OpenCV's writer fails silently, e.g. on a
                full disk): it is removed, never left under the final name."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        if not _plays(self.tmp):
            with contextlib.suppress(OSError):
                self.tmp.unlink()
            raise VideoError(
                f"the annotated video {self.path} could not be written completely (a full disk?); "
                "nothing was left under its name"
            )
        os.replace(self.tmp, self.path)
        return self.path


class JsonlOutput:
    """JSON lines written (and flushed) under a temporary name; :meth:`close` renames it to
    ``final`` holding only complete lines: a write that fails half-way (a full disk) is cut back
    to the last complete line, and a file with no line is removed."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = temp_path(final)
        self._file = open(self.tmp, "w")
        self.records = 0
        self._good = 0  # bytes of complete lines

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self._good = self._file.tell()
        self.records += 1

    def close(self) -> Path | None:
        """Rename to the final name (once; again returns what the first close did)."""
        if self._file.closed:
            return self.final if self.records and self.final.exists() else None
        with contextlib.suppress(OSError):  # the buffer of a failed write: dropped below
            self._file.close()
        if not self.records:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
            return None
        os.truncate(self.tmp, self._good)
        os.replace(self.tmp, self.final)
        return self.final


class OutputNames:
    """Output file stems for one run: never the name of an input (``--output`` may be the source
    folder), never one another output of the run already has (``detections.jsonl`` included)."""

    def __init__(self, out_dir: Path, inputs: list[Path | str]) -> None:
        self.out_dir = out_dir
        self.inputs = {Path(p).resolve() for p in inputs if isinstance(p, Path)}
        self.used: set[str] = {"detections"}  # detections.jsonl of the images

    def add(self, stem: str, suffixes: tuple[str, ...]) -> str:
        candidate, n = stem, 1
        while candidate in self.used or any(
            (self.out_dir / f"{candidate}{s}").resolve() in self.inputs for s in suffixes
        ):
            n += 1
            candidate = f"{stem}_{n}"
        self.used.add(candidate)
        return candidate


class ExclusiveLock:
    """One writer at a time for an output: ``acquire`` takes an flock on ``lock_path`` or raises
    ``RetinaTrtError(busy)``; ``release`` removes the lock file."""

    def __init__(self, lock_path: Path, busy: str) -> None:
        self.lock_path, self.busy = Path(lock_path), busy
        self._handle = None

    def acquire(self) -> ExclusiveLock:
        handle = open(self.lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            handle.close()
            raise RetinaTrtError(self.busy) from err
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
            self._handle.close()
            self._handle = None


@contextlib.contextmanager
def output_lock(out_dir: Path):
    """One ``detect`` at a time per output folder: a second one is refused (two writers into
    one ``detections.jsonl`` lost records)."""
    lock = ExclusiveLock(
        out_dir / ".retina-trt-detect.lock",
        f"another retina-trt detect is writing to {out_dir}; wait for it, or give another `out_dir`",
    ).acquire()
    try:
        yield
    finally:
        lock.release()
