"""Where analytics events go: a JSONL file, an MQTT broker (paho-mqtt) or a Redis stream
(redis-py, ``XADD``), chosen by a URL.

  events.jsonl | file:///path/events.jsonl   JSON lines, written under a temporary name and
                                             renamed when the sink closes
  mqtt://[user:password@]host:1883/topic     one message per event, QoS 1 (at least once)
  redis://[user:password@]host:6379/stream   one stream entry per event, field ``event``
  mqtts://host:8883/topic, rediss://host/s   the same over TLS (sink_tls.py): the server's
                                             certificate verified against ``ca_file`` or the
                                             system's trust store

Credentials come from the URL, or else from ``RETINA_TRT_MQTT_USERNAME`` / ``_PASSWORD`` and
``RETINA_TRT_REDIS_USERNAME`` / ``_PASSWORD``; a broker that refuses them makes the sink fail for
good (``fatal``, all its events dropped) and the run stop with exit 2, since retrying cannot help;
so does a TLS set-up that cannot work (a certificate that does not verify, a plain port).

``emit`` never blocks the analytics: broker sinks put the event in a bounded buffer that a
background thread sends in order, reconnecting with backoff when the broker goes away. An event
is either delivered (the broker acknowledged it) or counted in ``dropped`` (the buffer was full:
the oldest event is dropped first); ``stats()`` says which.
"""

from __future__ import annotations

import collections
import importlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from retina_trt.analytics.sink_tls import DEFAULT_PORTS, TLS_SCHEMES, tls_config_error, tls_context, tls_hint
from retina_trt.io.sources import mask_credentials
from retina_trt.io.writers import ExclusiveLock, JsonlOutput
from retina_trt.utils import check_output_file, refuse_overwrite

logger = logging.getLogger(__name__)

DEFAULT_BUFFER = 10_000
BACKOFF_S = (0.05, 2.0)


class FileSink:
    """JSON lines in a file (the default), through the same writer as ``retina-trt detect``'s
    JSONL (``io/writers.JsonlOutput``): a temporary name until closed, only complete
    lines under the final name, no file when no event was written. A write that fails (a full
    disk) is counted as dropped, never raised into the analytics."""

    def __init__(self, path: str | Path, *, inputs=()) -> None:
        self.url = str(path)
        refuse_overwrite(path, inputs, "events file")
        final = check_output_file(path, "events file")
        self._lock_file = ExclusiveLock(
            final.parent / f".{final.name}.retina-trt.lock",
            f"another run is writing events to {final}; wait for it, or give another --events file",
        ).acquire()  # two runs into one file would replace each other's events
        self._out = JsonlOutput(final)
        self._lock = threading.Lock()
        self._dropped, self._last_error, self._closed = 0, None, False

    def emit(self, event: dict) -> None:
        with self._lock:
            if self._closed:
                self._dropped += 1
                return
            try:
                self._out.write(event)
            except OSError as err:
                if self._last_error is None:
                    logger.warning("event sink %s: cannot write (%s); counting events as dropped", self.url, err)
                self._dropped, self._last_error = self._dropped + 1, f"{type(err).__name__}: {err}"

    def stats(self) -> dict:
        return {
            "sink": self.url,
            "delivered": self._out.records,
            "dropped": self._dropped,
            "buffered": 0,
            "reconnects": 0,
            "connected": True,
            "last_error": self._last_error,
        }

    def close(self, timeout_s: float = 0.0) -> dict:
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._out.close()
                finally:
                    self._lock_file.release()
        return self.stats()


