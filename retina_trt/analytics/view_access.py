"""Who may read the live view, and how many at once.

* **Host header** (DNS rebinding): a page on another site can make the user's browser send
  requests to 127.0.0.1 under the site's own name; the view answers only requests whose ``Host``
  is an IP address, ``localhost``, or a name the user lists (``--view-allow-host``), else 403.
* **Token**: with a token (``RETINA_TRT_VIEW_TOKEN`` or ``--view-token-file``, never the command
  line, where other users see it), every request needs it: ``Authorization: Bearer TOKEN``, or
  ``?token=TOKEN`` once, after which an HttpOnly, SameSite=Strict cookie carries it; else 401.
* **Clients**: at most ``max_streams`` MJPEG viewers at once (503 beyond); a viewer that stops
  reading is disconnected after ``send_timeout_s`` (each holds one frame at a time, the one being
  sent); a reset or a time-out is one quiet log line, never a traceback.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import socket
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

logger = logging.getLogger(__name__)

TOKEN_ENV = "RETINA_TRT_VIEW_TOKEN"
COOKIE = "retina_trt_view"
MAX_STREAMS = 16
SEND_TIMEOUT_S = 10.0


def read_token(path: str | os.PathLike | None) -> str | None:
    """The view's token: ``path``'s first line, else ``$RETINA_TRT_VIEW_TOKEN``, else None.

    Raises:
        ValueError: the file is missing, empty, or the token is shorter than 16 characters.
    """
    if path is not None:
        try:
            lines = Path(path).read_text().strip().splitlines()
        except OSError as err:
            raise ValueError(f"--view-token-file {path}: cannot read it ({err.strerror or err})") from err
        token = lines[0].strip() if lines else ""
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < 16:
        raise ValueError("the live view's token must be at least 16 characters (e.g. `openssl rand -hex 16`)")
    return token


class ViewAccess:
    """The checks of one view (module docstring): ``check(handler)`` -> None when allowed, else
    (status, message); ``cookie(handler)`` the Set-Cookie value to send, if any."""

    def __init__(self, allowed_hosts=(), token: str | None = None) -> None:
        self.allowed = {"localhost", *(h.strip().lower() for h in allowed_hosts if h.strip())}
        self.token = token

    def check(self, handler) -> tuple[int, str] | None:
        if not self.host_allowed(handler.headers.get("Host", "")):
            return (
                403,
                "this host name is not allowed: open the view by its address, or list the name (--view-allow-host)",
            )
        if self.token is not None and not self._has_token(handler):
            return 401, "this view needs its token: open it once as /?token=TOKEN"
        return None

    def host_allowed(self, host: str) -> bool:
        name = _host_name(host)
        if not name:
            return False
        if name in self.allowed:
            return True
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False

    def cookie(self, handler) -> str | None:
        """The cookie to set when the token came in the query."""
        if self.token is not None and self._query_token(handler) == self.token:
            return f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
        return None

    def _has_token(self, handler) -> bool:
        given = []
        auth = handler.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given.append(auth[len("Bearer ") :].strip())
        for part in handler.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                given.append(value)
        given.append(self._query_token(handler) or "")
        return any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given if g)

    @staticmethod
    def _query_token(handler) -> str | None:
        query = handler.path.split("?", 1)[1] if "?" in handler.path else ""
        return (parse_qs(query).get("token") or [None])[0]


def _host_name(host: str) -> str:
    """``Host`` without its port, lower-case; IPv6 brackets removed."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def warn_if_exposed(host: str, token: str | None) -> str | None:
    """The warning to print when the view listens beyond this machine without a token."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback or token is not None:
        return None
    return (
        f"warning: the live view on {host} is open to the network without a password: anyone who can reach it "
        f"sees the cameras; set ${TOKEN_ENV} or --view-token-file to require a token"
    )


class ViewServer(ThreadingHTTPServer):
    """The view's HTTP server: threads per request, a cap on MJPEG viewers, quiet disconnects."""

    daemon_threads = True

    def __init__(self, address, handler, *, max_streams: int = MAX_STREAMS, send_timeout_s: float = SEND_TIMEOUT_S):
        super().__init__(address, handler)
        self.streams = threading.BoundedSemaphore(max_streams)
        self.send_timeout_s = float(send_timeout_s)
        self.quiet_errors = 0

    def handle_error(self, request, client_address) -> None:
        """A viewer that went away (reset, broken pipe, time-out) is one debug line; anything
        else one warning line, never a traceback on the user's terminal."""
        import sys

        err = sys.exc_info()[1]
        self.quiet_errors += 1
        if isinstance(err, (ConnectionError, socket.timeout, TimeoutError)):
            logger.debug("view: %s left (%s)", client_address[0], type(err).__name__)
        else:
            logger.warning("view: request from %s failed: %s: %s", client_address[0], type(err).__name__, err)
