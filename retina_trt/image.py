"""Image reading and preprocessing with OpenCV: the one home that the runtime, training, data and
calibration all import (docs/ARCHITECTURE.md, "The input contract").

Images are HxWx3 uint8 BGR (OpenCV's layout) or paths. Each is resized keeping its aspect
ratio (shorter side to ``min_size``, longer side capped at ``max_size``; for a fixed-size model
additionally shrunk to fit its input), then the batch is padded bottom/right with zeros to a
common size that is a multiple of ``size_divisible`` (or to the fixed input size). The
normalization to float happens in the model graph itself (``PixelNormalizer``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from retina_trt.errors import ImageError

ImageLike = np.ndarray | str | os.PathLike


MAX_PIXELS_SETTING = 1 << 40  # the most RETINA_TRT_MAX_IMAGE_PIXELS may say (OpenCV aborts past 2^64)


def max_image_pixels() -> int:
    """The largest image (width x height) decoded: ``$RETINA_TRT_MAX_IMAGE_PIXELS``, default
    2^27 (134 M pixels, 16 times 8K UHD; about 400 MB decoded)."""
    text = os.environ.get("RETINA_TRT_MAX_IMAGE_PIXELS", str(1 << 27))
    try:
        value = int(text)
    except ValueError as err:
        raise ImageError(f"RETINA_TRT_MAX_IMAGE_PIXELS must be an integer, got {text!r}") from err
    if not 0 < value <= MAX_PIXELS_SETTING:
        raise ImageError(f"RETINA_TRT_MAX_IMAGE_PIXELS must be in [1, 2^40], got {text[:40]!r}")
    return value


def declared_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) an image file declares in its header (PNG, JPEG, BMP), read without
    decoding; None for other formats (OpenCV's own pixel limit covers those)."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:2] == b"BM" and len(head) >= 26:
        return abs(int.from_bytes(head[18:22], "little", signed=True)), abs(
            int.from_bytes(head[22:26], "little", signed=True)
        )
    if head[:2] == b"\xff\xd8":  # JPEG: walk the markers to the first start-of-frame
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                return None
            marker = head[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            length = int.from_bytes(head[i + 2 : i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return int.from_bytes(head[i + 7 : i + 9], "big"), int.from_bytes(head[i + 5 : i + 7], "big")
            i += 2 + length
    return None


def check_declared_size(head: bytes, source: str) -> None:
    """Refuse, before decoding, an image whose header declares more than :func:`max_image_pixels`."""
    size = declared_size(head)
    limit = max_image_pixels()
    if size is not None and size[0] * size[1] > limit:
        raise ImageError(
            f"{source} declares {size[0]}x{size[1]} pixels, more than the limit of {limit} "
            "(RETINA_TRT_MAX_IMAGE_PIXELS): refused before decoding"
        )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 BGR; :class:`ImageError` says what went wrong."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if not path.is_file():
        raise ImageError(f"not an image file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"image file is empty: {path}")
    # no image within the pixel limit is larger than 8 bytes a pixel (16-bit RGBA, uncompressed)
    if size > 8 * max_image_pixels() + (1 << 20):
        raise ImageError(
            f"{path} is {size / 2**30:.1f} GiB, larger than any image within the pixel limit "
            "(RETINA_TRT_MAX_IMAGE_PIXELS): not read"
        )
    with open(path, "rb") as f:
        check_declared_size(f.read(1 << 16), str(path))
    try:
        data = np.fromfile(path, dtype=np.uint8)
        # IMREAD_COLOR applies the EXIF orientation, as image viewers (and cv2.imread) do;
        # ANYDEPTH keeps 16-bit files for to_bgr
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error as err:  # e.g. a declared size over OpenCV's own limit
        raise ImageError(f"cannot decode {path}: {str(err).strip().splitlines()[-1][:200]}") from err
    except MemoryError as err:
        raise ImageError(f"cannot decode {path}: not enough memory for it") from err
    if image is None:
        raise ImageError(f"cannot decode {path}: not an image OpenCV can read, or corrupt")
    return to_bgr(image, source=str(path))


def to_bgr(image: np.ndarray, *, source: str = "image") -> np.ndarray:
    """HxW / HxWx1 grayscale, HxWx3 BGR or HxWx4 BGRA uint8 -> contiguous HxWx3 uint8 BGR."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{source}: expected a numpy array (HxWx3 uint8 BGR) or a path, got {type(image).__name__}")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16 and image.size:
            image = (image >> 8).astype(np.uint8)  # 16-bit files: keep the high byte
        else:
            raise ImageError(
                f"{source}: expected dtype uint8, got {image.dtype}; convert with "
                "image.astype(np.uint8) after scaling to 0..255"
            )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise ImageError(f"{source}: expected HxW, HxWx1, HxWx3 or HxWx4 pixels, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"{source}: image has no pixels (shape {image.shape})")
    return np.ascontiguousarray(image)


def load_image(image: ImageLike, *, source: str = "image") -> np.ndarray:
    """An array or a path -> HxWx3 uint8 BGR."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    return to_bgr(image, source=source)


def resize_scale(
    height: int,
    width: int,
    *,
    min_size: int,
    max_size: int,
    input_size: tuple[int, int] | None = None,
) -> float:
    """Scale factor of the aspect-preserving resize.

    The shorter side goes to ``min_size`` unless the longer side would pass ``max_size``
    (torchvision's rule); with a fixed ``input_size`` (H, W) the image is further shrunk to fit.
    """
    scale = min(min_size / min(height, width), max_size / max(height, width))
    if input_size is not None:
        scale = min(scale, input_size[0] / height, input_size[1] / width)
    return scale


def resized_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """(H, W) after resizing by ``scale``: floor, as torchvision does, and at least 1 pixel.

    The small epsilon keeps products like 10000 * (384 / 10000) = 383.99999999999994 at 384.
    """
    return max(1, math.floor(height * scale + 1e-9)), max(1, math.floor(width * scale + 1e-9))


@dataclass(frozen=True)
class PreprocessedBatch:
    """A padded batch and how to map boxes back.

    Attributes:
        pixels (ndarray[B, H, W, 3] uint8): BGR, padded bottom/right with zeros.
        image_sizes (ndarray[B, 2] int32): (h, w) of each resized image inside ``pixels``.
        original_sizes (ndarray[B, 2] int32): (h, w) of each original image.
    """

    pixels: np.ndarray
    image_sizes: np.ndarray
    original_sizes: np.ndarray

    def slice(self, start: int, stop: int) -> PreprocessedBatch:
        """Images ``start:stop`` of the batch, with the same padded size."""
        return PreprocessedBatch(self.pixels[start:stop], self.image_sizes[start:stop], self.original_sizes[start:stop])

    def scale_factors(self) -> np.ndarray:
        """ndarray[B, 2] float64: (sy, sx) from original to network-input pixels."""
        return self.image_sizes.astype(np.float64) / self.original_sizes.astype(np.float64)


def preprocess_batch(
    images: Sequence[np.ndarray],
    *,
    min_size: int,
    max_size: int,
    size_divisible: int,
    input_size: tuple[int, int] | None = None,
) -> PreprocessedBatch:
    """Resize and pad HxWx3 uint8 BGR ``images`` into one batch (see the module docstring)."""
    if not images:
        raise ValueError("preprocess_batch needs at least one image")
    resized, sizes, originals = [], [], []
    for image in images:
        h, w = image.shape[:2]
        scale = resize_scale(h, w, min_size=min_size, max_size=max_size, input_size=input_size)
        new_h, new_w = resized_shape(h, w, scale)
        if input_size is not None:
            new_h, new_w = min(new_h, input_size[0]), min(new_w, input_size[1])
        if (new_h, new_w) != (h, w):
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        resized.append(image)
        sizes.append((new_h, new_w))
        originals.append((h, w))
    if input_size is not None:
        pad_h, pad_w = input_size
    else:
        pad_h = _round_up(max(s[0] for s in sizes), size_divisible)
        pad_w = _round_up(max(s[1] for s in sizes), size_divisible)
    pixels = np.zeros((len(images), pad_h, pad_w, 3), dtype=np.uint8)
    for i, image in enumerate(resized):
        pixels[i, : image.shape[0], : image.shape[1]] = image
    return PreprocessedBatch(
        pixels=pixels,
        image_sizes=np.asarray(sizes, dtype=np.int32),
        original_sizes=np.asarray(originals, dtype=np.int32),
    )


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def boxes_to_original(boxes_xyxy: np.ndarray, scale_yx: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Map boxes from network-input to original-image pixels and clip to the image.

    Args:
        boxes_xyxy (ndarray[N, 4] float32): network-input pixels.
        scale_yx: (sy, sx) from original to network-input pixels.
        original_size: (h, w) of the original image.

    Returns:
        ndarray[N, 4] float32: xyxy, original-image pixels.
    """
    sy, sx = float(scale_yx[0]), float(scale_yx[1])
    out = boxes_xyxy.astype(np.float32, copy=True)
    out[:, 0::2] = np.clip(out[:, 0::2] / sx, 0, original_size[1])
    out[:, 1::2] = np.clip(out[:, 1::2] / sy, 0, original_size[0])
    return out
