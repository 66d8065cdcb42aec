"""Loading and saving RetinaNet checkpoints.

Three kinds of checkpoint load with one call, :func:`load_checkpoint`:

* this project's: ``{"spec": <ModelSpec dict>, "state_dict": {...}}`` (see :func:`save_checkpoint`);
* torchvision's ``retinanet_resnet50_fpn`` (v1) and ``retinanet_resnet50_fpn_v2`` (v2) state
  dicts, plain or inside a dict (``{"model": ...}`` as torchvision's reference scripts write, or
  ``{"state_dict": ...}``), with or without a ``module.`` prefix, including the pre-0.13 head
  layout. Their spec is :func:`retina_trt.spec.torchvision_spec`.

Files are read with ``torch.load(weights_only=True)`` only: no code from a checkpoint runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from retina_trt.errors import CheckpointError, SpecError
from retina_trt.model.retinanet import RetinaNet
from retina_trt.spec import ModelSpec, torchvision_spec
from retina_trt.utils import atomic_path

logger = logging.getLogger(__name__)

_TV_HEAD_KEY = "head.classification_head.cls_logits.weight"
_OWN_HEAD_KEY = "head.cls.predictor.weight"
_MAX_LISTED = 5

# torchvision key -> this project's key, in order; the first match wins.
_TORCHVISION_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^backbone\.fpn\.inner_blocks\.(\d+)\.(?:0\.)?(weight|bias)$"), r"backbone.fpn.lateral.\1.\2"),
    (re.compile(r"^backbone\.fpn\.layer_blocks\.(\d+)\.(?:0\.)?(weight|bias)$"), r"backbone.fpn.output.\1.\2"),
    (re.compile(r"^backbone\.fpn\.extra_blocks\.(p6|p7)\.(weight|bias)$"), r"backbone.fpn.\1.\2"),
    (re.compile(r"^backbone\.body\.(.+)$"), r"backbone.body.\1"),
    (re.compile(r"^head\.classification_head\.cls_logits\.(weight|bias)$"), r"head.cls.predictor.\1"),
    (re.compile(r"^head\.regression_head\.bbox_reg\.(weight|bias)$"), r"head.box.predictor.\1"),
    (re.compile(r"^head\.classification_head\.conv\.(\d+)\.0\.(weight|bias)$"), r"head.cls.convs.\1.conv.\2"),
    (re.compile(r"^head\.classification_head\.conv\.(\d+)\.1\.(weight|bias)$"), r"head.cls.convs.\1.norm.\2"),
    (re.compile(r"^head\.regression_head\.conv\.(\d+)\.0\.(weight|bias)$"), r"head.box.convs.\1.conv.\2"),
    (re.compile(r"^head\.regression_head\.conv\.(\d+)\.1\.(weight|bias)$"), r"head.box.convs.\1.norm.\2"),
]
# torchvision < 0.13 head layout: Sequential(conv, relu, conv, relu, ...) -> conv.{2i}.
_LEGACY_HEAD = re.compile(r"^head\.(classification|regression)_head\.conv\.(\d+)\.(weight|bias)$")


def read_checkpoint_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of ``path``, with a CheckpointError for missing,
    empty, truncated or foreign files."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    try:
        # torchvision's reference scripts store their argparse.Namespace beside the weights.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(_unreadable(path, err)) from err


def _unreadable(path: Path, err: Exception) -> str:
    """Why ``path`` cannot be loaded, never passing on torch's advice to load it unsafely."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:1] == b"\x08" and b"\x12" in head[:8] and path.suffix.lower() in (".pt", ".pth"):
        return f"{path} is not a PyTorch checkpoint: it looks like an ONNX model; give it where an .onnx is expected"
    text = str(err)
    if "Unsupported global" in text or "Unsupported class" in text:
        return (
            f"{path} holds Python objects beyond tensors and plain containers, and retina_trt loads only "
            "weights (torch.load(weights_only=True)): loading those objects would run code from the file. "
            "Re-save just the weights, e.g. torch.save(model.state_dict(), 'weights.pt'), where you trust the source"
        )
    # torch's own text also advises weights_only=False, i.e. running the file's code: never pass that on
    unsafe = ("weights_only", "can still be loaded", "trust the source", "Re-running")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not any(u in line for u in unsafe)]
    detail = next(
        (line for line in lines if "error" in line.lower() or "invalid" in line.lower()), lines[0] if lines else ""
    )
    detail = detail.split("WeightsUnpickler error:")[-1].strip() or "no detail"
    return (
        f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {detail[:200]}); it may be "
        "truncated, or not saved with torch.save"
    )


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and any(isinstance(v, Tensor) for v in obj.values())
    )


