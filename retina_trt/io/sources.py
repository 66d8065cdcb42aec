"""Where frames come from: telling live sources from files, expanding SOURCE arguments, and
:class:`FrameSource`, the frames of one video file, stream URL, camera or image folder.

Lost live sources are reopened by ``io/reconnect.py``; the threads that read sources live in
``runtime/stream.py`` (one source) and ``streams/source.py`` (many).
"""

from __future__ import annotations

import glob
import logging
import os
import selectors
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from retina_trt.errors import ImageError, RetinaTrtError, VideoError
from retina_trt.image import read_image

logger = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
LIVE_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def mask_credentials(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``, as it may be
    logged or shown (camera and broker URLs carry credentials); other text is returned as is."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return str(url)
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return str(url)
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


PROBED = {"http": 80, "rtsp": 554}  # schemes whose server must answer before OpenCV opens them


def probe_stream(url: str, timeout_s: float, cancel: threading.Event | None = None) -> None:
    """Raise :class:`VideoError` unless the server of an ``http://`` or ``rtsp://`` stream answers
    a request within ``timeout_s``, in the calling (the source's own) thread; ``cancel`` set
    (the source is being closed) ends the wait at once.

    OpenCV's FFmpeg backend holds one process-wide lock while it opens a capture, so a camera that
    accepts the connection and never answers would hold up every other source's open for its whole
    time-out; this probe finds such a camera without that lock. Other schemes pass unprobed."""
    scheme = str(url).partition("://")[0]
    scheme = scheme.lower()
    if scheme not in PROBED:
        return
    parts = urlsplit(url)
    shown = mask_credentials(url)
    deadline = time.monotonic() + timeout_s
    try:
        port = parts.port or PROBED[scheme]
        with socket.create_connection((parts.hostname, port), timeout=timeout_s) as sock:
            path = parts.path or "/"
            if scheme == "http":
                request = f"HEAD {path} HTTP/1.0\r\nHost: {parts.hostname}\r\n\r\n"  # any answer will do
            else:
                request = f"OPTIONS {scheme}://{parts.hostname}:{port}{path} RTSP/1.0\r\nCSeq: 1\r\n\r\n"
            sock.sendall(request.encode())
            _wait_readable(sock, deadline, cancel)
            if not sock.recv(1):
                raise VideoError(f"cannot open video {shown}: the server closed the connection without answering")
    except TimeoutError as err:
        raise VideoError(f"cannot open video {shown}: the server did not answer within {timeout_s:g} s") from err
    except (OSError, ValueError) as err:
        raise VideoError(f"cannot open video {shown}: the server cannot be reached ({err})") from err


def _wait_readable(sock: socket.socket, deadline: float, cancel: threading.Event | None) -> None:
    """Until ``sock`` has data (TimeoutError at ``deadline``; VideoError once ``cancel`` is set)."""
    start = time.monotonic()
    with selectors.DefaultSelector() as selector:  # epoll: select() fails on descriptors past 1023
        selector.register(sock, selectors.EVENT_READ)
        while not selector.select(min(0.1, max(0.0, deadline - time.monotonic()))):
            if cancel is not None and cancel.is_set():
                waited = time.monotonic() - start
                raise VideoError(f"the source was closed; its server did not answer in {waited:.1f} s")
            if time.monotonic() >= deadline:
                raise TimeoutError


def is_live(source: str | int | os.PathLike) -> bool:
    """Cameras and network streams are live; files and folders are not."""
    if isinstance(source, int):
        return True
    text = str(source)
    return text.lower().startswith(LIVE_PREFIXES) or (text.isdigit() and not Path(text).exists())


def expand_sources(sources: list[str]) -> tuple[list[Path], list[Path | str]]:
    """(images, videos) from files, folders (their images and videos, sorted), globs, stream URLs
    (rtsp://, http(s)://, ...) and camera indices (``0`` when no file of that name exists)."""
    images: list[Path] = []
    videos: list[Path | str] = []
    for source in sources:
        if not str(source).strip():
            raise RetinaTrtError("a SOURCE is an empty string; give a file, folder, glob, URL or camera index")
        if is_live(source):
            videos.append(source)
            continue
        if any(ch in source for ch in "*?["):
            paths = sorted(Path(p) for p in glob.glob(source, recursive=True))
            if not paths:
                raise RetinaTrtError(f"no files match {source!r}")
        else:
            path = Path(source)
            if not path.exists():
                raise RetinaTrtError(f"source not found: {path}")
            if path.is_dir():
                paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
                if not paths:
                    raise RetinaTrtError(f"folder {path} has no image or video files")
            else:
                paths = [path]
        for path in paths:
            suffix = path.suffix.lower()
            if suffix in VIDEO_EXTS:
                videos.append(path)
            elif suffix in IMAGE_EXTS:
                images.append(path)
            elif path.is_file():
                raise RetinaTrtError(
                    f"unsupported file type {path.suffix or '(none)'} for {path}: expected an image "
                    f"({', '.join(sorted(IMAGE_EXTS))}) or a video ({', '.join(sorted(VIDEO_EXTS))})"
                )
    return images, videos


def stream_stem(source: Path | str) -> str:
    """A file-name stem for a source's outputs: a file's stem, ``camera0``, or the URL's tail."""
    if isinstance(source, Path):
        return source.stem
    text = str(source)
    if text.isdigit():
        return f"camera{text}"
    tail = text.split("://", 1)[-1].rstrip("/")
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in tail)[-60:] or "stream"


