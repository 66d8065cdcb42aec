"""``retina-trt detect``: images, folders, globs and video files -> annotated outputs + JSON.

Every output is written under a temporary name and renamed when complete. Unreadable inputs are
reported and skipped; the command then exits with code 2 after processing the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import sys
import time
from pathlib import Path

import cv2
from tqdm import tqdm

from retina_trt.errors import ImageError, RetinaTrtError, VideoError
from retina_trt.runtime.detector import Detector
from retina_trt.runtime.preprocess import read_image
from retina_trt.utils import atomic_path

logger = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
# Consecutive unreadable frames after which a video is considered ended.
MAX_BAD_FRAMES = 25


def expand_sources(sources: list[str]) -> tuple[list[Path], list[Path]]:
    """(images, videos) from files, folders (their images and videos, sorted) and globs."""
    images: list[Path] = []
    videos: list[Path] = []
    for source in sources:
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


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}_{n}"
    used.add(stem)
    return stem


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_image(path: Path, image) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise ImageError(f"cannot write {path}")


def detect_images(det: Detector, images: list[Path], out_dir: Path, args: argparse.Namespace, used: set[str]) -> int:
    """Detect on image files; returns the number that failed."""
    failures = 0
    records = []
    for path in tqdm(images, desc="images", unit="img", disable=len(images) < 2 or None):
        stem = _unique_stem(path, used)
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
            records.append(record)
        if not args.no_draw:
            _write_image(out_dir / f"{stem}.jpg", dets.draw(image))
    if records:
        _write_text(out_dir / "detections.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return failures


def detect_video(det: Detector, path: Path, out_dir: Path, args: argparse.Namespace, used: set[str]) -> dict:
    """Detect on every frame of a video file: annotated .mp4 + one JSON line per frame."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"cannot open video {path}: not a video OpenCV can decode, or corrupt")
    stem = _unique_stem(path, used)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if args.max_frames:
        total = min(total or args.max_frames, args.max_frames)
    stats = {"frames": 0, "bad_frames": 0, "detections": 0}
    start = time.perf_counter()
    writer = None
    try:
        with contextlib.ExitStack() as stack:
            jsonl_tmp = stack.enter_context(atomic_path(out_dir / f"{stem}.jsonl"))
            video_tmp = None if args.no_draw else stack.enter_context(atomic_path(out_dir / f"{stem}.mp4"))
            jsonl = stack.enter_context(open(jsonl_tmp, "w"))
            bar = stack.enter_context(tqdm(total=total, desc=path.name, unit="frame", disable=None))
            index, bad_run = 0, 0
            while args.max_frames is None or stats["frames"] < args.max_frames:
                ok, frame = capture.read()
                if not ok or frame is None:
                    # A frame that fails before the known end is counted and skipped.
                    if total is not None and index < total - 1 and bad_run < MAX_BAD_FRAMES:
                        stats["bad_frames"] += 1
                        bad_run += 1
                        index += 1
                        continue
                    break
                bad_run = 0
                dets = det(frame)
                stats["frames"] += 1
                stats["detections"] += len(dets)
                record = {"frame": index, "timestamp_s": round(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, 4)}
                jsonl.write(json.dumps({**record, **dets.to_dict()}) + "\n")
                if video_tmp is not None:
                    if writer is None:
                        height, width = frame.shape[:2]
                        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                        writer = cv2.VideoWriter(str(video_tmp), fourcc, fps, (width, height))
                        if not writer.isOpened():
                            raise VideoError(f"cannot write video {out_dir / (stem + '.mp4')}")
                    writer.write(dets.draw(frame))
                index += 1
                bar.update(1)
                bar.set_postfix(fps=f"{stats['frames'] / (time.perf_counter() - start):.1f}")
            if stats["frames"] == 0:
                raise VideoError(f"no frame of {path} could be decoded")
            if writer is not None:
                writer.release()  # finalize the file before it is renamed
                writer = None
    finally:
        if writer is not None:
            writer.release()
        capture.release()
    return stats


def run_detect(args: argparse.Namespace) -> int:
    images, videos = expand_sources(args.sources)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise RetinaTrtError(f"--output {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    det = Detector(args.model, backend=args.backend, min_score=args.min_score)
    logger.info("%r on %d images and %d videos", det, len(images), len(videos))
    used: set[str] = set()
    failures = detect_images(det, images, out_dir, args, used) if images else 0
    for video in videos:
        try:
            stats = detect_video(det, video, out_dir, args, used)
            print(f"{video}: {stats['frames']} frames, {stats['detections']} detections, {stats['bad_frames']} unreadable frames skipped")
        except VideoError as err:
            failures += 1
            print(f"skipped {video}: {err}", file=sys.stderr)
    done = len(images) + len(videos) - failures
    print(f"{done} of {len(images) + len(videos)} inputs processed; outputs in {out_dir}")
    timings = ", ".join(f"{k} {v:.1f} ms" for k, v in det.timer.mean_ms().items())
    if timings:
        print(f"mean per call: {timings}")
    det.close()
    if failures:
        print(f"retina-trt detect: error: {failures} input(s) failed (see above)", file=sys.stderr)
        return 2
    return 0