def _strip_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _convert_torchvision(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    converted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        legacy = _LEGACY_HEAD.match(key)
        if legacy:
            head, index, kind = legacy.groups()
            if int(index) % 2:
                raise CheckpointError(f"unexpected torchvision head key {key!r}")
            key = f"head.{head}_head.conv.{int(index) // 2}.0.{kind}"
        for pattern, replacement in _TORCHVISION_RULES:
            if pattern.match(key):
                converted[pattern.sub(replacement, key)] = value
                break
        else:
            converted[key] = value  # left for the key check to report
    return converted


def _torchvision_version(state_dict: Mapping[str, Tensor]) -> int:
    return 2 if "head.classification_head.conv.0.1.weight" in state_dict else 1


def _spec_for_torchvision(state_dict: Mapping[str, Tensor], spec: ModelSpec | None) -> ModelSpec:
    num_outputs = state_dict[_TV_HEAD_KEY].shape[0]
    version = _torchvision_version(state_dict)
    if num_outputs % 9:
        raise CheckpointError(f"{_TV_HEAD_KEY} has {num_outputs} outputs, not a multiple of torchvision's 9 anchors")
    if spec is not None:
        return spec
    return torchvision_spec(version, num_classes=num_outputs // 9)


def _load_into(model: RetinaNet, state_dict: Mapping[str, Tensor], source: str) -> None:
    expected = {k: v for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected and not k.endswith("num_batches_tracked")]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, first: {missing[:_MAX_LISTED]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, first: {unexpected[:_MAX_LISTED]}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches, first: {mismatched[:_MAX_LISTED]}")
    if problems:
        spec = model.spec
        raise CheckpointError(
            f"{source} does not fit a RetinaNet with backbone={spec.backbone!r}, "
            f"num_classes={spec.num_classes}, head_norm={spec.head_norm!r}, "
            f"p6_from={spec.p6_from!r}, fpn_channels={spec.fpn_channels}: " + "; ".join(problems)
        )
    model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=True)


# long function: one branch per checkpoint layout (ours, torchvision v1/v2, training state), each short
def load_checkpoint(
    path_or_state_dict: str | os.PathLike | Mapping[str, Any], spec: ModelSpec | None = None
) -> RetinaNet:
    """Load a RetinaNet from a checkpoint file or an in-memory (state) dict.

    Args:
        path_or_state_dict: a file written by :func:`save_checkpoint` or ``torch.save`` of a
            torchvision RetinaNet ``state_dict`` (optionally wrapped in ``{"model": ...}`` or
            ``{"state_dict": ...}``), or such a dict itself.
        spec: overrides the spec stored in (or implied by) the checkpoint, e.g. to change
            thresholds; it must fit the weights. Required for a bare state dict of this project.

    Returns:
        RetinaNet in eval mode, on the CPU.

    Raises:
        CheckpointError: the file is missing, empty, truncated or not a checkpoint, or its
            keys/shapes do not fit the spec (the first offending keys are named).
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = str(path_or_state_dict)
        obj = read_checkpoint_file(Path(path_or_state_dict))
    elif isinstance(path_or_state_dict, Mapping):
        source = "state dict"
        obj = path_or_state_dict
    else:
        raise TypeError(f"load_checkpoint expects a path or a (state) dict, got {type(path_or_state_dict).__name__}")
    if spec is not None and not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec or None, got {type(spec).__name__}")

    stored_spec: ModelSpec | None = None
    state_dict: Any = obj
    if isinstance(obj, Mapping) and "spec" in obj and "state_dict" in obj:
        try:
            stored_spec = ModelSpec.from_dict(obj["spec"])
        except SpecError as err:
            raise CheckpointError(f"{source} holds an invalid ModelSpec: {err}") from err
        state_dict = obj["state_dict"]
    elif isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in ("model", "state_dict", "model_state_dict"):
            if _is_state_dict(obj.get(key)):
                state_dict = obj[key]
                break
    if not _is_state_dict(state_dict):
        kind = type(obj).__name__
        keys = list(obj)[:_MAX_LISTED] if isinstance(obj, Mapping) else []
        raise CheckpointError(
            f"{source} is not a RetinaNet checkpoint: expected a state dict of tensors or a "
            f"dict with 'spec' and 'state_dict', got a {kind}" + (f" with keys {keys}" if keys else "")
        )
    state_dict = _strip_prefix(state_dict)

    if _TV_HEAD_KEY in state_dict:
        version = _torchvision_version(state_dict)
        spec = _spec_for_torchvision(state_dict, spec)
        state_dict = _convert_torchvision(state_dict)
        logger.info("loading a torchvision RetinaNet v%d checkpoint from %s", version, source)
    elif _OWN_HEAD_KEY in state_dict:
        spec = spec or stored_spec
        if spec is None:
            raise CheckpointError(
                f"{source} is a bare retina_trt state dict without a spec; pass spec=ModelSpec(...) "
                "or load a file written by retina_trt.save_checkpoint"
            )
    else:
        raise CheckpointError(
            f"{source} is not a RetinaNet checkpoint: neither {_TV_HEAD_KEY!r} (torchvision) nor "
            f"{_OWN_HEAD_KEY!r} (retina_trt) is among its keys; first keys: "
            f"{list(state_dict)[:_MAX_LISTED]}"
        )
    model = RetinaNet(spec)
    _load_into(model, state_dict, source)
    return model.eval()


def save_checkpoint(model: RetinaNet, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``{"spec", "state_dict", **extra}`` atomically (temporary name, then rename).

    ``extra`` values must be loadable with ``weights_only=True`` (tensors, numbers, strings,
    lists, dicts).
    """
    if not isinstance(model, RetinaNet):
        raise TypeError(f"save_checkpoint expects a RetinaNet, got {type(model).__name__}")
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    payload = {"spec": model.spec.to_dict(), "state_dict": state, **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
