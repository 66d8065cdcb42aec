"""A deterministic synthetic detection dataset in COCO format.

Six object classes, each with its own shape and surface texture (colours are random, so the
shape and texture are what identifies a class): circle (solid), square (stripes), triangle
(checker), star (dots), ring (outline), cross (gradient). Objects range from ``min_object`` px
to most of the image, land on textured, cluttered backgrounds (blurred noise, lines and
distractor blobs), occlude each other (COCO boxes are the visible extent; objects less than
35 % visible are dropped), number 0..30 per image, and have uneven class frequencies.

Same ``seed``, same bytes: each image is drawn from its own ``numpy`` generator seeded with
(seed, index), encoded with OpenCV's JPEG encoder at a fixed quality, and the JSON is written
with sorted keys.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from retina_trt.utils import atomic_path

logger = logging.getLogger(__name__)

CLASS_NAMES = ("circle", "square", "triangle", "star", "ring", "cross")
# Uneven class frequencies (most to least common).
CLASS_FREQUENCIES = (0.30, 0.22, 0.17, 0.13, 0.10, 0.08)
MIN_VISIBLE_FRACTION = 0.35
JPEG_QUALITY = 92


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Generator settings.

    Attributes:
        height, width: image size range (each image draws its size uniformly from it).
        max_objects: objects per image are drawn from 0..max_objects (skewed low).
        min_object: smallest object side in pixels; the largest is 0.9 x the shorter side.
        plain_fraction: share of images drawn on a plain background (one flat colour, a gentle
            gradient and light noise, no clutter) instead of the textured one: the first thing a
            user draws, and hard negatives for the model (a fifth of them hold no object).
    """

    min_height: int = 256
    max_height: int = 320
    min_width: int = 256
    max_width: int = 384
    max_objects: int = 30
    min_object: int = 10
    plain_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 32 <= self.min_height <= self.max_height or not 32 <= self.min_width <= self.max_width:
            raise ValueError(f"image size ranges must be >= 32 and ordered, got {self}")
        if not 0 <= self.max_objects <= 200:
            raise ValueError(f"max_objects must be in 0..200, got {self.max_objects}")
        if not 4 <= self.min_object < min(self.min_height, self.min_width) // 2:
            raise ValueError(f"min_object must be >= 4 and well below the image size, got {self.min_object}")
        if not 0.0 <= self.plain_fraction <= 1.0:
            raise ValueError(f"plain_fraction must be in [0, 1], got {self.plain_fraction}")


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 12, (height, width, 3))
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 12))):  # clutter: lines
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(image, p1, p2, _color(rng), int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(int(rng.integers(2, 8))):  # clutter: irregular blobs that are no class
        center = np.array([rng.integers(0, width), rng.integers(0, height)])
        radius = rng.uniform(4, min(height, width) / 8)
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
        radii = radius * rng.uniform(0.4, 1.0, len(angles))
        pts = center + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)
        cv2.fillPoly(image, [pts.astype(np.int32)], _color(rng), cv2.LINE_AA)
    return image


