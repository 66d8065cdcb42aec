"""The compiled-model cache of the OpenVINO backend: a second start imports, never recompiles.

OpenVINO's own ``CACHE_DIR`` was measured and not used: it loads a blob whose middle was
overwritten without noticing (wrong weights, no error). Here each entry is
``<key>.blob`` (OpenVINO's ``export_model``) beside ``<key>.sha256`` (its digest), where the key
hashes the ONNX file's content, the OpenVINO version and every compile option (precision hint,
performance hint, threads). A changed model, OpenVINO or option never finds an old entry; an entry
whose digest does not match, or that OpenVINO refuses to import, is deleted and recompiled. Both
files are written under temporary names and renamed. An unwritable folder is warned about once,
and the backend runs without a cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from retina_trt.utils import atomic_path, cache_root

logger = logging.getLogger(__name__)

_warned: set[str] = set()
_file_digests: dict[tuple[str, int, int], str] = {}


def _warn_once(folder: Path, message: str, *args) -> None:
    if str(folder) not in _warned:
        _warned.add(str(folder))
        logger.warning(message, *args)


def file_digest(path: Path) -> str:
    """sha256 of a file's content (remembered per path, size and mtime in this process)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_digests:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _file_digests[key] = digest.hexdigest()
    return _file_digests[key]


def usable_folder(folder: Path) -> bool:
    """True when ``folder`` can be created and written (else warned about once)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as err:
        _warn_once(
            folder,
            "OpenVINO compiled-model cache %s is not writable (%s); compiling without a cache",
            folder,
            err.strerror or err,
        )
        return False
    return True


class CompiledModelCache:
    """Entries in ``folder`` (default ``$RETINA_TRT_CACHE/openvino``); see the module docstring."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder) if folder is not None else cache_root() / "openvino"

    def key(self, model_path: Path, openvino_version: str, config: dict[str, Any]) -> str:
        record = {"onnx": file_digest(model_path), "openvino": openvino_version, "config": config}
        return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:40]

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.blob", self.folder / f"{key}.sha256"

    def load(self, core, key: str, config: dict[str, Any]):
        """The compiled model of ``key``, or None (missing, damaged or refused: then deleted)."""
        blob, digest = self._paths(key)
        try:
            data, want = blob.read_bytes(), digest.read_text().strip()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != want:
            logger.warning("OpenVINO cache entry %s is damaged (digest mismatch); recompiling", blob.name)
            self._remove(key)
            return None
        try:
            return core.import_model(data, "CPU", config)
        except Exception as err:  # OpenVINO's own error types for blobs it refuses
            logger.warning(
                "OpenVINO refused cache entry %s (%s); recompiling", blob.name, str(err).splitlines()[0][:200]
            )
            self._remove(key)
            return None

    def store(self, compiled, key: str) -> None:
        """Write ``compiled`` under ``key`` (blob first, digest last: a half entry never loads)."""
        if not usable_folder(self.folder):
            return
        blob, digest = self._paths(key)
        try:
            data = compiled.export_model().getvalue()
            with atomic_path(blob) as tmp:
                tmp.write_bytes(data)
            with atomic_path(digest) as tmp:
                tmp.write_text(hashlib.sha256(data).hexdigest() + "\n")
        except OSError as err:  # a full disk: run on, uncached
            _warn_once(
                self.folder,
                "cannot write OpenVINO cache entry in %s (%s); running without it",
                self.folder,
                err.strerror or err,
            )
            self._remove(key)

    def _remove(self, key: str) -> None:
        for path in self._paths(key):
            with contextlib.suppress(OSError):
                path.unlink()
