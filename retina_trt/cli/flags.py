"""The CLI's names for the library's parameters, and the options it builds from them."""

from __future__ import annotations

import argparse
import re

# Python parameter -> the flag that sets it: the one place where the library's names meet the CLI's.
# Library errors name parameters in backticks (`nms`); the CLI prints them as flags (cli_message).
PARAMETER_FLAGS = {
    "weights": "--weights",
    "onnx": "--onnx",
    "output": "--output",
    "out_dir": "--output",
    "save_onnx": "--save-onnx",
    "nms": "--nms",
    "precision": "--precision",
    "cpu_precision": "--cpu-precision",
    "input_size": "--input-size",
    "dynamic_shapes": "--dynamic-shapes",
    "min_input_size": "--min-input-size",
    "max_input_size": "--max-input-size",
    "compute_capabilities": "--compute-capability",
    "batch": "--batch",
    "timing_cache": "--timing-cache",
    "calibration": "--calib-data",
    "tensorrt": "--tensorrt",
    "max_reconnect_attempts": "--max-reconnect-attempts",
    "max_outage_s": "--max-outage",
    "num_threads": "--threads",
    "view_port": "--view",
    "verbose": "--verbose",
    "dry_run": "--dry-run",
}


def cli_message(message: str) -> str:
    """A library error for the command line: each `parameter` named in backticks becomes its flag
    (``PARAMETER_FLAGS``); other backticked names lose their backticks."""
    return re.sub(r"`([a-z_]+)`", lambda m: PARAMETER_FLAGS.get(m.group(1), m.group(1)), message)


def detector_options(args: argparse.Namespace) -> dict:
    """``Detector`` keywords from a command's ``--backend`` and ``--cpu-precision`` (OpenVINO's
    options are ignored by the other backends)."""
    from retina_trt.runtime.openvino_backend import OpenVinoOptions

    options = {"backend": args.backend}
    if getattr(args, "cpu_precision", None) is not None:
        options["options"] = OpenVinoOptions(precision=args.cpu_precision)
    return options
