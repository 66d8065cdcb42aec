"""Detection over files, folders, globs, videos, streams and cameras, to annotated outputs and JSON:
:func:`detect_files`, the library behind ``retina-trt detect``.

Images go through the Detector one by one into ``detections.jsonl`` (or one JSON each) and an
annotated copy. One video or stream runs through ``Detector.stream``; two or more run through one
:class:`~retina_trt.streams.MultiStream` that batches their frames into one model call. Every output
is written under a temporary name and renamed when complete, also when the run is interrupted.
An input that fails is counted in the :class:`DetectReport` and skipped; the others go on. This
module never prints and never exits: the CLI (``cli/detect.py``) reports.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from retina_trt.errors import RetinaTrtError, VideoError
from retina_trt.image import read_image
from retina_trt.io.sources import expand_sources, stream_stem, utf8_named
from retina_trt.io.writers import JsonlOutput, OutputNames, VideoOutput, output_lock, write_image, write_text
from retina_trt.streams.multistream import MultiStream, SourceEnd
from retina_trt.streams.schedule import InferSchedule
from retina_trt.utils import check_output_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DetectOptions:
    """How :func:`detect_files` runs and what it writes.

    Attributes:
        json_per_image: one ``<name>.json`` per image instead of one ``detections.jsonl``.
        draw: write annotated images and videos beside the JSON.
        max_frames: stop each video or stream after this many processed frames.
        every: process every N-th frame of videos and streams.
        batch_size: frames per model call of one video or stream; given, every video runs on its
            own (``Detector.stream``); None, two or more are batched across sources.
        max_reconnect_attempts, max_outage_s: when a lost live stream is given up.
        progress: show progress bars (tqdm, on stderr).
        infer: when the model runs on a video's frame (``streams/schedule.py``: ``"every"``, a whole
            N or ``"adaptive"``); anything but every runs the videos through the batched stream
            (not with ``batch_size``). A skipped frame's JSON line holds the last detections and
            ``"inferred": false``.
    """

    json_per_image: bool = False
    draw: bool = True
    max_frames: int | None = None
    every: int = 1
    batch_size: int | None = None
    max_reconnect_attempts: int = 10
    max_outage_s: float = 120.0
    progress: bool = False
    infer: InferSchedule | str | int = "every"

    def __post_init__(self) -> None:
        object.__setattr__(self, "infer", InferSchedule.parse(self.infer))
        if self.infer.mode != "every" and self.batch_size is not None:
            raise ValueError("`infer` other than every runs on the batched stream; leave `batch_size` out")
        for name in ("every", "max_reconnect_attempts"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_frames", "batch_size"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if not self.max_outage_s > 0:
            raise ValueError(f"max_outage_s must be > 0, got {self.max_outage_s}")


@dataclass
class InputResult:
    """What became of one input: ``error`` is None when it was processed."""

    source: str
    kind: str  # "image" or "video"
    frames: int = 0
    detections: int = 0
    fps: float = 0.0
    bad_frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    batched: bool = False  # ran in one multi-source stream with the other videos
    inferred: int | None = None  # frames the model ran on (batched stream), None where it ran on all
    infer_reasons: dict | None = None  # adaptive: why the model ran, per reason
    error: str | None = None


@dataclass
class DetectReport:
    """The outcome of :func:`detect_files`: one :class:`InputResult` per input, in order."""

    out_dir: Path
    results: list[InputResult] = field(default_factory=list)
    bad_names: list = field(default_factory=list)  # inputs skipped: their names are not UTF-8
    timings_ms: dict[str, float] = field(default_factory=dict)  # the Detector's mean per call

    @property
    def failures(self) -> list[InputResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.bad_names


@dataclass(frozen=True)
class Inputs:
    """SOURCE arguments expanded: image files, videos and streams, and names that are not UTF-8."""

    images: list[Path]
    videos: list
    bad_names: list

    @classmethod
    def expand(cls, sources: Sequence[str]) -> Inputs:
        """Raises :class:`RetinaTrtError` for a source that is missing, empty or of an unknown type."""
        images, videos = expand_sources(list(sources))
        images, bad_images = utf8_named(images)
        videos, bad_videos = utf8_named(videos)
        return cls(images, videos, [*bad_images, *bad_videos])


def detect_files(
    det, sources: Sequence[str] | Inputs, out_dir, *, options: DetectOptions | None = None
) -> DetectReport:
    """Detect on every input of ``sources`` and write the outputs into ``out_dir``.

    ``sources`` are SOURCE strings (files, folders, globs, URLs, camera indices) or an
    :class:`Inputs` already expanded. One run at a time may write into ``out_dir`` (a second is
    refused with :class:`RetinaTrtError`). Returns the report; never raises for one failing input."""
    options = options or DetectOptions()
    inputs = sources if isinstance(sources, Inputs) else Inputs.expand(sources)
    out_dir = check_output_folder(out_dir, "out_dir")
    report = DetectReport(out_dir, bad_names=list(inputs.bad_names))
    logger.info("%r on %d images and %d videos", det, len(inputs.images), len(inputs.videos))
    with output_lock(out_dir):
        used = OutputNames(out_dir, [*inputs.images, *inputs.videos])
        if inputs.images:
            report.results += _detect_images(det, inputs.images, out_dir, options, used)
        batched = len(inputs.videos) >= 2 or options.infer.mode != "every"
        if inputs.videos and batched and options.batch_size is None:
            report.results += _detect_batched(det, inputs.videos, out_dir, options, used)
        else:
            report.results += [_detect_video(det, video, out_dir, options, used) for video in inputs.videos]
    report.timings_ms = det.timer.mean_ms()
    return report


def _detect_images(det, images: list[Path], out_dir: Path, options: DetectOptions, used: OutputNames) -> list:
    """Image files, one by one. ``detections.jsonl`` is written line by line (flushed) under a
    temporary name and renamed in the end, also when the run is interrupted."""
    results = []
    jsonl = JsonlOutput(out_dir / "detections.jsonl")
    try:
        for path in tqdm(images, desc="images", unit="img", disable=not options.progress or len(images) < 2):
            stem = used.add(path.stem, (".json", ".jpg"))
            try:
                image = read_image(path)
                dets = det(image)
            except RetinaTrtError as err:
                results.append(InputResult(str(path), "image", error=str(err)))
                continue
            record = {"source": str(path), "width": image.shape[1], "height": image.shape[0], **dets.to_dict()}
            if options.json_per_image:
                write_text(out_dir / f"{stem}.json", json.dumps(record, indent=1))
            else:
                jsonl.write(record)
            if options.draw:
                write_image(out_dir / f"{stem}.jpg", dets.draw(image))
            results.append(InputResult(str(path), "image", frames=1, detections=len(dets)))
    finally:
        jsonl.close()
    return results


def _frame_total(stream, options: DetectOptions) -> int | None:
    total = stream.source.frame_count  # None for live sources
    if total and options.every > 1:
        total = -(-total // options.every)
    if options.max_frames:
        total = min(total or options.max_frames, options.max_frames)
    return total


def _detect_video(det, source, out_dir: Path, options: DetectOptions, used: OutputNames) -> InputResult:
    """One video file or stream through ``Detector.stream``: annotated ``<name>.mp4`` and
    ``<name>.jsonl`` (one line per processed frame), finalized also when interrupted."""
    result = InputResult(str(source), "video")
    stem = used.add(stream_stem(source), (".mp4", ".jsonl"))
    try:
        stream = det.stream(
            source,
            batch_size=options.batch_size or 1,
            every=options.every,
            max_frames=options.max_frames,
            output=out_dir / f"{stem}.mp4" if options.draw else None,
            max_reconnect_attempts=options.max_reconnect_attempts,
            max_outage_s=options.max_outage_s,
        )
    except VideoError as err:
        result.error = str(err)
        return result
    jsonl = JsonlOutput(out_dir / f"{stem}.jsonl")
    try:
        with tqdm(
            total=_frame_total(stream, options), desc=str(source)[-40:], unit="frame", disable=not options.progress
        ) as bar:
            for index, timestamp, _frame, dets in stream:
                jsonl.write({"frame": index, "timestamp_s": round(timestamp, 4), **dets.to_dict()})
                result.frames += 1
                result.detections += len(dets)
                bar.update(1)
                bar.set_postfix(fps=f"{stream.stats.fps:.1f}")
    finally:
        try:
            stream.close()  # finalizes the annotated video, also on Ctrl-C
        finally:
            jsonl.close()
    return _finish(result, stream.stats.to_dict(), out_dir)


def _finish(result: InputResult, stats: dict, out_dir: Path) -> InputResult:
    """Fill in a video's counters; a video with no frame, or a stream given up, has failed (what
    was processed is kept)."""
    result.fps = stats["fps"]
    result.bad_frames = stats.get("decode_errors", 0)
    result.dropped = stats.get("frames_dropped", stats.get("dropped", 0))
    result.reconnects = stats["reconnects"]
    if result.frames == 0:
        result.error = f"no frame of {result.source} could be decoded"
    elif stats["gave_up"]:
        result.error = (
            f"lost {result.source} after {result.frames} frames and gave up reconnecting: {stats['gave_up']} "
            f"(outputs so far kept in {out_dir}; raise `max_reconnect_attempts` or `max_outage_s` to wait longer)"
        )
    return result


class _SourceOutputs:
    """The annotated video and JSON lines of one source of a batched run."""

    def __init__(self, out_dir: Path, stem: str, draw: bool) -> None:
        self.video_path = out_dir / f"{stem}.mp4" if draw else None
        self.video: VideoOutput | None = None
        self.jsonl = JsonlOutput(out_dir / f"{stem}.jsonl")
        self.frames = self.detections = 0

    def write(self, result, fps: float) -> None:
        if self.video is None and self.video_path is not None:
            self.video = VideoOutput(self.video_path, fps)  # at the first frame: the source is open
        record = {"frame": result.index, "timestamp_s": round(result.timestamp_s, 4), **result.detections.to_dict()}
        if not result.inferred:
            record["inferred"] = False
        self.jsonl.write(record)
        if self.video is not None:
            self.video.write(result.detections.draw(result.frame))
        self.frames += 1
        self.detections += len(result.detections)

    def close(self) -> None:
        """Finish both files (once: again is a no-op)."""
        video, self.video, self.video_path = self.video, None, None
        try:
            if video is not None:
                video.close()
        finally:
            self.jsonl.close()


def _detect_batched(det, sources: list, out_dir: Path, options: DetectOptions, used: OutputNames) -> list:
    """Every video or stream through one batched :class:`MultiStream`; one result per source."""
    ids = {str(i): source for i, source in enumerate(sources)}
    outputs = {
        sid: _SourceOutputs(out_dir, used.add(stream_stem(src), (".mp4", ".jsonl")), options.draw)
        for sid, src in ids.items()
    }
    stream = MultiStream(
        det,
        ids,
        every=options.every,
        max_reconnect_attempts=options.max_reconnect_attempts,
        max_outage_s=options.max_outage_s,
        infer=options.infer,
        end_markers=True,
    )
    try:
        with tqdm(desc=f"{len(ids)} sources", unit="frame", disable=not options.progress) as bar:
            for result in stream:
                if isinstance(result, SourceEnd):  # finished now, whatever the other sources do
                    outputs[result.source_id].close()
                    continue
                if options.max_frames and outputs[result.source_id].frames >= options.max_frames:
                    if result.source_id in stream.source_ids:
                        stream.remove(result.source_id)
                    continue
                outputs[result.source_id].write(result, stream.source_fps(result.source_id))
                bar.update(1)
    finally:
        stats = stream.close()
        for out in outputs.values():
            out.close()
    results = []
    for sid, source in ids.items():
        result = InputResult(str(source), "video", outputs[sid].frames, outputs[sid].detections, batched=True)
        result.inferred, result.infer_reasons = stats[sid]["inferred"], stats[sid]["infer_reasons"]
        results.append(_finish(result, stats[sid], out_dir))
    return results
