"""``retina-trt detect``: images, folders, globs and video files -> annotated outputs + JSON.

Every output is written under a temporary name and renamed when complete. Unreadable inputs are
reported and skipped; the command then exits with code 2 after processing the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import json
import logging
import os
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

from retina_trt.errors import ImageError, RetinaTrtError, VideoError
from retina_trt.image import read_image
from retina_trt.runtime.detector import Detector
from retina_trt.runtime.stream import is_live
from retina_trt.utils import atomic_path, check_output_folder

logger = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


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


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_image(path: Path, image) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise ImageError(f"cannot write {path}")


class JsonlOutput:
    """JSON lines written (and flushed) under a temporary name; :meth:`close` renames it to
    ``final`` holding only complete lines: a write that fails half-way (a full disk) is cut back
    to the last complete line, and a file with no line is removed."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.stem}.tmp-{os.getpid()}{final.suffix}")
        self._file = open(self.tmp, "w")
        self.records = 0
        self._good = 0  # bytes of complete lines

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self._good = self._file.tell()
        self.records += 1

    def close(self) -> Path | None:
        with contextlib.suppress(OSError):  # the buffer of a failed write: dropped below
            self._file.close()
        if not self.records:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
            return None
        os.truncate(self.tmp, self._good)
        os.replace(self.tmp, self.final)
        return self.final


def detect_images(det: Detector, images: list[Path], out_dir: Path, args: argparse.Namespace, used: OutputNames) -> int:
    """Detect on image files; returns the number that failed.

    ``detections.jsonl`` is written line by line (flushed) under a temporary name and renamed in
    the end, also when the run is interrupted, so what was processed is never lost."""
    failures = 0
    jsonl = JsonlOutput(out_dir / "detections.jsonl")
    try:
        for path in tqdm(images, desc="images", unit="img", disable=len(images) < 2 or None):
            stem = used.add(path.stem, (".json", ".jpg"))
            try:
                image = read_image(path)
                dets = det(image)
            except RetinaTrtError as err:
                failures += 1
                print(f"skipped {path}: {err}", file=sys.stderr)
                continue
            record = {"source": str(path), "width": image.shape[1], "height": image.shape[0], **dets.to_dict()}
            if args.json:
                _write_text(out_dir / f"{stem}.json", json.dumps(record, indent=1))
            else:
                jsonl.write(record)
            if not args.no_draw:
                _write_image(out_dir / f"{stem}.jpg", dets.draw(image))
    finally:
        jsonl.close()
    return failures


def _stream_stem(source: Path | str) -> str:
    if isinstance(source, Path):
        return source.stem
    text = str(source)
    if text.isdigit():
        return f"camera{text}"
    tail = text.split("://", 1)[-1].rstrip("/")
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in tail)[-60:] or "stream"


