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
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    all_class_names: tuple[str, ...] = ()

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
            yield Detection(
                tuple(float(v) for v in box), float(score), int(class_id), self._name(int(class_id))
            )

    def __repr__(self) -> str:
        return f"Detections({len(self)} objects)"

    def filter(self, *, min_score: float | None = None, class_ids: Sequence[int] | None = None) -> Detections:
        """The detections with ``score >= min_score`` and (if given) a class in ``class_ids``."""
        keep = np.ones(len(self), dtype=bool)
        if min_score is not None:
            keep &= self.scores >= float(min_score)
        if class_ids is not None:
            keep &= np.isin(self.class_ids, np.asarray(list(class_ids), dtype=np.int64))
        return Detections(self.boxes_xyxy[keep], self.scores[keep], self.class_ids[keep], self.all_class_names)

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
        """A copy of ``image`` (HxWx3 uint8 BGR) with boxes, class names and scores drawn."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise TypeError(f"draw() needs an HxWx3 uint8 BGR image (as OpenCV decodes it), got {got}; "
                            "convert it first, e.g. np.clip(image, 0, 255).astype(np.uint8)")  # fmt: skip
        canvas = np.ascontiguousarray(image).copy()
        for det in self:
            color = _color(det.class_id)
            x1, y1, x2, y2 = (int(round(v)) for v in det.box_xyxy)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
            label = f"{det.class_name} {det.score:.2f}"
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            top = max(0, y1 - th - base - 2)
            cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
            cv2.putText(canvas, label, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        return canvas


def _color(class_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(class_id * 7919 + 17)
    b, g, r = (int(v) for v in rng.integers(40, 220, size=3))
    return b, g, r