class BrokerSink:
    """A bounded buffer drained in order by one sender thread; subclasses connect and send to
    ``host:port``, topic or stream ``name``, with ``timeout_s`` per network wait; with ``tls``,
    over TLS verified against ``ca_file`` (PEM) or the system's trust store."""

    client_module = ""  # imported at construction, so a missing client fails here, not in the thread

    def __init__(
        self,
        url: str,
        host: str,
        port: int,
        name: str,
        *,
        buffer: int = DEFAULT_BUFFER,
        timeout_s: float = 2.0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
    ) -> None:
        if not 1 <= buffer <= 10_000_000:
            raise ValueError(f"buffer must be 1..10000000 events, got {buffer}")
        importlib.import_module(self.client_module)
        self.url = mask_credentials(url)  # as logged and reported: never a password
        self.host, self.port, self.name, self.timeout_s = host, port, name, timeout_s
        self.username, self.password = username, password
        self.tls = tls_context(ca_file, cert_file, key_file) if tls else None
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.fatal: str | None = None  # a failure that will not heal by itself (credentials refused)
        self._client = None
        self._queue: collections.deque = collections.deque()
        self._bound = buffer
        self._cond = threading.Condition()
        self._closing = False
        self._counts = {"delivered": 0, "dropped": 0, "reconnects": 0}
        self._connected = False
        self._in_flight = False
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"sink {self.url}", daemon=True)
        self._thread.start()

    # -- what subclasses provide
    def _connect(self) -> None:
        raise NotImplementedError

    def _send(self, payload: str) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    # -- the public side
    def emit(self, event: dict) -> None:
        """Queue one event (never blocks; the oldest queued event is dropped when full)."""
        payload = json.dumps(event)
        with self._cond:
            if self.fatal is not None:  # the broker refused us: nothing will be sent
                self._counts["dropped"] += 1
                return
            if len(self._queue) >= self._bound:
                if self._in_flight and len(self._queue) > 1:
                    del self._queue[1]  # the head is being sent: drop the next oldest
                else:
                    self._queue.popleft()
                self._counts["dropped"] += 1
            self._queue.append(payload)
            self._cond.notify()

    def stats(self) -> dict:
        with self._cond:
            return {
                "sink": self.url,
                **self._counts,
                "buffered": len(self._queue),
                "connected": self._connected,
                "last_error": self._last_error,
                "fatal": self.fatal,
            }

    def close(self, timeout_s: float = 5.0) -> dict:
        """Send what is buffered (up to ``timeout_s``), stop; what is left is counted as dropped."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue and self._connected and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=max(1.0, timeout_s))
        with self._cond:
            self._counts["dropped"] += len(self._queue)
            self._queue.clear()
        return self.stats()

    # -- the sender thread
    def _run(self) -> None:
        backoff = BACKOFF_S[0]
        while not self._closing:
            if not self._connected and not self._try_connect():
                self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])
                continue
            backoff = BACKOFF_S[0]
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait(0.5)
                if self._closing:
                    break
                payload, self._in_flight = self._queue[0], True
            try:
                self._send(payload)
            except Exception as err:
                with self._cond:
                    self._in_flight = False
                self._lost(err)
                continue
            with self._cond:
                self._queue.popleft()
                self._in_flight = False
                self._counts["delivered"] += 1
                self._cond.notify_all()
        self._safe_disconnect()

    def _try_connect(self) -> bool:
        try:
            self._connect()
        except Exception as err:
            reason = str(err) if isinstance(err, AuthError) else tls_config_error(err)
            if reason is None:
                return self._connect_failed(err)
            self._fail_for_good(reason)
            return False
        with self._cond:
            if self._last_error is not None:
                self._counts["reconnects"] += 1
                logger.warning("event sink %s: connected again", self.url)
            self._connected = True
        return True

    def _fail_for_good(self, reason: str) -> None:
        """Stop: retrying cannot help (credentials refused, TLS that cannot work); the run fails."""
        self.fatal = f"{self.url}: {reason}"
        logger.error("event sink %s", self.fatal)
        with self._cond:
            self._closing = True
            self._counts["dropped"] += len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        self._safe_disconnect()

    def _connect_failed(self, err: Exception) -> bool:
        error = f"{type(err).__name__}: {err}" + (tls_hint(err, self.cert_file is not None) if self.tls else "")
        if error != self._last_error:  # once per kind of failure, not once per retry
            logger.warning(
                "event sink %s: cannot connect (%s); buffering up to %d events and retrying",
                self.url,
                error,
                self._bound,
            )
        self._last_error = error
        self._safe_disconnect()
        return False

    def _lost(self, err: Exception) -> None:
        logger.warning("event sink %s: lost the broker (%s); buffering and reconnecting", self.url, err)
        with self._cond:
            self._connected = False
            self._last_error = f"{type(err).__name__}: {err}"
        self._safe_disconnect()

    def _safe_disconnect(self) -> None:
        try:
            self._disconnect()
        except Exception:
            logger.debug("event sink %s: disconnect failed", self.url, exc_info=True)

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            if not self._closing:
                self._cond.wait(seconds)


class MqttSink(BrokerSink):
    """Events published to an MQTT topic with QoS 1; delivered once the broker acknowledged."""

    client_module = "paho.mqtt.client"

    def _connect(self) -> None:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if self.username is not None or self.password is not None:
            client.username_pw_set(self.username or "", self.password)
        refused: list[str] = []
        client.on_connect = lambda _c, _u, _f, reason, _p: refused.append(str(reason)) if reason.is_failure else None
        if self.tls is not None:
            client.tls_set_context(self.tls)
        client.connect(self.host, self.port, keepalive=10)
        client.loop_start()
        deadline = time.monotonic() + self.timeout_s
        while not client.is_connected() and not refused and time.monotonic() < deadline:
            time.sleep(0.01)
        self._client = client
        if refused:
            words = refused[0]
            if "authori" in words.lower() or "password" in words.lower():
                raise AuthError(f"the broker refused the credentials ({words}); check the user and password")
            raise ConnectionError(f"the broker refused the connection ({words})")
        if not client.is_connected():
            raise ConnectionError(f"no CONNACK from {self.host}:{self.port} within {self.timeout_s} s")

    def _send(self, payload: str) -> None:
        info = self._client.publish(self.name, payload, qos=1)
        info.wait_for_publish(timeout=self.timeout_s)
        if not info.is_published():
            raise ConnectionError(f"no PUBACK within {self.timeout_s} s (rc {info.rc})")

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.loop_stop()
            client.disconnect()


class RedisSink(BrokerSink):
    """Events appended to a Redis stream (``XADD stream * event <json>``)."""

    client_module = "redis"

    def _connect(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),  # our sender thread retries, with its own backoff
            **self._tls_options(),
        )
        try:
            client.ping()
        except redis.AuthenticationError as err:
            client.close()
            if self.password is None:
                raise AuthError(
                    f"the server needs a password ({err}); give it in the URL or $RETINA_TRT_REDIS_PASSWORD"
                ) from err
            raise AuthError(f"the server refused the credentials ({err}); check the password") from err
        except redis.ResponseError as err:
            client.close()
            if "NOAUTH" in str(err) or "WRONGPASS" in str(err):
                raise AuthError(f"the server needs a password ({err}); give it in the URL or the environment") from err
            raise
        self._client = client

    def _tls_options(self) -> dict:
        if self.tls is None:
            return {}
        # redis-py builds its own context from these; tls_context checked the file already
        files = {"ssl_ca_certs": self.ca_file, "ssl_certfile": self.cert_file, "ssl_keyfile": self.key_file}
        return {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True, **files}

    def _send(self, payload: str) -> None:
        self._client.xadd(self.name, {"event": payload})

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class AuthError(ConnectionError):
    """The broker refused the credentials: retrying cannot help."""


def _credentials(parts, scheme: str) -> tuple[str | None, str | None]:
    """(user, password) from the URL, else from ``RETINA_TRT_<SCHEME>_USERNAME`` / ``_PASSWORD``
    (so a password need not appear on the command line)."""
    if parts.username is not None or parts.password is not None:
        return (unquote(parts.username) if parts.username else None), (
            unquote(parts.password) if parts.password is not None else None
        )
    prefix = f"RETINA_TRT_{scheme.upper()}_"
    return os.environ.get(prefix + "USERNAME") or None, os.environ.get(prefix + "PASSWORD") or None


def open_sink(
    url: str,
    *,
    buffer: int = DEFAULT_BUFFER,
    inputs=(),
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
):
    """The sink a URL names (see the module docstring); a file sink is never one of ``inputs``
    (the files the run reads) and its folder is checked before any work. ``ca_file`` verifies
    ``mqtts://`` and ``rediss://`` servers; ``cert_file`` (and ``key_file``) is the client
    certificate for brokers that require one.

    Raises:
        ValueError: a malformed URL (unknown scheme, no host, no port, no topic or stream), or a
            TLS file that is missing or not PEM.
        ImportError: the broker's client is not installed (names the extra).
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("events: expected a file path or a URL such as mqtt://host:1883/topic, got an empty value")
    if "://" not in url:
        return FileSink(url, inputs=inputs)
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FileSink(parts.path, inputs=inputs)
    port, name, protocol = _broker_address(url, parts)
    kind = MqttSink if protocol == "mqtt" else RedisSink
    username, password = _credentials(parts, protocol)
    tls = parts.scheme in TLS_SCHEMES
    try:
        return kind(
            url,
            parts.hostname,
            port,
            name,
            buffer=buffer,
            username=username,
            password=password,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        )
    except ImportError as err:
        client = "paho-mqtt" if protocol == "mqtt" else "redis"
        raise ImportError(f"events to {parts.scheme}:// need {client}: pip install 'retina-trt[analytics]'") from err


