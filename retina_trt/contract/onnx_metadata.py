"""The retina_trt metadata stored in an exported ONNX model's ``metadata_props``: what an export
says about itself (its ModelSpec, export options, precision). Reading it from an ONNX Runtime
session needs no ``onnx`` package (``parse_metadata``); ``onnx`` is imported only to read or
write a model file's entries. See docs/ARCHITECTURE.md ("The contract")."""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retina_trt.contract import PRECISIONS, ExportInfo, validate_export
from retina_trt.errors import ModelFormatError, SpecError
from retina_trt.spec import ModelSpec

if TYPE_CHECKING:
    import onnx

FORMAT_KEY = "retina_trt.format"
FORMAT = "retina_trt.onnx/1"
SPEC_KEY = "retina_trt.spec"
EXPORT_KEY = "retina_trt.export"
PRECISION_KEY = "retina_trt.precision"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxMetadata:
    """What an exported ONNX says about itself.

    Attributes:
        spec: the model's ModelSpec.
        export: export options: ``nms``, ``batch`` [min, opt, max], ``input_size`` [H, W] or
            None (dynamic shapes), ``opset``, ``input_layout``, ``outputs``, ``retina_trt_version``.
        precision_info: how the graph's precision was prepared (``retina_trt.calibration``):
            ``precision`` ("fp32", "fp16" or "int8"), and for prepared models the method, the
            calibration-data hash, the source ONNX sha256 and the tool versions.
    """

    spec: ModelSpec
    export: dict[str, Any]
    precision_info: dict[str, Any] = field(default_factory=lambda: {"precision": "fp32"})

    @property
    def precision(self) -> str:
        return str(self.precision_info.get("precision", "fp32"))

    @functools.cached_property  # validated once, not on every nms / input_size / max_batch read
    def info(self) -> ExportInfo:
        """The export record, typed (``export`` is the same record as a dict)."""
        return ExportInfo.from_record(self.export)

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self.info.input_size

    @property
    def nms(self) -> str:
        return self.info.nms

    @property
    def max_batch(self) -> int:
        return self.info.batch[2]


def write_metadata(model: onnx.ModelProto, spec: ModelSpec, export: dict[str, Any]) -> None:
    """Set the retina_trt entries of ``model.metadata_props`` (replacing earlier ones)."""
    entries = {FORMAT_KEY: FORMAT, SPEC_KEY: spec.to_json(), EXPORT_KEY: json.dumps(export, sort_keys=True)}
    _set_props(model, entries)


def _set_props(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def parse_metadata(props: dict[str, str], source: str) -> OnnxMetadata:
    """Metadata from a key -> value mapping (an ONNX model's or an ONNX Runtime session's)."""
    if props.get(FORMAT_KEY) != FORMAT:
        found = props.get(FORMAT_KEY)
        hint = (
            "it was not exported by retina_trt; export it with `retina-trt export`"
            if found is None
            else f"its format is {found!r}, this retina_trt reads {FORMAT!r}; re-export it"
        )
        raise ModelFormatError(f"{source} is not a retina_trt ONNX model: {hint}")
    try:
        spec = ModelSpec.from_json(props[SPEC_KEY])
        export = validate_export(json.loads(props[EXPORT_KEY]))
        precision_info = json.loads(props.get(PRECISION_KEY, '{"precision": "fp32"}'))
        if not isinstance(precision_info, dict) or precision_info.get("precision", "fp32") not in PRECISIONS:
            raise ValueError(f"precision record {precision_info!r} names no known precision"[:300])
    except (KeyError, ValueError, TypeError, RecursionError, SpecError) as err:
        what = f"missing {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise ModelFormatError(f"{source} has damaged retina_trt metadata ({what}); re-export it") from err
    return OnnxMetadata(spec=spec, export=export, precision_info=precision_info)


def write_precision_metadata(model: onnx.ModelProto, source_props: dict[str, str], info: dict[str, Any]) -> None:
    """Give a precision-prepared ``model`` the retina_trt entries of its source plus ``info``.

    Graph rewriters (Model Optimizer) drop ``metadata_props``; this puts them back.
    """
    entries = {k: v for k, v in source_props.items() if k.startswith("retina_trt.")}
    entries[PRECISION_KEY] = json.dumps(info, sort_keys=True)
    _set_props(model, entries)


def read_metadata(model_or_path: onnx.ModelProto | str | os.PathLike) -> OnnxMetadata:
    """Read the metadata of an ONNX model (without loading its weights when given a path)."""
    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        model, source = model_or_path, "ONNX model"
    else:
        source = str(model_or_path)
        path = Path(model_or_path)
        if not path.is_file():
            raise ModelFormatError(f"ONNX model not found: {path}")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as err:  # protobuf raises DecodeError and others for foreign files
            raise ModelFormatError(f"{path} is not an ONNX model ({type(err).__name__}: {err})") from err
    return parse_metadata({p.key: p.value for p in model.metadata_props}, source)


def graph_precision(op_types: set[str], has_fp16_weights: bool) -> str:
    """The precision a graph really has, from itself: ``int8`` with Q/DQ nodes, ``fp16`` with
    FP16 weights, else ``fp32`` (what ``prepare_precision`` makes: docs/engines.md)."""
    if op_types & {"QuantizeLinear", "DequantizeLinear", "FakeQuantize"}:
        return "int8"
    return "fp16" if has_fp16_weights else "fp32"


def onnx_graph_precision(path: str | os.PathLike) -> str | None:
    """:func:`graph_precision` of an ONNX file (its weights are not loaded from external data);
    None when the file cannot be parsed (the runtime's own error is clearer)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    return graph_precision({n.op_type for n in model.graph.node}, fp16)


def trusted_precision(claimed: str, found: str | None, source: str) -> str:
    """``found`` (the graph's own precision), with a warning when the metadata claimed another."""
    if found is None or found == claimed:
        return claimed
    logger.warning(
        "%s: its metadata says %s but the graph is %s; reporting %s (re-export or re-prepare it)",
        source,
        claimed.upper(),
        found.upper(),
        found.upper(),
    )
    return found
