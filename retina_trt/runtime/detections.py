"""Detections of one image, in original-image pixels."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np


class Detection(NamedTuple):
    """One detection: ``box_xyxy`` (4 floats, pixels), ``score``, ``class_id``, ``class_name``."""

    box_xyxy: tuple[float, float, float, float]
    score: float
    class_id: int
    class_name: str


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one image, best score first.

    Attributes:
        boxes_xyxy (ndarray[N, 4] float32): xyxy, original-image pixels.
        scores (ndarray[N] float32): in (0, 1].
        class_ids (ndarray[N] int64): the class of each detection, an index into ``all_class_names``.
        all_class_names (tuple[str, ...]): every class name of the model (index = class id); the
            name of each detection's class is ``class_names``.
        tracker_ids (ndarray[N] int64 | None): the track of each detection, where a tracker
            (``retina_trt.analytics.tracking``) or ``from_supervision`` set them; else None.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    all_class_names: tuple[str, ...] = ()
    tracker_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(class_ids):
            raise ValueError(
                f"Detections needs as many boxes, scores and class_ids, got {len(boxes)}, "
                f"{len(scores)}, {len(class_ids)}"
            )
        object.__setattr__(self, "boxes_xyxy", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "class_ids", class_ids)
        object.__setattr__(self, "all_class_names", tuple(self.all_class_names))
        if self.tracker_ids is not None:
            tracker_ids = np.asarray(self.tracker_ids, dtype=np.int64).reshape(-1)
            if len(tracker_ids) != len(scores):
                raise ValueError(
                    f"Detections needs one tracker id per detection, got {len(tracker_ids)} for {len(scores)}"
                )
            object.__setattr__(self, "tracker_ids", tracker_ids)

    @classmethod
    def empty(cls, all_class_names: Sequence[str] = ()) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), tuple(all_class_names))

    @property
    def names(self) -> tuple[str, ...]:
        """Deprecated name of ``all_class_names`` (kept for one release)."""
        warnings.warn("Detections.names is now Detections.all_class_names", DeprecationWarning, stacklevel=2)
        return self.all_class_names

    @property
    def class_names(self) -> list[str]:
        """Name of each detection's class (``class_<id>`` where the model has no name)."""
        return [self._name(int(c)) for c in self.class_ids]

    def _name(self, class_id: int) -> str:
        names = self.all_class_names
        return names[class_id] if 0 <= class_id < len(names) else f"class_{class_id}"

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Detection]:
        for box, score, class_id in zip(self.boxes_xyxy, self.scores, self.class_ids):
            yield Detection(tuple(float(v) for v in box), float(score), int(class_id), self._name(int(class_id)))

    def __repr__(self) -> str:
        return f"Detections({len(self)} objects)"

    def filter(self, *, min_score: float | None = None, class_ids: Sequence[int] | None = None) -> Detections:
        """The detections with ``score >= min_score`` and (if given) a class in ``class_ids``."""
        keep = np.ones(len(self), dtype=bool)
        if min_score is not None:
            if (
                isinstance(min_score, bool)
                or not isinstance(min_score, (int, float, np.number))
                or not 0 <= min_score <= 1
            ):
                raise ValueError(f"min_score must be a number in [0, 1], got {min_score!r}")  # NaN fails too
            keep &= self.scores >= float(min_score)
        if class_ids is not None:
            keep &= np.isin(self.class_ids, np.asarray(list(class_ids), dtype=np.int64))
        return self._subset(keep)

    def _subset(self, keep: np.ndarray) -> Detections:
        ids = None if self.tracker_ids is None else self.tracker_ids[keep]
        return Detections(self.boxes_xyxy[keep], self.scores[keep], self.class_ids[keep], self.all_class_names, ids)

    def to_supervision(self):
        """These detections as ``supervision.Detections`` (xyxy, confidence, class_id, tracker_id,
        and ``data["class_name"]``), for supervision's annotators, zones and lines and for the
        ``trackers`` library. Needs ``pip install supervision`` (the ``[analytics]`` extra)."""
        sv = _supervision()
        return sv.Detections(
            xyxy=self.boxes_xyxy.copy(),
            confidence=self.scores.copy(),
            class_id=self.class_ids.astype(int),
            tracker_id=None if self.tracker_ids is None else self.tracker_ids.astype(int),
            data={"class_name": np.array(self.class_names, dtype=str)},
        )

    @classmethod
    def from_supervision(cls, detections, all_class_names: Sequence[str] = ()) -> Detections:
        """``supervision.Detections`` -> Detections (missing confidences are 1, missing classes 0;
        ``tracker_id`` is kept as ``tracker_ids``)."""
        n = len(detections.xyxy)
        scores = np.ones(n, np.float32) if detections.confidence is None else detections.confidence
        class_ids = np.zeros(n, np.int64) if detections.class_id is None else detections.class_id
        return cls(detections.xyxy, scores, class_ids, tuple(all_class_names), detections.tracker_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``boxes_xyxy``, ``scores``, ``class_ids``, ``class_names``."""
        return {
            "boxes_xyxy": self.boxes_xyxy.round(3).tolist(),
            "scores": self.scores.round(6).tolist(),
            "class_ids": self.class_ids.tolist(),
            "class_names": self.class_names,
        }

    def to_coco(self, image_id: int, category_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """COCO result entries: ``bbox`` is [x, y, width, height] in pixels.

        Args:
            image_id: the COCO image id.
            category_ids: COCO category id of each class id (default: class id itself).
        """
        out = []
        for box, score, class_id in zip(self.boxes_xyxy, self.scores, self.class_ids):
            x1, y1, x2, y2 = (float(v) for v in box)
            category = int(category_ids[class_id]) if category_ids is not None else int(class_id)
            out.append(
                {
                    "image_id": int(image_id),
                    "category_id": category,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
        return out

    def draw(self, image: np.ndarray, *, thickness: int = 2) -> np.ndarray:
        """A copy of ``image`` (HxWx3 uint8 BGR) with boxes, class names and scores drawn (and
        ``#track`` where tracker ids are set)."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise TypeError(
                f"draw() needs an HxWx3 uint8 BGR image (as OpenCV decodes it), got {got}; "
                "convert it first, e.g. np.clip(image, 0, 255).astype(np.uint8)"
            )
        if isinstance(thickness, bool) or not isinstance(thickness, (int, np.integer)) or not 1 <= thickness <= 64:
            raise ValueError(f"thickness must be an integer number of pixels in [1, 64], got {thickness!r}")
        canvas = np.ascontiguousarray(image).copy()
        height, width = canvas.shape[:2]
        scale = float(np.clip(min(height, width) / 800.0, 0.35, 0.6))  # readable on 256 px and 1080p alike
        dets = list(self)
        for det in dets:  # every box first, so no box is drawn over a label
            x1, y1, x2, y2 = (int(round(v)) for v in det.box_xyxy)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), _color(det.class_id), thickness)
        labels = [f"{det.class_name} {det.score:.2f}" for det in dets]
        if self.tracker_ids is not None:
            labels = [f"#{int(t)} {label}" for t, label in zip(self.tracker_ids, labels)]
        sizes = []
        for label in labels:
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            sizes.append((tw + 2, th + base + 2))
        for det, label, (x, y), (lw, lh) in zip(
            dets, labels, place_labels([d.box_xyxy for d in dets], sizes, (height, width)), sizes
        ):
            cv2.rectangle(canvas, (x, y), (x + lw, y + lh), _color(det.class_id), -1)
            cv2.putText(
                canvas, label, (x + 1, y + lh - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
            )
        return canvas


def _supervision():
    try:
        import supervision
    except ImportError as err:
        raise ImportError("supervision interop needs supervision: pip install 'retina-trt[analytics]'") from err
    return supervision


def place_labels(
    boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[int, int]], image_shape: tuple[int, int]
) -> list[tuple[int, int]]:
    """Top-left corners for the labels of ``boxes`` (best score first), each of ``sizes`` (w, h):
    above the box, inside its top, below it, or inside its bottom, the first spot inside the image
    that covers no label already placed; if none is free, above the box (clamped to the image)."""
    height, width = image_shape
    placed: list[tuple[int, int, int, int]] = []
    corners = []
    for box, (lw, lh) in zip(boxes, sizes):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x = int(np.clip(x1, 0, max(0, width - lw)))
        candidates = [
            (x, y1 - lh),
            (x, y1),
            (x, y2),
            (x, y2 - lh),
            (int(np.clip(x2 - lw, 0, max(0, width - lw))), y1 - lh),
        ]
        inside = [(cx, cy) for cx, cy in candidates if 0 <= cy and cy + lh <= height]
        free = [
            (cx, cy)
            for cx, cy in inside
            if not any(cx < px2 and px1 < cx + lw and cy < py2 and py1 < cy + lh for px1, py1, px2, py2 in placed)
        ]
        cx, cy = (free or inside or [(x, int(np.clip(y1 - lh, 0, max(0, height - lh))))])[0]
        placed.append((cx, cy, cx + lw, cy + lh))
        corners.append((cx, cy))
    return corners


def _color(class_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(class_id * 7919 + 17)
    b, g, r = (int(v) for v in rng.integers(40, 220, size=3))
    return b, g, r
