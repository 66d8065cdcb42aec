"""A Detector backend that is a client of a Triton Inference Server (scale-out).

``Detector("grpc://host:8001/retina")`` or ``Detector("http://host:8000/retina")``: decoding,
preprocessing, streams and analytics stay on this machine; the network runs on the server. The
model's ModelSpec and export record come from the server's model config, whose ``parameters``
``retina-trt export-triton`` writes (``retina_trt.spec``, ``retina_trt.export``), so the client
preprocesses and maps boxes back exactly as a local Detector does. Frames go as uint8 (the
``images`` tensor, NHWC BGR) with ``image_sizes``.

Server faults: every request has an overall deadline (``timeout_s``): gRPC's own, and for HTTP a
gevent timeout around the whole call, since the HTTP client's time-out is per socket read and a
server sending one byte at a time would never trip it. So a stopped, hung or trickling server
never hangs the caller; a failed request raises :class:`~retina_trt.errors.BackendError` naming the
server and the reason, and is counted by reason in ``errors``; the next request reconnects (the
clients open a new connection), so a restarted server is used again without a new Detector.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np

from retina_trt.contract import CONTRACT_OUTPUTS, ExportInfo, RawDetections
from retina_trt.errors import BackendError, BackendUnavailableError, ModelFormatError
from retina_trt.image import PreprocessedBatch
from retina_trt.runtime.backend import outputs_to_detections
from retina_trt.spec import ModelSpec

logger = logging.getLogger(__name__)

SCHEMES = ("grpc", "http")
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}


def is_server_url(model: Any) -> bool:
    """``grpc://`` or ``http://`` model locations (a Triton server), not files."""
    return isinstance(model, str) and model.split("://", 1)[0].lower() in SCHEMES and "://" in model


def parse_url(url: str) -> tuple[str, str, str, str]:
    """``grpc://host:8001/name[/version]`` -> (scheme, host:port, name, version or "")."""
    parts = urlparse(url)
    scheme = parts.scheme.lower()
    path = [p for p in parts.path.split("/") if p]
    if scheme not in SCHEMES or not parts.hostname or not 1 <= len(path) <= 2:
        raise ValueError(f"a Triton model URL is grpc://HOST[:PORT]/MODEL[/VERSION] or http://...; got {url!r}")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as err:
        raise ValueError(f"bad port in {url!r}: {err}") from err
    return scheme, f"{parts.hostname}:{port}", path[0], path[1] if len(path) == 2 else ""


@dataclass(frozen=True, kw_only=True)
class TritonOptions:
    """The Triton client's options: ``Detector(url, options=TritonOptions(timeout_s=5))``.

    Attributes:
        timeout_s: the deadline of each request, in seconds.
    """

    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < float(self.timeout_s) <= 3600:
            raise ValueError(f"timeout_s must be in (0, 3600], got {self.timeout_s}")


