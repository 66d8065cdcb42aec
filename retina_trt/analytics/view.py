"""The live view: annotated frames as one MJPEG stream per source and a small status page.

  http://127.0.0.1:PORT/                 the page: every source's stream, fps, counts, latest events
  http://127.0.0.1:PORT/stream/<id>.mjpg multipart/x-mixed-replace JPEG frames of one source
  http://127.0.0.1:PORT/status.json      what the page shows, as JSON

``publish`` only keeps a reference to the newest frame of each source (older ones are dropped,
never queued), so the view cannot slow the analytics; frames are drawn and encoded in the
server's threads, only while someone watches, with each source's lines and zones and their
counts over the tracked boxes (``analytics.overlay``). It binds to 127.0.0.1 unless given a host.
"""

from __future__ import annotations

import collections
import html
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import cv2
import numpy as np

from retina_trt.analytics.overlay import draw_geometry
from retina_trt.errors import RetinaTrtError

logger = logging.getLogger(__name__)

BOUNDARY = "retinatrtframe"
MAX_EVENTS = 20


class ViewError(RetinaTrtError):
    """The view could not start (the port is in use, or the address is not this machine's)."""


class _Slot:
    """The newest frame of one source and a sequence number that viewers wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seq = 0
        self.item = None
        self.jpeg: tuple[int, bytes] | None = None  # (seq, bytes), encoded once per frame

    def put(self, item) -> None:
        with self.cond:
            self.item, self.seq = item, self.seq + 1
            self.cond.notify_all()

    def wait_newer(self, seq: int, timeout: float) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.seq > seq, timeout=timeout)
            return self.seq

    def encoded(self, draw) -> bytes | None:
        with self.cond:
            item, seq, cached = self.item, self.seq, self.jpeg
        if item is None:
            return None
        if cached is not None and cached[0] == seq:
            return cached[1]
        ok, data = cv2.imencode(".jpg", draw(*item), [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return None
        with self.cond:
            self.jpeg = (seq, data.tobytes())
        return self.jpeg[1]


class LiveView:
    """The view server (see the module docstring). ``publish``/``status`` feed it; ``close`` stops it."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", overlay=draw_geometry) -> None:
        self._slots: dict[str, _Slot] = collections.defaultdict(_Slot)
        self._status: dict[str, dict] = {}
        self._events: collections.deque = collections.deque(maxlen=MAX_EVENTS)
        self._lock = threading.Lock()
        self._overlay = overlay
        self._closed = threading.Event()
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"the live view needs a port number in 0..65535 (0: any free port), got {port!r}")
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler())
        except OSError as err:
            raise ViewError(
                f"the live view cannot listen on {host}:{port} ({err.strerror or err}); "
                "pick another port with --view PORT"
            ) from err
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="live view", daemon=True)
        self._thread.start()

    # -- fed by the analytics loop
    def publish(self, source_id: str, frame: np.ndarray, tracked, extra=None) -> None:
        """The newest frame of a source with its tracked detections (a reference, never a copy)."""
        self._slots[source_id].put((frame, tracked, extra))

    def status(self, source_id: str, info: dict) -> None:
        with self._lock:
            self._status[source_id] = info

    def event(self, event: dict) -> None:
        with self._lock:
            self._events.append(event)

    def close(self) -> None:
        self._closed.set()
        for slot in list(self._slots.values()):
            slot.put(slot.item)  # wake the streaming handlers
        self._server.shutdown()
        self._server.server_close()

    # -- drawing and serving
    def _draw(self, frame: np.ndarray, tracked, extra) -> np.ndarray:
        canvas = tracked.draw(frame) if tracked is not None and len(tracked) else frame.copy()
        return self._overlay(canvas, extra) if self._overlay is not None and extra is not None else canvas

    def _snapshot(self) -> dict:
        with self._lock:
            return {"sources": dict(self._status), "events": list(self._events), "time": round(time.time(), 3)}

    def _handler(self):
        view = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # the library never prints
                logger.debug("view: " + fmt, *args)

            def do_GET(self):
                path = unquote(self.path.split("?", 1)[0])
                if path == "/":
                    return self._send(200, "text/html; charset=utf-8", _page(view._snapshot()).encode())
                if path == "/status.json":
                    return self._send(200, "application/json", json.dumps(view._snapshot()).encode())
                if path.startswith("/stream/") and path.endswith(".mjpg"):
                    source = path[len("/stream/") : -len(".mjpg")]
                    if source in view._slots:
                        return self._stream(view._slots[source])
                return self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, slot: _Slot) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seq = 0
                try:
                    while not view._closed.is_set():
                        seq = slot.wait_newer(seq, timeout=1.0)
                        data = slot.encoded(view._draw)
                        if data is None:
                            continue
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                        )
                        self.wfile.write(data + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return

        return Handler


def _page(snapshot: dict) -> str:
    """The status page: a stream per source and a table refreshed from /status.json four times a
    second (so it trails the counts drawn on the frames by about 0.25 s at most)."""
    streams = "".join(
        f'<figure><img src="/stream/{html.escape(s)}.mjpg" alt="{html.escape(s)}">'
        f"<figcaption>{html.escape(s)}</figcaption></figure>"
        for s in snapshot["sources"]
    )
    return _PAGE.replace("{{streams}}", streams)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>retina-trt live view</title>
<style>
body { font-family: sans-serif; margin: 1em; background: #f6f6f6; }
figure { display: inline-block; margin: 0 1em 1em 0; }
img { border: 1px solid #888; max-width: 48vw; }
table { border-collapse: collapse; margin-bottom: 1em; }
td, th { border: 1px solid #bbb; padding: 2px 8px; font-size: 14px; }
#events { font-family: monospace; font-size: 12px; white-space: pre; }
</style></head>
<body>
<h2>retina-trt live view</h2>
<div id="streams">{{streams}}</div>
<table id="status"><thead><tr><th>source</th><th>state</th><th>fps</th><th>frames</th><th>counts</th></tr></thead>
<tbody></tbody></table>
<h3>latest events</h3><div id="events"></div>
<script>
const esc = t => String(t ?? '').replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
async function refresh() {
  try {
    const s = await (await fetch('/status.json', {cache: 'no-store'})).json();
    const rows = Object.entries(s.sources).map(([id, v]) =>
      `<tr><td>${esc(id)}</td><td>${esc(v.state)}</td><td>${esc(v.fps)}</td><td class="frames">${esc(v.frames)}</td>` +
      `<td class="counts">${esc(JSON.stringify(v.counts ?? {}))}</td></tr>`);
    document.querySelector('#status tbody').innerHTML = rows.join('');
    document.getElementById('events').textContent = s.events.slice().reverse().map(e => JSON.stringify(e)).join('\\n');
    const have = new Set([...document.querySelectorAll('#streams img')].map(i => i.alt));
    for (const id of Object.keys(s.sources)) if (!have.has(id)) {
      const f = document.createElement('figure');
      const img = document.createElement('img'); img.src = '/stream/' + encodeURIComponent(id) + '.mjpg'; img.alt = id;
      const c = document.createElement('figcaption'); c.textContent = id;
      f.append(img, c); document.getElementById('streams').append(f);
    }
  } catch (e) { /* the run ended: keep the last state */ }
}
refresh(); setInterval(refresh, 250);
</script></body></html>
"""
