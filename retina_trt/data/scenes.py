"""Scripted videos with known tracks: the ground truth that tracking and counting are measured on.

A :class:`Scene` is a list of :class:`Actor` (one synthetic shape each, moving along straight
segments between keyframes) drawn in order over a plain or textured background; later actors
cover earlier ones. :func:`render_scene` writes the video (MJPG AVI) and returns, per frame, the
visible box of every actor that is at least ``MIN_VISIBLE_FRACTION`` visible: the same rule the
detection dataset uses, so the ground truth is what a detector trained on it should find.

:func:`write_scene` adds ``gt.txt`` in MOTChallenge format (``frame,id,x,y,w,h,1,class,visibility``,
frames from 1) and ``scene.json`` with the counting line, the zone and the counts the script
expects. :data:`SCENES` holds the scripted scenes of the tests and the tracker benchmark.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from retina_trt.data.synthetic import (
    CLASS_NAMES,
    MIN_VISIBLE_FRACTION,
    _background,
    _shape_mask,
    _texture,
    plain_background,
)
from retina_trt.utils import atomic_path

Point = tuple[float, float]


@dataclass(frozen=True, kw_only=True)
class Actor:
    """One object of a scene.

    Attributes:
        track_id: its ground-truth id (unique in the scene, >= 1).
        class_id: index into ``CLASS_NAMES``.
        size: (width, height) in pixels.
        path: keyframes ``(frame, cx, cy)`` of the box centre, frames ascending; the actor exists
            from the first keyframe to the last and moves linearly between them (it may stand
            still, or be partly or wholly outside the frame).
    """

    track_id: int
    class_id: int
    size: tuple[int, int]
    path: tuple[tuple[int, float, float], ...]

    def __post_init__(self) -> None:
        if self.track_id < 1 or not 0 <= self.class_id < len(CLASS_NAMES):
            raise ValueError(f"actor needs track_id >= 1 and a class in 0..{len(CLASS_NAMES) - 1}, got {self}")
        frames = [k[0] for k in self.path]
        if len(frames) < 2 or frames != sorted(set(frames)):
            raise ValueError(f"actor {self.track_id}: path needs >= 2 keyframes in ascending frame order")

    def box_at(self, frame: int) -> np.ndarray | None:
        """The full (unclipped) box at ``frame``: float64[4] xyxy pixels, or None outside its life."""
        frames = np.array([k[0] for k in self.path], dtype=np.float64)
        if not frames[0] <= frame <= frames[-1]:
            return None
        cx = np.interp(frame, frames, [k[1] for k in self.path])
        cy = np.interp(frame, frames, [k[2] for k in self.path])
        w, h = self.size
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


@dataclass(frozen=True, kw_only=True)
class Scene:
    """A scripted video.

    Attributes:
        line: the counting line (two pixel points); ``"in"`` is the crossing to its left side
            (see ``retina_trt.analytics.counting.LineCounter``).
        zone: the zone polygon (pixel vertices).
        expected_line: the crossings the script makes, ``{"in": {class: n}, "out": {class: n}}``.
        expected_zone: entries into the zone, ``{"enter": {class: n}, "leave": {class: n}}``.
        noise_sigma: grey levels of Gaussian sensor noise added to every pixel of every frame.
        drift: grey levels the whole picture has brightened by at the last frame (a slow,
            linear lighting drift from 0 at the first).
    """

    name: str
    height: int
    width: int
    num_frames: int
    actors: tuple[Actor, ...]
    line: tuple[Point, Point]
    zone: tuple[Point, ...]
    expected_line: dict = field(default_factory=dict)
    expected_zone: dict = field(default_factory=dict)
    background: str = "plain"
    fps: float = 15.0
    seed: int = 0
    noise_sigma: float = 0.0
    drift: float = 0.0

    def __post_init__(self) -> None:
        if self.background not in ("plain", "textured"):
            raise ValueError(f"background must be 'plain' or 'textured', got {self.background!r}")
        ids = [a.track_id for a in self.actors]
        if len(ids) != len(set(ids)):
            raise ValueError(f"scene {self.name}: actor track ids must be unique, got {ids}")


@dataclass(frozen=True)
class GroundTruthBox:
    """One visible actor in one frame: box xyxy in pixels (the visible extent)."""

    frame: int
    track_id: int
    class_id: int
    box: tuple[float, float, float, float]
    visibility: float


def _actor_sprite(actor: Actor, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask bool[h, w], texture uint8[h, w, 3]) of the actor, drawn once (same look every frame)."""
    w, h = actor.size
    side = max(w, h)
    rng = np.random.default_rng([seed, actor.track_id, 7])
    mask = cv2.resize(_shape_mask(actor.class_id, side), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    tex = cv2.resize(_texture(actor.class_id, side, rng), (w, h), interpolation=cv2.INTER_NEAREST)
    return mask, tex


def _scene_background(scene: Scene) -> np.ndarray:
    rng = np.random.default_rng([scene.seed, 1_000_003])
    if scene.background == "plain":
        return plain_background(rng, scene.height, scene.width)
    return _background(rng, scene.height, scene.width)


def _paste(image: np.ndarray, owner: np.ndarray, index: int, box: np.ndarray, sprite) -> int:
    """Draw one sprite with its top-left at the rounded box corner; returns its on-frame pixels."""
    mask, tex = sprite
    height, width = image.shape[:2]
    x0, y0 = int(round(box[0])), int(round(box[1]))
    h, w = mask.shape
    xs, ys = slice(max(0, x0), min(width, x0 + w)), slice(max(0, y0), min(height, y0 + h))
    if xs.start >= xs.stop or ys.start >= ys.stop:
        return 0
    sub = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
    visible = mask[sub]
    image[ys, xs][visible] = tex[sub][visible]
    owner[ys, xs][visible] = index
    return int(visible.sum())


def render_frame(scene: Scene, frame: int, background: np.ndarray, sprites: dict) -> tuple[np.ndarray, list]:
    """Frame ``frame`` (HxWx3 uint8 BGR) and its ground truth (list of :class:`GroundTruthBox`)."""
    image = background.copy()
    owner = np.full(image.shape[:2], -1, np.int32)
    drawn = []
    for index, actor in enumerate(scene.actors):
        box = actor.box_at(frame)
        if box is None:
            continue
        on_frame = _paste(image, owner, index, box, sprites[actor.track_id])
        drawn.append((index, actor, on_frame))
    truth = []
    for index, actor, on_frame in drawn:
        ys, xs = np.nonzero(owner == index)
        if on_frame == 0 or len(xs) < MIN_VISIBLE_FRACTION * on_frame or len(xs) < 16:
            continue
        x1, y1, x2, y2 = float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1
        truth.append(GroundTruthBox(frame, actor.track_id, actor.class_id, (x1, y1, x2, y2), len(xs) / on_frame))
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    if scene.noise_sigma or scene.drift:
        rng = np.random.default_rng([scene.seed, frame, 11])
        level = scene.drift * frame / max(1, scene.num_frames - 1)
        noisy = image.astype(np.float32) + level + rng.normal(0.0, scene.noise_sigma, image.shape)
        image = np.clip(noisy, 0, 255).astype(np.uint8)
    return image, truth


def render_scene(scene: Scene):
    """Yield (frame index, image, ground truth) for every frame of the scene."""
    background = _scene_background(scene)
    sprites = {a.track_id: _actor_sprite(a, scene.seed) for a in scene.actors}
    for frame in range(scene.num_frames):
        image, truth = render_frame(scene, frame, background, sprites)
        yield frame, image, truth


def mot_rows(truth: list[GroundTruthBox]) -> list[str]:
    """MOTChallenge ground-truth lines: frame (from 1), id, x, y, w, h, 1, 1, visibility.

    The class column is 1 for every object: MOTChallenge scores class 1 only (TrackEval and the
    trackers library drop or ignore the other classes), so every shape is scored; each track's
    shape class is in ``scene.json`` (``track_classes``)."""
    rows = []
    for t in truth:
        x1, y1, x2, y2 = t.box
        rows.append(f"{t.frame + 1},{t.track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,1,{t.visibility:.3f}")
    return rows


def read_ground_truth(folder: str | os.PathLike) -> tuple[list[list[tuple[int, tuple]]], dict[int, str]]:
    """A written scene's ground truth back: per frame ``(track id, (x1, y1, x2, y2))`` from
    ``gt/gt.txt`` (the rows of :func:`mot_rows`), and each track's class name from ``scene.json``."""
    folder = Path(folder)
    record = json.loads((folder / "scene.json").read_text())
    per_frame: list[list[tuple[int, tuple]]] = [[] for _ in range(record["num_frames"])]
    for row in (folder / "gt" / "gt.txt").read_text().split():
        frame, track_id, x, y, w, h = (float(v) for v in row.split(",")[:6])
        per_frame[int(frame) - 1].append((int(track_id), (x, y, x + w, y + h)))
    return per_frame, {int(k): v for k, v in record["track_classes"].items()}


def write_scene(scene: Scene, out_dir: str | os.PathLike) -> Path:
    """Write ``<out_dir>/<name>/{video.avi, gt/gt.txt, scene.json}``; returns that folder."""
    folder = Path(out_dir) / scene.name
    (folder / "gt").mkdir(parents=True, exist_ok=True)
    rows = []
    with atomic_path(folder / "video.avi") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), scene.fps, (scene.width, scene.height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write MJPG video to {folder / 'video.avi'}")
        try:
            for _, image, truth in render_scene(scene):
                writer.write(image)
                rows.extend(mot_rows(truth))
        finally:
            writer.release()
    with atomic_path(folder / "gt" / "gt.txt") as tmp:
        tmp.write_text("\n".join(rows) + "\n")
    record = {
        "name": scene.name,
        "height": scene.height,
        "width": scene.width,
        "num_frames": scene.num_frames,
        "fps": scene.fps,
        "background": scene.background,
        "line": scene.line,
        "zone": scene.zone,
        "expected_line": scene.expected_line,
        "expected_zone": scene.expected_zone,
        "class_names": list(CLASS_NAMES),
        "track_classes": {str(a.track_id): CLASS_NAMES[a.class_id] for a in scene.actors},
    }
    with atomic_path(folder / "scene.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return folder


# ---------------------------------------------------------------------------------------------
# The scripted scenes. Frames are 256 x 384 (h x w) at 15 fps; the counting point of a box is
# its bottom centre (DeepStream's rule). Each scene states the counts its script makes; the
# tests check them first against the ground truth itself, then end to end.

H, W = 256, 384


def _crossing_scene() -> Scene:
    """Plain background, a vertical line at x = 192 ("in" is right to left). A circle and a cross
    cross left to right, a square and a star right to left at different speeds (the cross passes
    in front of the star near the line); a triangle's box reaches over the line and turns back
    before its counting point crosses."""
    actors = (
        Actor(track_id=1, class_id=0, size=(44, 44), path=((0, 40, 60), (50, 300, 60), (70, 300, 30))),
        Actor(track_id=2, class_id=1, size=(40, 40), path=((5, 350, 200), (75, 40, 200))),
        Actor(track_id=3, class_id=2, size=(46, 42), path=((10, 60, 130), (40, 175, 130), (70, 60, 130))),
        Actor(track_id=4, class_id=3, size=(48, 48), path=((20, 330, 115), (89, 70, 135))),
        Actor(track_id=5, class_id=5, size=(42, 42), path=((35, 60, 150), (89, 330, 110))),
    )
    return Scene(
        name="crossing",
        height=H,
        width=W,
        num_frames=90,
        actors=actors,
        line=((192.0, 0.0), (192.0, 256.0)),
        zone=((230.0, 110.0), (330.0, 110.0), (330.0, 250.0), (230.0, 250.0)),
        expected_line={"in": {"square": 1, "star": 1}, "out": {"circle": 1, "cross": 1}},
        expected_zone={"enter": {"cross": 1, "square": 1, "star": 1}, "leave": {"square": 1, "star": 1}},
    )


def _edge_scene() -> Scene:
    """Plain background, a horizontal line 8 px above the bottom edge ("in" is downwards, out
    of the frame): supervision's #1838 case. A circle and a star leave downwards, a square comes
    up from below; a ring comes down until its box is 1 px above the line and turns back."""
    actors = (
        Actor(track_id=1, class_id=0, size=(40, 40), path=((0, 100, 150), (40, 100, 300))),
        Actor(track_id=2, class_id=1, size=(44, 44), path=((10, 250, 300), (60, 250, 120))),
        Actor(track_id=3, class_id=4, size=(40, 40), path=((0, 320, 140), (30, 320, 227), (60, 320, 140))),
        Actor(track_id=4, class_id=3, size=(46, 46), path=((35, 180, 60), (89, 160, 330))),
    )
    return Scene(
        name="edge",
        height=H,
        width=W,
        num_frames=90,
        actors=actors,
        seed=1,
        line=((0.0, 248.0), (384.0, 248.0)),
        zone=((20.0, 180.0), (200.0, 180.0), (200.0, 240.0), (20.0, 240.0)),
        expected_line={"in": {"circle": 1, "star": 1}, "out": {"square": 1}},
        expected_zone={"enter": {"circle": 1, "star": 1}, "leave": {"circle": 1, "star": 1}},
    )


def _occlusion_scene() -> Scene:
    """Textured background, a vertical line at x = 192. A star passes behind a standing square
    (less than 35% visible, so not in the ground truth, for 6 frames, while its counting point
    crosses the line); a circle and a triangle cross each other on the line in opposite
    directions, the triangle in front."""
    actors = (
        Actor(track_id=1, class_id=3, size=(50, 50), path=((0, 40, 100), (40, 360, 100), (50, 440, 100))),
        Actor(track_id=2, class_id=1, size=(56, 80), path=((0, 204, 105), (89, 204, 105))),
        Actor(track_id=3, class_id=0, size=(46, 46), path=((10, 350, 205), (80, 30, 205))),
        Actor(track_id=4, class_id=2, size=(48, 44), path=((10, 30, 200), (80, 350, 200))),
    )
    return Scene(
        name="occlusion",
        height=H,
        width=W,
        num_frames=90,
        actors=actors,
        background="textured",
        seed=2,
        line=((192.0, 0.0), (192.0, 256.0)),
        zone=((262.0, 40.0), (350.0, 40.0), (350.0, 250.0), (262.0, 250.0)),
        expected_line={"in": {"circle": 1}, "out": {"star": 1, "triangle": 1}},
        expected_zone={"enter": {"circle": 1, "star": 1, "triangle": 1}, "leave": {"circle": 1, "star": 1}},
    )


SCENES: tuple = (_crossing_scene(), _edge_scene(), _occlusion_scene())


# ---------------------------------------------------------------------------------------------
# Mostly quiet scenes (60 s at 15 fps) for adaptive inference: long stretches where nothing
# moves, with sensor noise, compression (MJPG) and a slow brightness drift that must not count as
# motion, and the events that must still be caught. Same frame, line and zone as "crossing".

QUIET_FRAMES = 900
LINE_X = ((192.0, 0.0), (192.0, 256.0))  # "in" is right to left
RIGHT_ZONE = ((230.0, 110.0), (330.0, 110.0), (330.0, 250.0), (230.0, 250.0))


def _quiet(name: str, seed: int, actors: tuple[Actor, ...], line: dict, zone: dict, **look) -> Scene:
    return Scene(
        name=name,
        height=H,
        width=W,
        num_frames=QUIET_FRAMES,
        actors=actors,
        seed=seed,
        line=LINE_X,
        zone=RIGHT_ZONE,
        expected_line=line,
        expected_zone=zone,
        **{"noise_sigma": 3.0, **look},
    )


def _quiet_scenes() -> tuple[Scene, ...]:
    """Six scenes, each about 60 s: nothing but noise for most of it, and one kind of event."""
    empty = _quiet(  # 50 s of sensor noise around one short burst: a circle above the zone, a square through it
        "quiet_empty",
        10,
        (
            Actor(track_id=1, class_id=0, size=(44, 44), path=((400, 40, 60), (440, 340, 60))),
            Actor(track_id=2, class_id=1, size=(40, 40), path=((410, 350, 200), (450, 30, 200))),
        ),
        {"in": {"square": 1}, "out": {"circle": 1}},
        {"enter": {"square": 1}, "leave": {"square": 1}},
    )
    drift = _quiet(  # the picture brightens by 50 grey levels over the minute; one star crosses
        "quiet_drift",
        11,
        (Actor(track_id=1, class_id=3, size=(46, 46), path=((600, 30, 200), (640, 350, 200))),),
        {"out": {"star": 1}},
        {"enter": {"star": 1}, "leave": {"star": 1}},
        background="textured",
        noise_sigma=2.0,
        drift=50.0,
    )
    parked = _quiet(  # a square parked in the zone all along; a circle crosses above it
        "quiet_parked",
        12,
        (
            Actor(track_id=1, class_id=1, size=(50, 50), path=((0, 280, 180), (QUIET_FRAMES - 1, 280, 180))),
            Actor(track_id=2, class_id=0, size=(44, 44), path=((300, 340, 50), (340, 40, 50))),
        ),
        {"in": {"circle": 1}},
        {"enter": {"square": 1}},
    )
    bursts = _quiet(  # three short bursts of traffic, over the line and through the zone
        "quiet_bursts",
        13,
        (
            Actor(track_id=1, class_id=2, size=(46, 42), path=((150, 40, 60), (190, 340, 60))),
            Actor(track_id=2, class_id=5, size=(42, 42), path=((450, 350, 200), (490, 40, 200))),
            Actor(track_id=3, class_id=4, size=(40, 40), path=((750, 40, 140), (790, 350, 140))),
        ),
        {"in": {"cross": 1}, "out": {"triangle": 1, "ring": 1}},
        {"enter": {"cross": 1, "ring": 1}, "leave": {"cross": 1, "ring": 1}},
    )
    appears = _quiet(  # a circle appears while all is quiet, crosses into the zone and stops there
        "quiet_appear_stop",
        14,
        (Actor(track_id=1, class_id=0, size=(44, 44), path=((300, 120, 200), (330, 280, 200), (899, 280, 200))),),
        {"out": {"circle": 1}},
        {"enter": {"circle": 1}},
    )
    walker = _quiet(  # a star walks slowly across the whole minute, through the line and the zone
        "quiet_slow_walker",
        15,
        (Actor(track_id=1, class_id=3, size=(46, 46), path=((0, 30, 200), (QUIET_FRAMES - 1, 350, 200))),),
        {"out": {"star": 1}},
        {"enter": {"star": 1}, "leave": {"star": 1}},
    )
    return empty, drift, parked, bursts, appears, walker


QUIET_SCENES: tuple = _quiet_scenes()
