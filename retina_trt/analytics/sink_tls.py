"""TLS for the broker sinks (``mqtts://``, ``rediss://``): the client context and the failures
that will not heal by themselves.

The server's certificate is always verified, host name included: against the CA file the user
gives (``--events-ca``), or else the system's trust store. A client certificate
(``--events-cert``, ``--events-key``) is presented to brokers that require one (mutual TLS). A
certificate that does not verify, or a TLS client talking to a plain port, is a configuration
error: the sink fails for good and the run stops with exit 2 (docs/failure-behaviour.md), like
refused credentials.
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
    "certificate required": "the broker requires a client certificate (--events-cert, --events-key)",
    "certificate_required": "the broker requires a client certificate (--events-cert, --events-key)",
    "wrong_version_number": "the server does not speak TLS on this port (a plain port?)",
    "wrong version number": "the server does not speak TLS on this port (a plain port?)",
    "record layer failure": "the server does not speak TLS on this port (a plain port?)",
    "packet length too long": "the server does not speak TLS on this port (a plain port?)",
}


def tls_context(
    ca_file: str | Path | None, cert_file: str | Path | None = None, key_file: str | Path | None = None
) -> ssl.SSLContext:
    """A client context verifying the server against ``ca_file`` (PEM), or the system's store;
    with ``cert_file`` (and ``key_file``, unless the key is in it), presenting that client
    certificate to brokers that require one (mutual TLS).

    Raises:
        ValueError: a file that is missing, or not what it should be.
    """
    for flag, given in (("--events-ca", ca_file), ("--events-cert", cert_file), ("--events-key", key_file)):
        if given is not None and not Path(given).is_file():
            raise ValueError(f"{flag} {str(given)!r}: no such file; give a PEM file")
    if key_file is not None and cert_file is None:
        raise ValueError("--events-key needs --events-cert (the client certificate it belongs to)")
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (ssl.SSLError, OSError, ValueError) as err:
        raise ValueError(
            f"--events-ca {str(ca_file)!r}: not a PEM certificate file ({err}); give the CA's certificate in PEM"
        ) from err
    if cert_file is not None:
        try:
            context.load_cert_chain(str(cert_file), None if key_file is None else str(key_file))
        except (ssl.SSLError, OSError, ValueError) as err:
            raise ValueError(
                f"--events-cert {str(cert_file)!r}: not a PEM certificate with its private key ({err}); "
                "give the client certificate and, with --events-key, its key"
            ) from err
    return context


def tls_hint(err: BaseException, has_client_cert: bool) -> str:
    """What a TLS connection's failure that may heal (a broker restarting) may also mean."""
    if isinstance(err, ConnectionResetError) or "handshake" in str(err.__context__):
        return " (no TLS handshake: is this port a plain, non-TLS one?)"
    if not has_client_cert and ("CONNACK" in str(err) or "EOF occurred" in str(err)):
        return " (closed after the TLS handshake: does the broker require a client certificate, --events-cert?)"
    return ""


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