class TritonBackend:
    """The model ``name`` of a Triton server, as a Detector backend (module docstring)."""

    name = "triton"

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.scheme, self.address, self.model, self.version = parse_url(url)
        if not 0 < float(timeout_s) <= 3600:
            raise ValueError(f"timeout_s must be in (0, 3600], got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.errors: Counter[str] = Counter()
        self._client_module, self._client = self._connect()
        config = self._config()
        self.spec, info = _spec_and_info(config, url)
        self.nms, self.input_size, self.float_input = info.nms, info.input_size, info.float_input
        self.input_names, self.output_names = list(info.inputs), list(CONTRACT_OUTPUTS)
        self.max_batch = int(config.get("max_batch_size") or 1)
        self.graph_precision = _parameters(config).get("retina_trt.precision", "fp32")
        self._outputs = [self._client_module.InferRequestedOutput(n) for n in self.output_names]

    @property
    def precision(self) -> str:
        return f"{self.graph_precision} (on the server)"

    def _connect(self):
        try:
            if self.scheme == "grpc":
                import tritonclient.grpc as module

                return module, module.InferenceServerClient(self.address)
            import tritonclient.http as module

            return module, module.InferenceServerClient(
                self.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
            )
        except ImportError as err:
            raise BackendUnavailableError(
                'a Triton server model needs the Triton client: pip install "tritonclient[grpc,http]"'
            ) from err

    def _config(self) -> dict:
        try:
            if self.scheme == "grpc":
                return self._client.get_model_config(
                    self.model, self.version, as_json=True, client_timeout=self.timeout_s
                )["config"]
            with self._deadline():
                return self._client.get_model_config(self.model, self.version)
        except Exception as err:  # the clients' own exception types
            raise BackendUnavailableError(
                f"cannot read model {self.model!r} from the Triton server at {self.address} ({self.scheme}): "
                f"{_reason(err)}; is the server up and the model loaded (retina-trt serve / export-triton)?"
            ) from err

    def run(self, batch: PreprocessedBatch) -> list[RawDetections]:
        module = self._client_module
        pixels = batch.pixels.astype(np.float32) if self.float_input else np.ascontiguousarray(batch.pixels)
        tensors = {
            "images": (pixels, "FP32" if self.float_input else "UINT8"),
            "image_sizes": (batch.image_sizes.astype(np.int32), "INT32"),
        }
        inputs = []
        for name in self.input_names:
            data, dtype = tensors[name]
            tensor = module.InferInput(name, list(data.shape), dtype)
            tensor.set_data_from_numpy(data)
            inputs.append(tensor)
        started = time.perf_counter()
        try:
            if self.scheme == "grpc":
                result = self._client.infer(
                    self.model, inputs, model_version=self.version, outputs=self._outputs, client_timeout=self.timeout_s
                )
            else:
                with self._deadline():
                    result = self._client.infer(self.model, inputs, model_version=self.version, outputs=self._outputs)
        except Exception as err:  # counted by reason; the next request reconnects
            reason = _reason(err)
            self.errors[reason.split(":")[0][:80]] += 1
            self._reconnect()  # a fresh channel / connection pool for the next request
            raise BackendError(
                f"Triton server {self.address} ({self.model}): {reason} after {time.perf_counter() - started:.1f} s"
            ) from err
        return outputs_to_detections([result.as_numpy(n) for n in self.output_names], self.nms, self.spec)

    def _deadline(self):
        """The whole HTTP call within ``timeout_s`` (the client is gevent's: its sockets yield)."""
        import gevent

        return gevent.Timeout(self.timeout_s, TimeoutError(f"no complete answer within {self.timeout_s:g} s"))

    def _reconnect(self) -> None:
        """Drop the client after a failure: gRPC's channel would otherwise wait out its own
        reconnect backoff (seconds) after the server is back."""
        old = self._client
        self._client_module, self._client = self._connect()
        try:
            old.close()
        except Exception:  # closing a client whose server is gone
            pass

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a client whose server is gone
            pass


def _parameters(config: dict) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


def _spec_and_info(config: dict, url: str) -> tuple[ModelSpec, ExportInfo]:
    params = _parameters(config)
    if "retina_trt.spec" not in params or "retina_trt.export" not in params:
        raise ModelFormatError(
            f"{url}: the model's config carries no retina_trt spec (parameters retina_trt.spec / retina_trt.export); "
            "write its repository with retina-trt export-triton"
        )
    try:
        spec = ModelSpec.from_json(params["retina_trt.spec"])
        info = ExportInfo.from_record(json.loads(params["retina_trt.export"]), require_batch=False)
    except (ValueError, TypeError, KeyError) as err:
        raise ModelFormatError(f"{url}: the model's retina_trt parameters are damaged: {err}") from err
    if tuple(info.outputs) != tuple(CONTRACT_OUTPUTS):
        raise ModelFormatError(f"{url}: the served model's outputs are {list(info.outputs)}, not the output contract")
    return spec, info


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{type(err).__name__}: {text}"[:300]
