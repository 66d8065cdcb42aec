"""Moved to :mod:`retina_trt.image` (this name works for one more release)."""

from retina_trt.image import (  # noqa: F401
    ImageLike,
    PreprocessedBatch,
    boxes_to_original,
    check_declared_size,
    declared_size,
    load_image,
    max_image_pixels,
    preprocess_batch,
    read_image,
    resize_scale,
    resized_shape,
    to_bgr,
)