def utf8_named(paths: list) -> tuple[list, list]:
    """(the sources whose names are valid UTF-8, the others): OpenCV's C++ crashed on the others,
    and their names cannot be written to JSON."""
    kept, skipped = [], []
    for path in paths:
        try:
            os.fsencode(path).decode("utf-8")  # a name with undecodable bytes (surrogates) fails here
        except UnicodeError:
            skipped.append(path)
            continue
        kept.append(path)
    return kept, skipped


class FrameSource:
    """Frames of a video file, a stream URL, a camera index or an image folder.

    ``read()`` returns ``(frame, timestamp_s)``, ``None`` for a frame that failed to decode (the
    caller counts and skips it), or raises ``EOFError`` at the end / when the stream is lost.
    """

    def __init__(
        self,
        source: str | int | os.PathLike,
        *,
        max_bad_frames: int = 25,
        open_now: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        """``open_now=False``: a live source is opened by the caller (``open()``), so one that
        never connects can be retried; ``timeout_s``: how long a live open or read may block."""
        self.source = source
        self.live = is_live(source)
        self.max_bad_frames = max_bad_frames
        self.timeout_s = float(timeout_s)
        self.cancel: threading.Event | None = None  # set by the owner when closing: a probe stops waiting
        self._files: list[Path] | None = None
        self._capture: cv2.VideoCapture | None = None
        self._position = 0
        self._bad_run = 0
        self._total: int | None = None
        self._start = time.perf_counter()
        path = None if isinstance(source, int) or self.live else Path(source)
        if path is not None and path.is_dir():
            self._files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            if not self._files:
                raise VideoError(f"folder {path} has no images")
        elif path is not None and not path.exists():
            raise VideoError(f"video not found: {path}")
        elif open_now or not self.live:
            self.open()

    def open(self) -> None:
        """(Re)open a capture; raises :class:`VideoError` when it cannot be opened."""
        self.release()
        target = int(self.source) if str(self.source).isdigit() and self.live else str(self.source)
        if self.live and isinstance(target, str):  # a stalled network source must not block for ever
            probe_stream(target, self.timeout_s, self.cancel)
            ms = int(1000 * self.timeout_s)
            capture = cv2.VideoCapture(
                target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            )
        else:
            capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            capture.release()
            raise VideoError(
                f"cannot open video {self.source}: not a video or stream OpenCV can decode, or unreachable"
            )
        self._capture = capture
        self._bad_run = 0
        if not self.live:
            self._total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    @property
    def frame_count(self) -> int | None:
        """Frames (or images) of a file source; None for live sources or when unknown."""
        return len(self._files) if self._files is not None else self._total

    @property
    def fps(self) -> float:
        if self._capture is not None:
            fps = self._capture.get(cv2.CAP_PROP_FPS)
            if fps and 0 < fps < 1000:
                return float(fps)
        return 25.0

    def read(self) -> tuple[np.ndarray, float] | None:
        if self._files is not None:
            if self._position >= len(self._files):
                raise EOFError
            path = self._files[self._position]
            self._position += 1
            try:
                return read_image(path), (self._position - 1) / self.fps
            except ImageError as err:
                logger.warning("skipped %s: %s", path, err)
                return None
        if self._capture is None:
            raise EOFError
        ok, frame = self._capture.read()
        if ok and frame is not None:
            self._bad_run = 0
            self._position += 1
            if self.live:
                return frame, time.perf_counter() - self._start
            return frame, self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        # A failed read before a file's known end is a bad frame; otherwise the end / a lost stream.
        self._bad_run += 1
        self._position += 1
        if (
            not self.live
            and self._total is not None
            and self._position < self._total
            and self._bad_run < self.max_bad_frames
        ):
            return None
        raise EOFError

    def release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
