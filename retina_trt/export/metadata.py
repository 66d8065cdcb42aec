"""The retina_trt metadata stored in an exported ONNX model's ``metadata_props``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from retina_trt.errors import ModelFormatError, SpecError
from retina_trt.spec import ModelSpec

FORMAT_KEY = "retina_trt.format"
FORMAT = "retina_trt.onnx/1"
SPEC_KEY = "retina_trt.spec"
EXPORT_KEY = "retina_trt.export"


@dataclass(frozen=True)
class OnnxMetadata:
    """What an exported ONNX says about itself.

    Attributes:
        spec: the model's ModelSpec.
        export: export options: ``nms``, ``batch`` [min, opt, max], ``input_size`` [H, W] or
            None (dynamic shapes), ``opset``, ``input_layout``, ``outputs``, ``retina_trt_version``.
    """

    spec: ModelSpec
    export: dict[str, Any]

    @property
    def input_size(self) -> tuple[int, int] | None:
        size = self.export.get("input_size")
        return None if size is None else (int(size[0]), int(size[1]))

    @property
    def nms(self) -> str:
        return str(self.export["nms"])

    @property
    def max_batch(self) -> int:
        return int(self.export["batch"][2])


def write_metadata(model: onnx.ModelProto, spec: ModelSpec, export: dict[str, Any]) -> None:
    """Set the retina_trt entries of ``model.metadata_props`` (replacing earlier ones)."""
    entries = {FORMAT_KEY: FORMAT, SPEC_KEY: spec.to_json(), EXPORT_KEY: json.dumps(export, sort_keys=True)}
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
        export = json.loads(props[EXPORT_KEY])
    except (KeyError, json.JSONDecodeError, SpecError) as err:
        raise ModelFormatError(f"{source} has damaged retina_trt metadata ({err}); re-export it") from err
    return OnnxMetadata(spec=spec, export=export)


def read_metadata(model_or_path: onnx.ModelProto | str | os.PathLike) -> OnnxMetadata:
    """Read the metadata of an ONNX model (without loading its weights when given a path)."""
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
