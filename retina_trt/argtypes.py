"""argparse types shared by the command-line front ends (``retina-trt`` and the ``python -m
retina_trt.bench.*`` measurements): each parses one kind of value and says what it expected."""

from __future__ import annotations

import argparse
import math

from retina_trt.spec import MAX_IMAGE_SIDE


def parse_batch(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected MIN:OPT:MAX or N, got {text!r}") from err
    if len(values) == 1:
        values = [1, values[0], values[0]]
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected MIN:OPT:MAX or N, got {text!r}")
    return values[0], values[1], values[2]


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 800x1344, got {text!r}") from err
    if not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE):
        raise argparse.ArgumentTypeError(f"each side must be in 1..{MAX_IMAGE_SIDE}, got {text!r}")
    return height, width


def parse_ccs(text: str) -> tuple[tuple[int, int], ...]:
    """``8.6,8.9`` -> ((8, 6), (8, 9))."""
    try:
        ccs = tuple((int(a), int(b)) for a, b in (part.strip().split(".") for part in text.split(",")))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected compute capabilities such as 8.6,8.9, got {text!r}") from err
    return ccs


def positive(kind: type, what: str, most: float | None = None):
    """An argparse type: ``kind(text)`` that must be > 0, finite, and at most ``most``."""

    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError) as err:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}") from err
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite {what}, got {text!r}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"expected a {what} of at most {most:g}, got {text!r}")
        return value

    return parse


positive_int = positive(int, "integer")
positive_float = positive(float, "number")
thread_count = positive(int, "thread count", 1024)
seconds = positive(float, "number of seconds", 86400)


def non_negative_seconds(text: str) -> float:
    """``0`` or :func:`seconds`."""
    return 0.0 if text.strip() in ("0", "0.0") else seconds(text)


def parse_range(text: str) -> tuple[int, int]:
    try:
        values = [int(v) for v in text.split(":")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX or N, got {text!r}") from err
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX or N, got {text!r}")
    return values[0], values[1]


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def parse_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 400,600,800, got {text!r}") from err
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def score(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from err
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def infer_schedule(text: str):
    """``--infer``: ``every``, ``adaptive`` or a whole number N >= 1 (every N-th frame)."""
    from retina_trt.streams.schedule import InferSchedule

    try:
        return InferSchedule.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected every, adaptive or a whole number N >= 1, got {text!r}") from err