def detect_video(det: Detector, source: Path | str, out_dir: Path, args: argparse.Namespace, used: OutputNames) -> dict:
    """Detect on a video file or stream through ``Detector.stream``: annotated ``<name>.mp4`` and
    ``<name>.jsonl`` (one line per processed frame). Both are written under temporary names and
    finalized and renamed also when the run is interrupted (Ctrl-C), so what was processed stays
    playable and readable."""
    stem = used.add(_stream_stem(source), (".mp4", ".jsonl"))
    stream = det.stream(
        source,
        batch_size=args.batch_size or 1,
        every=args.every,
        max_frames=args.max_frames,
        output=None if args.no_draw else out_dir / f"{stem}.mp4",
        max_reconnect_attempts=getattr(args, "max_reconnect_attempts", 10),
        max_outage_s=getattr(args, "max_outage", 120.0),
    )
    jsonl = JsonlOutput(out_dir / f"{stem}.jsonl")
    frames = detections = 0
    total = stream.source.frame_count  # None for live sources
    if total and args.every > 1:
        total = -(-total // args.every)
    if args.max_frames:
        total = min(total or args.max_frames, args.max_frames)
    try:
        with tqdm(total=total, desc=str(source)[-40:], unit="frame", disable=None) as bar:
            for index, timestamp, _frame, dets in stream:
                jsonl.write({"frame": index, "timestamp_s": round(timestamp, 4), **dets.to_dict()})
                frames += 1
                detections += len(dets)
                bar.update(1)
                bar.set_postfix(fps=f"{stream.stats.fps:.1f}")
    finally:
        try:
            stream.close()  # finalizes the annotated video, also on Ctrl-C
        finally:
            jsonl.close()
    if frames == 0:
        raise VideoError(f"no frame of {source} could be decoded")
    stats = stream.stats.to_dict()
    if stats["gave_up"]:  # what was processed is kept (above); the input still counts as failed
        raise VideoError(
            f"lost {source} after {frames} frames and gave up reconnecting: {stats['gave_up']} "
            f"(outputs so far kept in {out_dir}; raise --max-reconnect-attempts / --max-outage to wait longer)"
        )
    return {
        "frames": frames,
        "detections": detections,
        "bad_frames": stats["decode_errors"],
        "dropped": stats["frames_dropped"],
        "reconnects": stats["reconnects"],
        "fps": stats["fps"],
    }


def _utf8_named(paths: list) -> tuple[list, int]:
    """(the sources whose names are valid UTF-8, how many were skipped): OpenCV's C++ crashed on
    the others, and their names cannot be written to JSON."""
    kept, skipped = [], 0
    for path in paths:
        try:
            os.fsencode(path).decode("utf-8")  # a name with undecodable bytes (surrogates) fails here
        except UnicodeError:
            skipped += 1
            print(f"skipped {os.fsencode(path)!r}: its file name is not valid UTF-8; rename it", file=sys.stderr)
            continue
        kept.append(path)
    return kept, skipped


@contextlib.contextmanager
def output_lock(out_dir: Path):
    """One ``detect`` at a time per output folder: a second one is refused (two writers into
    one ``detections.jsonl`` lost records)."""
    lock_path = out_dir / ".retina-trt-detect.lock"
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        handle.close()
        raise RetinaTrtError(
            f"another retina-trt detect is writing to {out_dir}; wait for it, or give another --output"
        ) from err
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        handle.close()


def run_detect(args: argparse.Namespace, detect_sources=None) -> int:
    """The command. ``detect_sources(det, videos, out_dir, args, used) -> failures``, when given
    (the CLI gives ``retina_trt.streams.detect.detect_sources``), runs two or more videos/streams
    through one batched multi-source stream; else each runs through ``Detector.stream`` in turn."""
    images, videos = expand_sources(args.sources)
    images, bad_images = _utf8_named(images)
    videos, bad_videos = _utf8_named(videos)
    out_dir = check_output_folder(
        args.output, "--output"
    )  # a file in the way, read-only: one line, before the model loads
    precision = getattr(args, "cpu_precision", None)
    det = Detector(
        args.model,
        backend=args.backend,
        min_score=args.min_score,
        precision=precision if args.backend in ("auto", "openvino") else None,
    )
    print(f"backend: {det.backend} ({det.precision})")
    try:
        with output_lock(out_dir):
            code = _detect_all(det, images, videos, out_dir, args, detect_sources)
    finally:
        det.close()
    if bad_images + bad_videos:
        print(
            f"retina-trt detect: error: {bad_images + bad_videos} input(s) with a non-UTF-8 name skipped",
            file=sys.stderr,
        )
        return 2
    return code


def _detect_all(
    det: Detector, images: list[Path], videos: list, out_dir: Path, args: argparse.Namespace, detect_sources=None
) -> int:
    logger.info("%r on %d images and %d videos", det, len(images), len(videos))
    used = OutputNames(out_dir, [*images, *videos])
    total = len(images) + len(videos)
    failures = detect_images(det, images, out_dir, args, used) if images else 0
    if detect_sources is not None and len(videos) >= 2 and args.batch_size is None:
        failures += detect_sources(det, videos, out_dir, args, used)
        videos = []
    for video in videos:
        try:
            stats = detect_video(det, video, out_dir, args, used)
            print(
                f"{video}: {stats['frames']} frames at {stats['fps']:.1f} FPS, {stats['detections']} detections, "
                f"{stats['bad_frames']} unreadable frames skipped, {stats['dropped']} dropped, "
                f"{stats['reconnects']} reconnects"
            )
        except VideoError as err:
            failures += 1
            print(f"skipped {video}: {err}", file=sys.stderr)
    print(f"{total - failures} of {total} inputs processed; outputs in {out_dir}")
    timings = ", ".join(f"{k} {v:.1f} ms" for k, v in det.timer.mean_ms().items())
    if timings:
        print(f"mean per call: {timings}")
    if failures:
        print(f"retina-trt detect: error: {failures} input(s) failed (see above)", file=sys.stderr)
        return 2
    return 0