def plain_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A flat colour with a gentle linear gradient (up to +-24 levels) and light noise (sigma 0-6)."""
    base = rng.integers(24, 232, 3).astype(np.float32)
    slope = rng.uniform(-24, 24, 3).astype(np.float32)
    t = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :, None]
    if rng.random() < 0.5:
        t = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None, None]
    image = base + slope * t + rng.normal(0, rng.uniform(0, 6), (height, width, 3)).astype(np.float32)
    return np.clip(np.broadcast_to(image, (height, width, 3)), 0, 255).astype(np.uint8)


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _contrasting_colors(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    a = rng.integers(0, 256, 3)
    b = (a + rng.integers(96, 160, 3)) % 256
    return tuple(int(v) for v in a), tuple(int(v) for v in b)


def _polygon_mask(size: int, points: np.ndarray) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1, cv2.LINE_8)
    return mask


def _star_points(size: int) -> np.ndarray:
    c = (size - 1) / 2
    angles = np.arange(10) * np.pi / 5 - np.pi / 2
    radii = np.where(np.arange(10) % 2 == 0, c, c * 0.45)
    return np.stack([c + radii * np.cos(angles), c + radii * np.sin(angles)], 1)


def _shape_mask(class_id: int, size: int) -> np.ndarray:
    """Binary mask (size x size) of a class's shape."""
    c = (size - 1) / 2
    if class_id == 0:  # circle
        mask = np.zeros((size, size), np.uint8)
        cv2.circle(mask, (int(round(c)), int(round(c))), int(round(c)), 1, -1)
        return mask
    if class_id == 1:  # square
        return np.ones((size, size), np.uint8)
    if class_id == 2:  # triangle
        return _polygon_mask(size, np.array([[c, 0], [size - 1, size - 1], [0, size - 1]]))
    if class_id == 3:  # star
        return _polygon_mask(size, _star_points(size))
    if class_id == 4:  # ring
        mask = np.zeros((size, size), np.uint8)
        cv2.circle(mask, (int(round(c)), int(round(c))), int(round(c)), 1, -1)
        cv2.circle(mask, (int(round(c)), int(round(c))), int(round(c * 0.55)), 0, -1)
        return mask
    bar = max(1, int(round(size * 0.34)))  # cross
    lo = (size - bar) // 2
    mask = np.zeros((size, size), np.uint8)
    mask[lo : lo + bar, :] = 1
    mask[:, lo : lo + bar] = 1
    return mask


