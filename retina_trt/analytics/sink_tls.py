"""TLS for the broker sinks (``mqtts://``, ``rediss://``): the client context and the failures
that will not heal by themselves.

The server's certificate is always verified, host name included: against the CA file the user
gives (``--events-ca``), or else the system's trust store. A certificate that does not verify, or
a TLS client talking to a plain port, is a configuration error: the sink fails for good and the
run stops with exit 2 (docs/failure-behaviour.md), like refused credentials.
"""

from __future__ import annotations

import ssl
from pathlib import Path

TLS_SCHEMES = {"mqtts": "mqtt", "rediss": "redis"}
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "redis": 6379, "rediss": 6379}

# words in the errors of ssl, paho and redis-py that mean "this will fail the same way next time"
_CONFIG_ERRORS = {
    "certificate_verify_failed": "the server's certificate did not verify",
    "certificate verify failed": "the server's certificate did not verify",
    "hostname mismatch": "the server's certificate is for another host name",
    "wrong_version_number": "the server does not speak TLS on this port (a plain port?)",
    "wrong version number": "the server does not speak TLS on this port (a plain port?)",
    "record layer failure": "the server does not speak TLS on this port (a plain port?)",
    "packet length too long": "the server does not speak TLS on this port (a plain port?)",
}


def tls_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """A client context verifying the server against ``ca_file`` (PEM), or the system's store.

    Raises:
        ValueError: ``ca_file`` is missing, not a file, or holds no certificate.
    """
    if ca_file is None:
        return ssl.create_default_context()
    path = Path(ca_file)
    if not path.is_file():
        raise ValueError(f"--events-ca {str(ca_file)!r}: no such file; give the PEM file of the brokers' CA")
    try:
        return ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as err:
        raise ValueError(
            f"--events-ca {str(ca_file)!r}: not a PEM certificate file ({err}); give the CA's certificate in PEM"
        ) from err


def tls_config_error(err: BaseException) -> str | None:
    """Why ``err`` (or an error it wraps) is a TLS set-up that retrying cannot fix, else None."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, ssl.SSLCertVerificationError):
            return f"the server's certificate did not verify ({err.verify_message}); give its CA with --events-ca"
        text = str(err).lower()
        for words, reason in _CONFIG_ERRORS.items():
            if words in text:
                return f"{reason} ({err})"
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None