def _broker_address(url: str, parts) -> tuple[int, str, str]:
    """(port, topic or stream, ``mqtt`` or ``redis``) of a broker URL, or ValueError saying what
    is wrong with it."""
    shown = mask_credentials(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"events: unknown URL scheme {parts.scheme!r} in {shown!r}; use a file path, "
            "mqtt://host:1883/topic, redis://host:6379/stream or, over TLS, mqtts:// or rediss://"
        )
    try:
        port = parts.port
    except ValueError as err:
        raise ValueError(f"events: the port of {shown!r} is not a number in 0..65535") from err
    name = parts.path.lstrip("/") + ("#" + parts.fragment if "#" in url else "")  # '#' is MQTT's wildcard
    protocol = TLS_SCHEMES.get(parts.scheme, parts.scheme)
    if not parts.hostname or not name:
        what = "topic" if protocol == "mqtt" else "stream"
        raise ValueError(
            f"events: {shown!r} needs a host and a {what}, e.g. {parts.scheme}://localhost:"
            f"{DEFAULT_PORTS[parts.scheme]}/{what}"
        )
    if protocol == "mqtt" and ("#" in name or "+" in name):
        raise ValueError(
            f"events: MQTT topic {name!r} has a wildcard (# or +), which subscribers use; "
            "events are published to one topic: name it without wildcards"
        )
    return port or DEFAULT_PORTS[parts.scheme], name, protocol
