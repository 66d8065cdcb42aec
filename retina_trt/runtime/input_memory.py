"""Refuse, before anything is allocated, a model whose inputs could not fit in this machine's
memory: a fixed input size, or the largest a dynamic model's ``min_size``/``max_size`` make
(both come from metadata, which may be wrong or hostile).

The estimate is a lower bound of a CPU run's peak for one image: the size of the stem's
64-channel stride-2 convolution output in float32 (every supported backbone, ResNet-18 to 101,
has that stem). It is checked against real runs, FP32 and BF16, whose peaks stay above it
(docs/failure-behaviour.md#untrusted-sizes). A model refused here could not run; one that passes
may still need more.
"""

from __future__ import annotations

from retina_trt.errors import ModelFormatError
from retina_trt.spec import ModelSpec
from retina_trt.utils import available_bytes

# bytes per input pixel: 64 channels of float32 at a quarter of the pixels
BYTES_PER_PIXEL = 64 * 4 // 4


def largest_input(spec: ModelSpec, input_size: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) of the largest network input: the fixed size, or min_size x max_size padded to
    ``size_divisible`` (the shorter side goes to min_size, the longer stops at max_size)."""
    if input_size is not None:
        return int(input_size[0]), int(input_size[1])
    step = max(1, int(spec.size_divisible))
    return -(-int(spec.min_size) // step) * step, -(-int(spec.max_size) // step) * step


def check_input_fits(spec: ModelSpec, input_size: tuple[int, int] | None, source: str) -> None:
    """Raise :class:`ModelFormatError` in one line when one image at the largest input needs
    more memory than is available now."""
    height, width = largest_input(spec, input_size)
    need, have = BYTES_PER_PIXEL * height * width, available_bytes()
    if need > have:
        what = "its fixed input" if input_size is not None else "its min_size/max_size"
        raise ModelFormatError(
            f"{source}: {what} ({height}x{width}) needs at least {need / 1e9:.1f} GB per image and "
            f"{have / 1e9:.1f} GB are available; re-export it with a smaller input size, or run it on a "
            "machine with more memory"
        )
