"""A Triton Inference Server model repository for a retina_trt engine or ONNX model.

``retina-trt export-triton MODEL --repo DIR`` writes::

    DIR/<name>/config.pbtxt
    DIR/<name>/<version>/model.plan      (TensorRT backend: the engine's raw plan, header stripped)
    DIR/<name>/<version>/model.onnx      (ONNX Runtime backend)

``config.pbtxt`` declares the output contract, dynamic batching, instance groups, and carries
the ModelSpec and the export/build facts as ``parameters`` (``retina_trt.spec`` etc.), so a
client can preprocess exactly like the Detector (``samples/triton_client.py`` does). The folder is
assembled under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from retina_trt.contract import CONTRACT_OUTPUTS
from retina_trt.contract.engine_file import read_engine_header, read_plan
from retina_trt.contract.onnx_metadata import read_metadata
from retina_trt.errors import ModelFormatError
from retina_trt.utils import check_output_folder, is_within, same_file, temp_path

KINDS = ("auto", "gpu", "cpu")
# How the model is served: by Triton's own backend for the file (tensorrt_plan for engines,
# onnxruntime_onnx for ONNX), or by the Python backend running retina_trt's ONNX Runtime backend
# (python_model.py; what `retina-trt serve` uses where Triton's other backends are absent).
BACKENDS = ("native", "python")
PYTHON_MODEL = Path(__file__).with_name("python_model.py")


def _model_facts(model: Path) -> dict[str, Any]:
    suffix = model.suffix.lower()
    if suffix == ".engine":
        header = read_engine_header(model)
        return {
            "platform": "tensorrt_plan",
            "file": "model.plan",
            "spec": header.spec,
            "info": header.info,
            "max_batch": header.max_batch,
            "precision": header.precision,
            "extra": {"tensorrt_version": header.tensorrt_version, "built_on": header.device_name},
        }
    if suffix == ".onnx":
        meta = read_metadata(model)
        if meta.nms not in ("onnx", "graph"):
            raise ModelFormatError(
                f"{model} was exported with nms={meta.nms!r}; Triton's ONNX Runtime backend needs the output contract "
                "from standard operators (nms='onnx' or 'graph')"
            )
        return {
            "platform": "onnxruntime_onnx",
            "file": "model.onnx",
            "spec": meta.spec,
            "info": meta.info,
            "max_batch": meta.max_batch,
            "precision": meta.precision,
            "extra": {},
        }
    raise ModelFormatError(f"export-triton takes a .engine or an .onnx from retina_trt, got {model}")


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _quote(text: str) -> str:
    return json.dumps(text)  # a protobuf text-format string literal


def config_pbtxt(
    name: str,
    facts: dict[str, Any],
    *,
    instances: int,
    kind: str,
    preferred_batch: list[int],
    max_queue_delay_us: int,
) -> str:
    spec = facts["spec"]
    info = facts["info"]
    height, width = info.input_size or (-1, -1)
    d = spec.detections_per_img
    # the export's own inputs: a float-input export has float images, a single-input one no image_sizes
    pixel_type = "TYPE_FP32" if info.float_input else "TYPE_UINT8"
    inputs = [("images", pixel_type, [height, width, 3]), ("image_sizes", "TYPE_INT32", [2])]
    inputs = [item for item in inputs if item[0] in info.inputs]
    classes_type = "TYPE_FP32" if info.output_dtype(CONTRACT_OUTPUTS[3]) == np.float32 else "TYPE_INT32"
    outputs = [
        (CONTRACT_OUTPUTS[0], "TYPE_INT32", [1]),
        (CONTRACT_OUTPUTS[1], "TYPE_FP32", [d, 4]),
        (CONTRACT_OUTPUTS[2], "TYPE_FP32", [d]),
        (CONTRACT_OUTPUTS[3], classes_type, [d]),
    ]

    def tensors(items):
        return ",\n".join(
            f"  {{\n    name: {_quote(n)}\n    data_type: {t}\n    dims: [ {', '.join(map(str, dims))} ]\n  }}"
            for n, t, dims in items
        )

    parameters = {
        "retina_trt.spec": spec.to_json(),
        "retina_trt.precision": facts["precision"],
        "retina_trt.input": "images: uint8 BGR NHWC, padded bottom/right; image_sizes: int32 (h, w) of the valid "
        "region",
        "retina_trt.export": json.dumps(facts["info"].record, sort_keys=True),
        **{f"retina_trt.{k}": str(v) for k, v in facts["extra"].items()},
    }
    params = "\n".join(
        f"parameters {{\n  key: {_quote(k)}\n  value: {{ string_value: {_quote(v)} }}\n}}"
        for k, v in parameters.items()
    )
    runner = (
        f"backend: {_quote('python')}" if facts["platform"] == "python" else f"platform: {_quote(facts['platform'])}"
    )
    lines = [
        f"name: {_quote(name)}",
        runner,
        f"max_batch_size: {facts['max_batch']}",
        f"input [\n{tensors(inputs)}\n]",
        f"output [\n{tensors(outputs)}\n]",
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(map(str, preferred_batch))} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}",
        f"instance_group [\n  {{\n    count: {instances}\n"
        f"    kind: {'KIND_GPU' if kind == 'gpu' else 'KIND_CPU'}\n  }}\n]",
        params,
    ]
    return "\n".join(lines) + "\n"


# long function: checks, staging and the atomic swap of one repository entry; the staging folder's lifetime spans them
def export_triton(
    model: str | os.PathLike,
    repo: str | os.PathLike,
    *,
    name: str | None = None,
    version: int = 1,
    instances: int = 1,
    kind: str = "auto",
    max_queue_delay_us: int = 100,
    overwrite: bool = False,
    backend: str = "native",
    max_batch: int | None = None,
) -> Path:
    """Write a Triton model repository entry for ``model`` (see the module docstring).

    Args:
        kind: instance kind; ``auto`` is ``gpu`` for engines and ``cpu`` for ONNX.
        backend: ``native`` (tensorrt_plan / onnxruntime_onnx) or ``python`` (an ONNX served by
            Triton's Python backend through retina_trt's ONNX Runtime backend; same contract).
        max_batch: the served ``max_batch_size`` (default: the model's own maximum).
        overwrite: replace an existing ``repo/name`` (otherwise it is an error).

    Returns:
        ``repo/name``.
    """
    model, repo = Path(model), Path(repo)
    if not model.is_file():
        raise ModelFormatError(f"model not found: {model}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if int(version) < 1 or int(instances) < 1:
        raise ValueError("version and instances must be >= 1")
    if int(max_queue_delay_us) < 0:
        raise ValueError(f"max_queue_delay_us must be >= 0, got {max_queue_delay_us}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    facts = _model_facts(model)
    if backend == "python":
        if facts["platform"] != "onnxruntime_onnx":
            raise ModelFormatError(
                f"the Python backend serves retina_trt ONNX models (nms='onnx' or 'graph'), got {model}"
            )
        facts = {**facts, "platform": "python"}
    if max_batch is not None:
        if not 1 <= int(max_batch) <= int(facts["max_batch"]):
            raise ValueError(f"max_batch must be in 1..{facts['max_batch']} (the model's maximum), got {max_batch}")
        facts = {**facts, "max_batch": int(max_batch)}
    name = name or model.stem.replace(".", "_")
    if not MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"invalid Triton model name {name!r}: use letters, digits, '_', '-' and '.', starting with a letter or "
            "digit (it becomes a folder of the repository)"
        )
    if kind == "auto":
        kind = "gpu" if facts["platform"] == "tensorrt_plan" else "cpu"
    target = repo / name
    check_output_folder(repo, "--repo")  # a file in the way, a read-only folder: one clear line
    replaced = target / str(version)
    if is_within(model, replaced) or any(same_file(model, target / f) for f in ("config.pbtxt", "labels.txt")):
        raise ValueError(f"the model {model} is inside {replaced}, which this export replaces; copy it elsewhere first")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace its version {version} and config")
    max_batch = int(facts["max_batch"])
    preferred = sorted({b for b in (max_batch // 2, max_batch) if b >= 1})
    text = config_pbtxt(
        name, facts, instances=instances, kind=kind, preferred_batch=preferred, max_queue_delay_us=max_queue_delay_us
    )
    repo.mkdir(parents=True, exist_ok=True)
    staging = temp_path(repo / name)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / str(version)).mkdir(parents=True)
        destination = staging / str(version) / facts["file"]
        if facts["platform"] == "tensorrt_plan":
            destination.write_bytes(read_plan(model))
        else:
            shutil.copyfile(model, destination)
        if facts["platform"] == "python":
            shutil.copyfile(PYTHON_MODEL, staging / str(version) / "model.py")
        (staging / "config.pbtxt").write_text(text)
        (staging / "labels.txt").write_text("\n".join(facts["spec"].class_names) + "\n")
        if target.exists():  # --overwrite: replace this version, the config and labels; keep other versions
            old = target / f".{version}.old-{os.getpid()}"
            if (target / str(version)).exists():
                os.replace(target / str(version), old)
            os.replace(staging / str(version), target / str(version))
            for item in ("config.pbtxt", "labels.txt"):
                os.replace(staging / item, target / item)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
