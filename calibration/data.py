"""Calibration data: images from a folder, a COCO-format dataset or the synthetic generator.

Every image goes through the runtime's own preprocessing (``retina_trt.image``),
so calibration sees exactly the tensors inference sees: uint8 BGR NHWC ``images`` padded to
the model's input size, and ``image_sizes`` (h, w) of each valid region.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retina_trt.errors import ImageError, RetinaTrtError
from retina_trt.image import preprocess_batch, read_image
from retina_trt.spec import ModelSpec

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SYNTHETIC = "synthetic"
DEFAULT_CALIB_IMAGES = 512
# The synthetic calibration set is the training distribution's generator with its own seed
# offset, so it never shares images with the held-out evaluation split (seed 1).
SYNTHETIC_SEED_OFFSET = 1000


class CalibrationDataError(RetinaTrtError):
    """The calibration source cannot be read or holds no usable image."""


@dataclass(frozen=True)
class CalibrationData:
    """Preprocessed calibration images, in batches.

    Attributes:
        images (ndarray[N, H, W, 3] uint8): BGR, padded to the model's input size.
        image_sizes (ndarray[N, 2] int32): (h, w) of each image's valid region.
        source: where the images came from (for logs and the cache record).
        skipped: images that could not be decoded (logged and left out).
        input_names: the model's inputs the feeds hold (a single-input DeepStream-style export
            has no ``image_sizes``).
        float_images: feed the pixels as float32 (exports with ``input_dtype="float32"``).
    """

    images: np.ndarray
    image_sizes: np.ndarray
    source: str
    skipped: int = 0
    input_names: tuple[str, ...] = ("images", "image_sizes")
    float_images: bool = False

    def __len__(self) -> int:
        return len(self.images)

    def sha256(self) -> str:
        """Hash of the exact tensors calibration sees (the calibration cache's data key)."""
        digest = hashlib.sha256()
        digest.update(json.dumps([list(self.images.shape), list(self.image_sizes.shape)]).encode())
        digest.update(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.image_sizes).tobytes())
        return digest.hexdigest()

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of ``batch_size`` images (the last may be smaller) for ONNX Runtime."""
        for start in range(0, len(self), batch_size):
            yield self._feed(slice(start, start + batch_size))

    def feeds(self) -> dict[str, np.ndarray]:
        """All images as one feed per input name (Model Optimizer batches them itself)."""
        return self._feed(slice(None))

    def _feed(self, rows: slice) -> dict[str, np.ndarray]:
        images = self.images[rows]
        feed = {
            "images": images.astype(np.float32) if self.float_images else images,
            "image_sizes": self.image_sizes[rows],
        }
        return {name: feed[name] for name in self.input_names}


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _coco_image_files(annotations: Path) -> list[Path]:
    """Image paths of a COCO ``instances_*.json``: file names relative to the JSON's folder,
    to ``<folder>/<split>/`` (``instances_val.json`` -> ``val/``), or to ``<folder>/images/``."""
    try:
        records = json.loads(annotations.read_text())["images"]
        names = [str(r["file_name"]) for r in records]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CalibrationDataError(
            f"{annotations} is not a COCO annotation file with an 'images' list ({err})"
        ) from err
    if not names:
        raise CalibrationDataError(f"{annotations} lists no images")
    split = annotations.stem.removeprefix("instances_")
    candidates = [annotations.parent, annotations.parent / split, annotations.parent / "images"]
    for folder in candidates:
        if (folder / names[0]).is_file():
            return [folder / n for n in names]
    raise CalibrationDataError(
        f"cannot find the images of {annotations} (looked for {names[0]!r} in "
        f"{', '.join(str(c) for c in candidates)}); pass the image folder as `calibration` instead"
    )


def _spread(items: list, count: int, seed: int) -> list:
    """``count`` items drawn without replacement in a seeded order (all of them if fewer)."""
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order[:count]]


# long function: one branch per calibration source kind (folder, COCO, synthetic) and their shared sampling
def load_calibration_data(
    source: str | os.PathLike,
    spec: ModelSpec,
    input_size: tuple[int, int],
    *,
    num_images: int = DEFAULT_CALIB_IMAGES,
    seed: int = 0,
    progress: bool | None = None,
) -> CalibrationData:
    """Read and preprocess calibration images.

    Args:
        source: an image folder (searched recursively), a COCO ``.json`` annotation file, or
            ``"synthetic"`` (the project's generator; for models trained on it).
        spec: the model's spec (resize rule and size divisibility).
        input_size: (H, W) of the network input all images are padded to.
        num_images: how many images (a seeded random subset of a larger source).
        seed: shuffling seed (and the generator's seed offset for ``"synthetic"``).
        progress: show a progress bar (default: when stderr is a terminal).

    Raises:
        CalibrationDataError: missing source, no image, or none decodable.
    """
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    num_images = int(num_images)
    disable = None if progress is None else not progress
    if str(source) == SYNTHETIC:
        from retina_trt.data.synthetic import SyntheticConfig, generate_image

        config = SyntheticConfig(
            min_height=spec.min_size,
            max_height=spec.min_size,
            min_width=spec.min_size,
            max_width=spec.max_size,
        )
        loaders = [(lambda i=i: generate_image(SYNTHETIC_SEED_OFFSET + seed, i, config)[0]) for i in range(num_images)]
        described = f"synthetic (seed {SYNTHETIC_SEED_OFFSET + seed}, {num_images} images)"
    else:
        path = Path(source)
        if path.is_dir():
            files = _image_files(path)
            if not files:
                raise CalibrationDataError(
                    f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}; point `calibration` at a "
                    "folder of images like the ones the model will see"
                )
        elif path.is_file() and path.suffix.lower() == ".json":
            files = _coco_image_files(path)
        elif path.exists():
            raise CalibrationDataError(f"calibration source {path} is neither an image folder nor a COCO .json file")
        else:
            raise CalibrationDataError(
                f"calibration source not found: {path} (give an image folder, a COCO .json, or 'synthetic')"
            )
        files = _spread(files, num_images, seed)
        loaders = [(lambda f=f: read_image(f)) for f in files]
        described = f"{path} ({len(files)} images, seed {seed})"
        if len(files) < num_images:
            logger.warning("%s has only %d images (asked for %d)", path, len(files), num_images)

    pixels, sizes, skipped = [], [], 0
    for load in tqdm(loaders, desc="calibration images", unit="img", disable=disable):
        try:
            image = load()
        except ImageError as err:
            skipped += 1
            logger.warning("calibration: skipped an image: %s", err)
            continue
        batch = preprocess_batch(
            [image],
            min_size=spec.min_size,
            max_size=spec.max_size,
            size_divisible=spec.size_divisible,
            input_size=input_size,
        )
        pixels.append(batch.pixels[0])
        sizes.append(batch.image_sizes[0])
    if not pixels:
        raise CalibrationDataError(f"no calibration image could be decoded from {described}")
    logger.info("calibration data: %s, %d skipped", described, skipped)
    return CalibrationData(images=np.stack(pixels), image_sizes=np.stack(sizes), source=described, skipped=skipped)


def noise_data(input_size: tuple[int, int], num_images: int = 4, seed: int = 0) -> CalibrationData:
    """Uniform-noise images: the FP16 range check's inputs when no calibration data is given."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_images, *input_size, 3), dtype=np.uint8)
    sizes = np.tile(np.asarray(input_size, dtype=np.int32), (num_images, 1))
    return CalibrationData(images=images, image_sizes=sizes, source=f"uniform noise (seed {seed})")
