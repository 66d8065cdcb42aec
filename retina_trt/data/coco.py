"""Reading COCO-format detection datasets (``instances_*.json`` + an image folder)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.errors import RetinaTrtError
from retina_trt.image import read_image


class DatasetError(RetinaTrtError):
    """A dataset's annotation file or image folder is missing or malformed."""


@dataclass(frozen=True)
class CocoSample:
    """One image and its targets: ``boxes`` (ndarray[G, 4] float32, xyxy pixels), ``labels``
    (ndarray[G] int64, contiguous class indices), ``image_id`` (the COCO id)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int


@dataclass(frozen=True)
class CocoDataset:
    """A COCO detection dataset. Category ids map to contiguous class indices in id order.

    Use :meth:`load`; ``images`` are the COCO image records, ``category_ids[i]`` is the COCO id
    of class ``i`` and ``class_names[i]`` its name.
    """

    annotation_path: Path
    image_dir: Path
    images: list[dict[str, Any]]
    category_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    _targets: dict[int, tuple[np.ndarray, np.ndarray]] = field(repr=False)

    @classmethod
    def load(cls, annotations: str | os.PathLike, images: str | os.PathLike) -> CocoDataset:
        annotation_path, image_dir = Path(annotations), Path(images)
        if not annotation_path.is_file():
            raise DatasetError(f"annotation file not found: {annotation_path}")
        if not image_dir.is_dir():
            raise DatasetError(f"image folder not found: {image_dir}")
        try:
            data = json.loads(annotation_path.read_text())
            records = list(data["images"])
            categories = sorted(data["categories"], key=lambda c: int(c["id"]))
            anns = list(data.get("annotations", []))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise DatasetError(
                f"{annotation_path} is not a COCO detection annotation file ({type(err).__name__}: {err}); "
                "it needs 'images', 'categories' and 'annotations'"
            ) from err
        if not categories:
            raise DatasetError(f"{annotation_path} has no categories")
        category_ids = tuple(int(c["id"]) for c in categories)
        index_of = {cid: i for i, cid in enumerate(category_ids)}
        per_image: dict[int, list] = {int(r["id"]): [] for r in records}
        for ann in anns:
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w <= 1 or h <= 1 or int(ann["category_id"]) not in index_of:
                continue
            per_image.setdefault(int(ann["image_id"]), []).append(
                (x, y, x + w, y + h, index_of[int(ann["category_id"])])
            )
        targets = {}
        for image_id, items in per_image.items():
            arr = np.asarray(items, dtype=np.float64).reshape(-1, 5)
            targets[image_id] = (arr[:, :4].astype(np.float32), arr[:, 4].astype(np.int64))
        return cls(
            annotation_path=annotation_path,
            image_dir=image_dir,
            images=records,
            category_ids=category_ids,
            class_names=tuple(str(c["name"]) for c in categories),
            _targets=targets,
        )

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.images[index]["file_name"]

    def targets(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The ground truth of image ``index`` without reading the image: boxes [G, 4] float32
        xyxy, labels [G] int64 (contiguous class indices); copies."""
        boxes, labels = self._targets.get(
            int(self.images[index]["id"]), (np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
        )
        return boxes.copy(), labels.copy()

    def __getitem__(self, index: int) -> CocoSample:
        record = self.images[index]
        boxes, labels = self.targets(index)
        return CocoSample(read_image(self.image_path(index)), boxes, labels, int(record["id"]))
