"""The retina_trt engine file: a JSON header followed by the TensorRT plan. No tensorrt import here.

Layout::

    MAGIC (10 bytes) | header length (uint64, little endian) | header (UTF-8 JSON) | plan

The header holds the ModelSpec, the export options (NMS, input size, batch range, outputs), the
TensorRT flavour (``tensorrt`` 10/11 or ``tensorrt_rtx``) and version, the GPU it was built on (if
any) and the compute capabilities it targets, the precision, the per-layer precision summary of
the build, the source ONNX's sha256 and the build options, so ``read_engine_header`` tells what an
engine is without TensorRT or a GPU, and loading can refuse a mismatched engine with the command
that rebuilds it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retina_trt.contract import MAX_BATCH, PRECISIONS, ExportInfo, check_ints, validate_export
from retina_trt.errors import ModelFormatError, SpecError
from retina_trt.spec import MAX_IMAGE_SIDE, ModelSpec
from retina_trt.utils import atomic_path

MAGIC = b"RETINATRT\x01"
HEADER_FORMAT = 1
_LENGTH = struct.Struct("<Q")
_MAX_HEADER = 16 << 20


class EngineMismatchError(ModelFormatError):
    """The engine was built for another TensorRT version or GPU."""


@dataclass(frozen=True)
class EngineHeader:
    """What an engine file says about itself.

    Attributes:
        spec: the model's ModelSpec.
        tensorrt_flavour: "tensorrt" (TensorRT 10/11) or "tensorrt_rtx" (TensorRT for RTX).
        tensorrt_version: e.g. "10.13.3.9" or "1.7.1.116".
        device_name, compute_capability: the GPU it was built on, e.g. ("NVIDIA H100", (9, 0));
            None for a TensorRT-RTX build on a machine without a GPU.
        targets: compute capabilities the engine runs on, e.g. ((8, 0), (8, 6), ...).
        precision: "fp32", "fp16" or "int8".
        onnx_sha256: sha256 of the (prepared) ONNX it was built from.
        export: the ONNX export options (nms, input_size, batch, outputs, ...).
        build: the build options (profile, workspace, hardware/version compatibility, the
            per-layer precision summary ``layer_precisions``, ...).
        plan_offset, plan_size: where the TensorRT plan lies in the file.
    """

    spec: ModelSpec
    tensorrt_flavour: str
    tensorrt_version: str
    device_name: str | None
    compute_capability: tuple[int, int] | None
    targets: tuple[tuple[int, int], ...]
    precision: str
    onnx_sha256: str
    export: dict[str, Any]
    build: dict[str, Any]
    plan_offset: int
    plan_size: int
    raw: dict[str, Any]

    @property
    def max_batch(self) -> int:
        return int(self.build["batch"][2])

    @functools.cached_property  # validated once, not on every nms / input_size / max_batch read
    def info(self) -> ExportInfo:
        """The export record, typed (its batch is None: the build's profile is ``build.batch``)."""
        return ExportInfo.from_record(self.export, require_batch=False)

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self.info.input_size

    @property
    def nms(self) -> str:
        return self.info.nms

    @property
    def layer_precisions(self) -> dict[str, Any] | None:
        return self.build.get("layer_precisions")


def make_header(
    *,
    spec: ModelSpec,
    tensorrt_version: str,
    device_name: str | None,
    compute_capability: tuple[int, int] | None,
    precision: str,
    onnx_sha256: str,
    export: dict[str, Any],
    build: dict[str, Any],
    plan: bytes,
    tensorrt_flavour: str = "tensorrt",
    targets: tuple[tuple[int, int], ...] = (),
) -> dict[str, Any]:
    """The header JSON object for :func:`write_engine` (``targets`` default: the build GPU's)."""
    from retina_trt._version import __version__

    if not targets:
        if compute_capability is None:
            raise ValueError("an engine header needs the build GPU's compute capability or the targets")
        targets = (tuple(compute_capability),)

    return {
        "format": HEADER_FORMAT,
        "spec": json.loads(spec.to_json()),
        "tensorrt_flavour": tensorrt_flavour,
        "tensorrt_version": tensorrt_version,
        "device": {
            "name": device_name,
            "compute_capability": None if compute_capability is None else list(compute_capability),
        },
        "targets": [list(cc) for cc in targets],
        "precision": precision,
        "onnx_sha256": onnx_sha256,
        "export": export,
        "build": build,
        "plan_sha256": hashlib.sha256(plan).hexdigest(),
        "retina_trt_version": __version__,
    }


def write_engine(path: str | os.PathLike, header: dict[str, Any], plan: bytes) -> Path:
    """Write header + plan to ``path`` atomically."""
    blob = json.dumps(header, sort_keys=True).encode("utf-8")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(_LENGTH.pack(len(blob)))
        f.write(blob)
        f.write(plan)
    return Path(path)


def _check_layer_precisions(summary: Any) -> None:
    """The build report's summary: None, or an object whose counts are objects of integers."""
    if summary is None:
        return
    if not isinstance(summary, dict):
        raise ValueError(f"build.layer_precisions must be a JSON object, got {type(summary).__name__}")

    def is_count(n: Any) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 10**7

    for key in ("convolutions", "postprocess_output_dtypes"):
        value = summary.get(key, {})
        if not isinstance(value, dict) or not all(is_count(n) for n in value.values()):
            raise ValueError(f"build.layer_precisions.{key} must map precisions to layer counts")
    for key in ("layers", "postprocess_layers"):
        if not is_count(summary.get(key, 0)):
            raise ValueError(f"build.layer_precisions.{key} must be a layer count")


# long function: validation of every header field of an untrusted file in turn
def read_engine_header(path: str | os.PathLike) -> EngineHeader:
    """Read an engine file's header (no TensorRT needed).

    Raises:
        ModelFormatError: not a retina_trt engine (e.g. a bare trtexec plan), or damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"engine file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            raise ModelFormatError(
                f"{path} is not a retina_trt engine (no retina_trt header; a plain TensorRT plan "
                "from trtexec has none): build it with `retina-trt build-engine`"
            )
        raw_length = f.read(_LENGTH.size)
        if len(raw_length) != _LENGTH.size:
            raise ModelFormatError(f"{path} has a damaged header (truncated after the magic); rebuild the engine")
        (length,) = _LENGTH.unpack(raw_length)
        if not 0 < length <= _MAX_HEADER or len(MAGIC) + _LENGTH.size + length > size:
            raise ModelFormatError(f"{path} has a damaged header (length {length}); rebuild the engine")
        blob = f.read(length)
    try:
        raw = json.loads(blob.decode("utf-8"))
        offset = len(MAGIC) + _LENGTH.size + length
        cc = raw["device"]["compute_capability"]
        capability = None if cc is None else tuple(check_ints(cc, 2, "device.compute_capability", 0, 99))
        listed = raw.get("targets") or ([cc] if cc is not None else [])
        if not isinstance(listed, list) or len(listed) > 64:
            raise ValueError("targets must be a list of at most 64 compute capabilities")
        targets = tuple(tuple(check_ints(t, 2, "targets", 0, 99)) for t in listed)
        flavour = str(raw.get("tensorrt_flavour", "tensorrt"))
        if flavour not in ("tensorrt", "tensorrt_rtx"):
            raise ValueError(f"unknown TensorRT flavour {flavour!r}")
        if not targets:
            raise ValueError("no target compute capability")
        name = raw["device"]["name"]
        export = validate_export(raw["export"], require_batch=False)  # the engine's batch is build.batch
        build = raw["build"]
        if not isinstance(build, dict):
            raise ValueError("build must be a JSON object")
        _check_layer_precisions(build.get("layer_precisions"))
        lo, opt, hi = check_ints(build.get("batch"), 3, "build.batch", 1, MAX_BATCH)
        if not lo <= opt <= hi:
            raise ValueError(f"build.batch must be ordered, got {[lo, opt, hi]}")
        profile = build.get("profile", {"images": [[lo, 1, 1, 3], [opt, 1, 1, 3], [hi, 1, 1, 3]]})
        for shape in profile["images"] if isinstance(profile, dict) else [None]:
            check_ints(shape, 4, "build.profile.images", 1, MAX_IMAGE_SIDE)
        if raw["precision"] not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {raw['precision']!r}"[:200])
        return EngineHeader(
            spec=ModelSpec.from_json(json.dumps(raw["spec"])),
            tensorrt_flavour=flavour,
            tensorrt_version=str(raw["tensorrt_version"]),
            device_name=None if name is None else str(name),
            compute_capability=capability,
            targets=targets,
            precision=str(raw["precision"]),
            onnx_sha256=str(raw["onnx_sha256"]),
            export=dict(export),
            build=dict(build),
            plan_offset=offset,
            plan_size=size - offset,
            raw=raw,
        )
    except (
        UnicodeDecodeError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        RecursionError,
        OverflowError,
        SpecError,
    ) as err:
        detail = f"missing {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise ModelFormatError(f"{path} has a damaged header ({detail[:300]}); rebuild the engine") from err


def read_plan(path: str | os.PathLike, header: EngineHeader | None = None) -> bytes:
    """The TensorRT plan bytes of an engine file (checked against the header's sha256)."""
    header = header or read_engine_header(path)
    with open(path, "rb") as f:
        f.seek(header.plan_offset)
        plan = f.read()
    if hashlib.sha256(plan).hexdigest() != header.raw.get("plan_sha256"):
        raise ModelFormatError(
            f"{path}: the plan does not match its header (truncated or modified); rebuild the engine"
        )
    return plan


def rebuild_hint(path: str | os.PathLike, header: EngineHeader) -> str:
    stem = Path(path).with_suffix("")
    return (
        f"rebuild it on this machine: retina-trt build-engine --onnx {stem}.{header.precision}.onnx "
        f"--output {path} (the prepared ONNX kept beside the engine), or from the weights with "
        f"--weights W.pt --precision {header.precision}"
    )


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def _cc(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


# long function: one check per header field against this machine, in the order users fix them
def check_engine_compatible(
    path: str | os.PathLike,
    header: EngineHeader,
    *,
    tensorrt_version: str,
    compute_capability: tuple[int, int],
    tensorrt_flavour: str = "tensorrt",
) -> None:
    """Refuse an engine that this TensorRT / GPU cannot run, saying how to rebuild it.

    An engine runs only under the TensorRT flavour that built it (TensorRT 10/11 and TensorRT-RTX
    plans are not interchangeable) and only on the version that built it, unless built
    version-compatible (then any later version of the same major). TensorRT 10/11 engines run on
    GPUs of the compute capability they were built on, unless built hardware-compatible
    (``ampere_plus``: compute capability 8.0 and later); TensorRT-RTX engines on the compute
    capabilities they were built for.
    """
    names = {"tensorrt": "TensorRT", "tensorrt_rtx": "TensorRT-RTX"}
    if header.tensorrt_flavour != tensorrt_flavour:
        flavours = {"tensorrt": "TensorRT 10/11", "tensorrt_rtx": "TensorRT-RTX"}
        package = (
            "tensorrt-rtx-cu13 (retina-trt[trt-rtx])"
            if header.tensorrt_flavour == "tensorrt_rtx"
            else "tensorrt (retina-trt[trt-cu12] or [trt-cu13])"
        )
        raise EngineMismatchError(
            f"{path} was built with {flavours[header.tensorrt_flavour]} {header.tensorrt_version}, and this is "
            f"{flavours.get(tensorrt_flavour, tensorrt_flavour)} {tensorrt_version}: run it where {package} is "
            "installed "
            f"(or set RETINA_TRT_TENSORRT={header.tensorrt_flavour}), or {rebuild_hint(path, header)}"
        )
    built, here = _version_tuple(header.tensorrt_version), _version_tuple(tensorrt_version)
    if header.build.get("version_compatible"):
        ok = built[:1] == here[:1] and here >= built
        rule = (
            f"a version-compatible {built[0]}.x engine needs TensorRT {header.tensorrt_version} or later {built[0]}.x"
        )
    else:
        ok = built == here
        rule = "a TensorRT engine runs only on the TensorRT version that built it"
    if not ok:
        raise EngineMismatchError(
            f"{path} was built with {names[header.tensorrt_flavour]} {header.tensorrt_version}, this is "
            f"{tensorrt_version} ({rule}); {rebuild_hint(path, header)}"
        )
    cc_here = tuple(compute_capability)
    if header.tensorrt_flavour == "tensorrt_rtx":
        ok = cc_here in header.targets
        rule = "a TensorRT-RTX engine runs on the compute capabilities it was built for: " + ", ".join(
            map(_cc, header.targets)
        )
        built_on = "for compute capability " + ", ".join(map(_cc, header.targets))
    else:
        level = header.build.get("hardware_compat", "none")
        cc_built = tuple(header.compute_capability or header.targets[0])
        built_on = f"on {header.device_name} (compute capability {_cc(cc_built)})"
        if level == "ampere_plus":
            ok, rule = (
                cc_here >= (8, 0),
                "a hardware-compatible (ampere_plus) engine needs compute capability 8.0 or later",
            )
            # PTX of the NMS plugin runs on later GPUs only as family PTX no newer than sm_80
            embedded = header.build.get("plugin_ptx")
            for kernel in embedded if isinstance(embedded, list) else []:
                target = str(kernel.get("target", "")) if isinstance(kernel, dict) else "unknown"
                if target.endswith("a") or target not in ("sm_75", "sm_80"):
                    ok, rule = (
                        False,
                        (
                            f"its NMS plugin embeds {target} PTX "
                            f"({kernel.get('entry') if isinstance(kernel, dict) else '?'}), which GPUs other than "
                            f"{target} cannot run, so it is not hardware-compatible"
                        ),
                    )
                    break
        else:
            ok, rule = cc_here == cc_built, "an engine runs only on GPUs of the compute capability it was built for"
    if not ok:
        raise EngineMismatchError(
            f"{path} was built {built_on}, this GPU is {_cc(cc_here)} ({rule}); {rebuild_hint(path, header)}"
        )