def _texture(class_id: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The class's surface texture (size x size x 3 uint8) in random contrasting colours."""
    a, b = _contrasting_colors(rng)
    tex = np.empty((size, size, 3), np.uint8)
    tex[:] = a
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(2, size // 6)
    if class_id == 1:  # stripes
        tex[(xx // max(1, period // 2)) % 2 == 1] = b
    elif class_id == 2:  # checker
        tex[((xx // period) + (yy // period)) % 2 == 1] = b
    elif class_id == 3:  # dots
        tex[((xx % period) - period // 2) ** 2 + ((yy % period) - period // 2) ** 2 <= (period // 3) ** 2] = b
    elif class_id == 5:  # gradient
        t = (xx / max(1, size - 1))[..., None]
        tex[:] = (np.array(a) * (1 - t) + np.array(b) * t).astype(np.uint8)
    return tex


def _draw_objects(
    rng: np.random.Generator, image: np.ndarray, config: SyntheticConfig
) -> list[tuple[int, list[float], int]]:
    """Paste objects; returns (class_id, [x, y, w, h] of the visible part, visible area)."""
    height, width = image.shape[:2]
    owner = np.full((height, width), -1, np.int32)  # which object each pixel shows
    full_area, classes = [], []
    num_objects = int(min(config.max_objects, math.floor(rng.exponential(8.0))))
    max_side = 0.9 * min(height, width)
    for index in range(num_objects):
        class_id = int(rng.choice(len(CLASS_NAMES), p=CLASS_FREQUENCIES))
        size = int(round(math.exp(rng.uniform(math.log(config.min_object), math.log(max_side)))))
        aspect = rng.uniform(0.7, 1.4)
        w = max(config.min_object, min(width, int(round(size * math.sqrt(aspect)))))
        h = max(config.min_object, min(height, int(round(size / math.sqrt(aspect)))))
        side = max(w, h)
        mask = cv2.resize(_shape_mask(class_id, side), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        tex = cv2.resize(_texture(class_id, side, rng), (w, h), interpolation=cv2.INTER_NEAREST)
        x0 = int(rng.integers(-w // 4, width - 3 * w // 4 + 1))
        y0 = int(rng.integers(-h // 4, height - 3 * h // 4 + 1))
        xs, ys = slice(max(0, x0), min(width, x0 + w)), slice(max(0, y0), min(height, y0 + h))
        sub = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
        visible = mask[sub]
        image[ys, xs][visible] = tex[sub][visible]
        owner[ys, xs][visible] = index
        full_area.append(int(visible.sum()))  # truncation by the border is not occlusion
        classes.append(class_id)
    annotations = []
    for index, class_id in enumerate(classes):
        ys, xs = np.nonzero(owner == index)
        if full_area[index] == 0 or len(xs) < MIN_VISIBLE_FRACTION * full_area[index]:
            continue
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        if min(x2 - x1, y2 - y1) < 4:
            continue
        annotations.append((class_id, [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], int(len(xs))))
    return annotations


def generate_image(seed: int, index: int, config: SyntheticConfig) -> tuple[np.ndarray, list]:
    """Image ``index`` of the dataset ``seed``: (HxWx3 uint8 BGR, annotations)."""
    rng = np.random.default_rng([seed, index])
    height = int(rng.integers(config.min_height, config.max_height + 1))
    width = int(rng.integers(config.min_width, config.max_width + 1))
    if config.plain_fraction and rng.random() < config.plain_fraction:
        image = plain_background(rng, height, width)
        if rng.random() < 0.2:  # a plain frame with nothing on it
            return cv2.GaussianBlur(image, (3, 3), 0.6), []
    else:
        image = _background(rng, height, width)
    annotations = _draw_objects(rng, image, config)
    return cv2.GaussianBlur(image, (3, 3), 0.6), annotations


def generate_dataset(
    out_dir: str | os.PathLike,
    *,
    num_images: int,
    seed: int = 0,
    split: str = "train",
    config: SyntheticConfig | None = None,
    progress: Callable | None = None,
) -> Path:
    """Write ``out_dir/<split>/*.jpg`` and ``out_dir/instances_<split>.json`` (COCO format).

    Returns:
        The path of the annotation file.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if not split.replace("_", "").isalnum():
        raise ValueError(f"split must be a simple name such as 'train' or 'val', got {split!r}")
    config = config or SyntheticConfig()
    out_dir = Path(out_dir)
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    iterator = range(num_images)
    bar = tqdm(iterator, desc=f"synthetic {split}", unit="img", disable=None) if progress is None else iterator
    for index in bar:
        image, objects = generate_image(seed, index, config)
        name = f"{split}_{index:06d}.jpg"
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {name}")
        with atomic_path(image_dir / name) as tmp:
            tmp.write_bytes(data.tobytes())
        image_id = index + 1
        images.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
        for class_id, bbox, area in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": class_id + 1,
                    "bbox": bbox,
                    "area": float(area),
                    "iscrowd": 0,
                }
            )
        if progress is not None:
            progress(index + 1, num_images)
    coco = {
        "info": {"description": f"retina_trt synthetic shapes, seed {seed}", "version": "1"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)],
    }
    ann_path = out_dir / f"instances_{split}.json"
    with atomic_path(ann_path) as tmp:
        tmp.write_text(json.dumps(coco, sort_keys=True))
    logger.info("wrote %d images with %d objects to %s", len(images), len(annotations), out_dir)
    return ann_path


def write_video(
    path: str | os.PathLike,
    *,
    num_frames: int = 60,
    seed: int = 0,
    frame_size: tuple[int, int] = (256, 320),
    step: int = 6,
    fps: float = 15.0,
) -> Path:
    """A synthetic video (MJPG AVI): a camera panning over one wide synthetic scene.

    Args:
        frame_size: (height, width) of the frames.
        step: pixels the view moves per frame.
    """
    height, width = frame_size
    scene_width = width + step * max(0, num_frames - 1)
    config = SyntheticConfig(
        min_height=height, max_height=height, min_width=scene_width, max_width=scene_width, max_objects=60
    )
    scene, _ = generate_image(seed, 0, config)
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write MJPG video to {path}")
        try:
            for index in range(num_frames):
                writer.write(np.ascontiguousarray(scene[:, index * step : index * step + width]))
        finally:
            writer.release()
    return path
