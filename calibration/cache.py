"""The precision cache: prepared (FP16 / INT8) ONNX models stored under the key they were made from.

Calibration is the slow step of an engine build, and its result depends only on the source ONNX,
the calibration tensors, the method and the tools. An entry is ``<key>.onnx`` plus ``<key>.json``
(the key's fields and the stored model's sha256). An entry is reused only when its record matches
the key exactly and the stored file still has the recorded hash; otherwise the model is rebuilt
and the log says why (what differs from the entries cached for the same model, or that an entry
was damaged or foreign).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retina_trt._version import __version__
from retina_trt.utils import atomic_path, cache_root

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$RETINA_TRT_CACHE/precision``, else ``~/.cache/retina_trt/precision``."""
    return cache_root() / "precision"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes a prepared model."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"retina_trt": __version__}
    for dist in ("nvidia-modelopt", "onnxruntime-gpu", "onnxruntime", "onnx"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return versions


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def describe_difference(wanted: dict[str, Any], cached: dict[str, Any]) -> str:
    """``"calib_sha256 (ab12.. -> cd34..), tools.onnx (1.20.0 -> 1.21.0)"``."""
    a, b = _flatten(cached), _flatten(wanted)
    parts = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            old, new = (str(v)[:12] if v is not None else "none" for v in (a.get(key), b.get(key)))
            parts.append(f"{key} ({old} -> {new})")
    return ", ".join(parts)


@dataclass(frozen=True)
class PrecisionCache:
    """A folder of prepared models (see the module docstring)."""

    root: Path

    @staticmethod
    def key_name(key: dict[str, Any]) -> str:
        blob = json.dumps({"cache_format": CACHE_FORMAT, **key}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def _paths(self, key: dict[str, Any]) -> tuple[Path, Path]:
        name = self.key_name(key)
        return self.root / f"{name}.onnx", self.root / f"{name}.json"

    def lookup(self, key: dict[str, Any]) -> Path | None:
        """The cached model for ``key``, or None (with the reason logged)."""
        model, record_path = self._paths(key)
        if record_path.is_file() and model.is_file():
            try:
                record = json.loads(record_path.read_text())
            except (OSError, ValueError, RecursionError) as err:
                logger.warning("precision cache: unreadable record %s (%s); rebuilding", record_path, err)
                return None
            if not isinstance(record, dict) or not isinstance(record.get("key"), dict):
                logger.warning("precision cache: record %s is not a retina_trt cache record; rebuilding", record_path)
                return None
            if record.get("key") != key:
                logger.warning(
                    "precision cache: %s does not belong to this key (differs in %s); rebuilding",
                    record_path.name,
                    describe_difference(key, record.get("key") or {}),
                )
                return None
            if file_sha256(model) != record.get("model_sha256"):
                logger.warning("precision cache: %s was modified or damaged (sha256 mismatch); rebuilding", model)
                return None
            logger.info("precision cache: reusing %s", model)
            return model
        reasons = []
        for other in sorted(self.root.glob("*.json")) if self.root.is_dir() else []:
            try:
                cached = json.loads(other.read_text())
            except (OSError, ValueError, RecursionError):
                continue
            cached = cached.get("key") if isinstance(cached, dict) else None
            if not isinstance(cached, dict):
                continue
            if cached.get("onnx_sha256") == key.get("onnx_sha256") and cached.get("precision") == key.get("precision"):
                reasons.append(describe_difference(key, cached))
        if reasons:
            logger.info(
                "precision cache: rebuilding; the cached %s model(s) of this ONNX differ in: %s",
                key.get("precision"),
                "; ".join(reasons),
            )
        else:
            logger.info("precision cache: nothing cached for this model and data; building")
        return None

    def store(self, key: dict[str, Any], source: Path) -> Path | None:
        """Copy ``source`` into the cache under ``key`` (atomically) and return the entry; None
        (warned) when the cache cannot be written: the work is not lost for it."""
        model, record_path = self._paths(key)
        try:
            with atomic_path(model) as tmp:
                shutil.copyfile(source, tmp)
            record = {"key": key, "model_sha256": file_sha256(model)}
            with atomic_path(record_path) as tmp:
                tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        except OSError as err:
            logger.warning(
                "precision cache %s cannot be written (%s); the prepared model is kept without it",
                self.root,
                err.strerror or err,
            )
            return None
        return model
