"""``retina-trt detect`` on several videos or streams at once: one ``MultiStream`` batches their
frames into one model call, and each source gets its own annotated video and JSON lines, written
under temporary names and renamed when complete (as the single-source route does).

The CLI passes :func:`detect_sources` to ``runtime/cli_detect.run_detect``, so the runtime layer
never imports this one.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from retina_trt.errors import VideoError
from retina_trt.runtime.cli_detect import JsonlOutput, _stream_stem
from retina_trt.runtime.stream import VideoOutput
from retina_trt.streams.multistream import MultiStream


class _SourceOutputs:
    """The annotated video and JSON lines of one source."""

    def __init__(self, out_dir: Path, stem: str, draw: bool) -> None:
        self.video_path = out_dir / f"{stem}.mp4" if draw else None
        self.video: VideoOutput | None = None
        self.jsonl = JsonlOutput(out_dir / f"{stem}.jsonl")
        self.frames = self.detections = 0

    def write(self, result, fps: float) -> None:
        if self.video is None and self.video_path is not None:
            self.video = VideoOutput(self.video_path, fps)  # at the first frame: the source is open
        self.jsonl.write(
            {"frame": result.index, "timestamp_s": round(result.timestamp_s, 4), **result.detections.to_dict()}
        )
        if self.video is not None:
            self.video.write(result.detections.draw(result.frame))
        self.frames += 1
        self.detections += len(result.detections)

    def close(self) -> None:
        try:
            if self.video is not None:
                self.video.close()
        finally:
            self.jsonl.close()


def _stream_options(args) -> dict:
    return {
        "every": args.every,
        "max_reconnect_attempts": getattr(args, "max_reconnect_attempts", 10),
        "max_outage_s": getattr(args, "max_outage", 120.0),
    }


def detect_sources(det, sources: list, out_dir: Path, args, used) -> int:
    """Detect on every video/stream of ``sources`` through one batched stream; prints one line
    per source and returns how many failed (no frame decoded, or gave up reconnecting)."""
    ids = {str(i): source for i, source in enumerate(sources)}
    outputs = {
        sid: _SourceOutputs(out_dir, used.add(_stream_stem(src), (".mp4", ".jsonl")), not args.no_draw)
        for sid, src in ids.items()
    }
    stream = MultiStream(det, ids, **_stream_options(args))
    try:
        with tqdm(desc=f"{len(ids)} sources", unit="frame", disable=None) as bar:
            for result in stream:
                if args.max_frames and outputs[result.source_id].frames >= args.max_frames:
                    if result.source_id in stream.source_ids:
                        stream.remove(result.source_id)
                    continue
                outputs[result.source_id].write(result, stream.source_fps(result.source_id))
                bar.update(1)
    finally:
        stats = stream.close()
        for out in outputs.values():
            out.close()
    return sum(_report(ids[sid], outputs[sid], stats[sid]) for sid in ids)


def _report(source, out: _SourceOutputs, stats: dict) -> int:
    """Print one line for a source; 1 when it failed."""
    if out.frames == 0:
        print(f"skipped {source}: {VideoError(f'no frame of {source} could be decoded')}", file=sys.stderr)
        return 1
    print(
        f"{source}: {out.frames} frames at {stats['fps']:.1f} FPS, {out.detections} detections, "
        f"{stats['decode_errors']} unreadable frames skipped, {stats['dropped']} dropped, "
        f"{stats['reconnects']} reconnects (batched with the other sources)"
    )
    if stats["gave_up"]:
        print(f"skipped {source}: gave up reconnecting after {out.frames} frames: {stats['gave_up']}", file=sys.stderr)
        return 1
    return 0
