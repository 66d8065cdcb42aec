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
    "min_hw": "--min-input-size",
    "max_hw": "--max-input-size",
    "opt_hw": "--input-size",
    "flavour": "--tensorrt",
    "verbose": "--verbose",
    "dry_run": "--dry-run",
    "infer": "--infer",
    "batch_size": "--batch-size",
}


def cli_message(message: str) -> str:
    """A library error for the command line: a parameter named in backticks (`nms`) becomes its flag
    (``PARAMETER_FLAGS``; another backticked name loses its backticks), and a parameter with its
    value (``nms='graph'``) becomes the flag with the value (``--nms graph``)."""
    message = re.sub(r"`([a-z_]+)`", lambda m: PARAMETER_FLAGS.get(m.group(1), m.group(1)), message)

    def with_value(match: re.Match) -> str:
        flag = PARAMETER_FLAGS.get(match.group(1))
        return f"{flag} {match.group(3)}" if flag else match.group(0)

    return re.sub(r"(?<![\w-])([a-z_]+)=(['\"]?)([\w.:-]+)\2", with_value, message)


def detector_options(args: argparse.Namespace) -> dict:
    """``Detector`` keywords from a command's ``--backend`` and ``--cpu-precision`` (OpenVINO's
    options are ignored by the other backends)."""
    from retina_trt.runtime.openvino_backend import OpenVinoOptions

    options = {"backend": args.backend}
    if getattr(args, "cpu_precision", None) is not None:
        options["options"] = OpenVinoOptions(precision=args.cpu_precision)
    return options
