"""The live view: annotated frames as one MJPEG stream per source and a small status page.

  http://127.0.0.1:PORT/                 the page: every source's stream, fps, counts, latest events
  http://127.0.0.1:PORT/stream/<id>.mjpg multipart/x-mixed-replace JPEG frames of one source
  http://127.0.0.1:PORT/status.json      what the page shows, as JSON

``publish`` only keeps a reference to the newest frame of each source (older ones are dropped,
never queued), so the view cannot slow the analytics; frames are drawn and encoded in the
server's threads, only while someone watches, with each source's lines and zones and their
counts over the tracked boxes (``analytics.overlay``). It binds to 127.0.0.1 unless given a host;
who may read it (Host header, token) and how many viewers at once: ``analytics/view_access.py``.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote, unquote

import cv2
import numpy as np

from retina_trt.analytics.overlay import draw_geometry
from retina_trt.analytics.view_access import MAX_STREAMS, SEND_TIMEOUT_S, ViewAccess, ViewServer
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
        self._encoding = threading.Lock()  # one viewer encodes a frame; the others wait and share it

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
        with self._encoding:
            cached = self.jpeg
            if cached is not None and cached[0] == seq:  # another viewer encoded it meanwhile
                return cached[1]
            ok, data = cv2.imencode(".jpg", draw(*item), [cv2.IMWRITE_JPEG_QUALITY, 80])
            if not ok:
                return None
            with self.cond:
                self.jpeg = (seq, data.tobytes())
            return self.jpeg[1]


class LiveView:
    """The view server (see the module docstring). ``publish``/``status`` feed it; ``close`` stops it."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        overlay=draw_geometry,
        snapshots: str | Path | None = None,
        allowed_hosts=(),
        token: str | None = None,
        max_streams: int = MAX_STREAMS,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        if not str(host).strip():
            raise ValueError("the live view's host is empty; give an address (127.0.0.1: this machine only)")
        self.access = ViewAccess(allowed_hosts, token)
        self._snapshots = Path(snapshots).resolve() if snapshots is not None else None
        self._slots: dict[str, _Slot] = collections.defaultdict(_Slot)
        self._status: dict[str, dict] = {}
        self._events: collections.deque = collections.deque(maxlen=MAX_EVENTS)
        self._lock = threading.Lock()
        self._overlay = overlay
        self._closed = threading.Event()
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"the live view needs a port number in 0..65535 (0: any free port), got {port!r}")
        try:
            self._server = ViewServer(
                (host, port), self._handler(), max_streams=max_streams, send_timeout_s=send_timeout_s
            )
        except OSError as err:
            raise ViewError(
                f"the live view cannot listen on {host}:{port} ({err.strerror or err}); "
                "pick another port with --view PORT"
            ) from err
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
        if self._snapshots is not None and event.get("snapshot"):
            relative = _inside(self._snapshots, Path(event["snapshot"]))
            if relative is not None:
                event = {**event, "snapshot_url": "/snapshots/" + quote(relative.as_posix())}
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
        """The request handler class bound to this view."""
        return type("Handler", (_Handler,), {"view": self})


class _Handler(BaseHTTPRequestHandler):
    """Serves one view (``view``, set by ``LiveView._handler``): the page, its data, the
    snapshots and the streams, after the access checks."""

    view: LiveView

    def log_message(self, fmt, *args):  # the library never prints
        logger.debug("view: " + fmt, *args)

    def do_GET(self):
        denied = self.view.access.check(self)
        if denied is not None:
            return self._send(denied[0], "text/plain", (denied[1] + "\n").encode())
        path = unquote(self.path.split("?", 1)[0])
        if path == "/":
            page = _page(self.view._snapshot()).encode()
            return self._send(200, "text/html; charset=utf-8", page, cookie=self.view.access.cookie(self))
        if path == "/status.json":
            return self._send(200, "application/json", json.dumps(self.view._snapshot()).encode())
        if path.startswith("/snapshots/") and self.view._snapshots is not None:
            return self._file(self.view._snapshots, path[len("/snapshots/") :])
        if path.startswith("/stream/") and path.endswith(".mjpg"):
            source = path[len("/stream/") : -len(".mjpg")]
            if source in self.view._slots:
                return self._stream(self.view._slots[source])
        return self._send(404, "text/plain", b"not found\n")

    def _send(self, code: int, kind: str, body: bytes, cookie: str | None = None) -> None:
        self.send_response(code)
        if cookie is not None:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _file(self, folder: Path, relative: str) -> None:
        """A snapshot JPEG inside ``folder`` (nothing outside it, nothing else)."""
        target = folder / relative
        if _inside(folder, target) is None or target.suffix.lower() != ".jpg" or not target.is_file():
            return self._send(404, "text/plain", b"not found\n")
        return self._send(200, "image/jpeg", target.read_bytes())

    def _stream(self, slot: _Slot) -> None:
        if not self.server.streams.acquire(blocking=False):
            return self._send(503, "text/plain", b"too many viewers; try again later\n")
        try:
            self.connection.settimeout(self.server.send_timeout_s)  # a viewer that stops reading goes
            self._frames(slot)
        finally:
            self.server.streams.release()

    def _frames(self, slot: _Slot) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        seq = 0
        try:
            # each part is closed by the next boundary at once: browsers show a part only
            # when its end is known, and the last frame of an ended source must show too
            self.wfile.write(f"--{BOUNDARY}\r\n".encode())
            while not self.view._closed.is_set():
                seq = slot.wait_newer(seq, timeout=1.0)
                data = slot.encoded(self.view._draw)
                if data is None:
                    continue
                self.wfile.write(f"Content-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode())
                self.wfile.write(data)  # the shared frame itself: no copy per viewer
                self.wfile.write(f"\r\n--{BOUNDARY}\r\n".encode())
                self.wfile.flush()
        except (ConnectionError, TimeoutError, OSError):  # the viewer left or stalled: quietly
            logger.debug("view: a stream viewer left")
            return


def _inside(folder: Path, path: Path) -> Path | None:
    """``path`` relative to ``folder`` when it resolves inside it, else None."""
    try:
        return path.resolve().relative_to(folder)
    except (ValueError, OSError):
        return None


def _page(snapshot: dict) -> str:
    """The page: a card per source (its stream, state, fps, frames analysed and inferred, health,
    and a small table per line and zone), and the latest events as rows; refreshed from
    /status.json four times a second (so it trails the counts drawn on the frames by 0.25 s)."""
    del snapshot  # the script builds everything from /status.json
    return _PAGE


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>retina-trt live view</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
* { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; margin: 0; padding: 12px 16px; background: #f3f4f6; color: #1f2937; }
h1 { font-size: 18px; margin: 0 0 12px; }
#sources { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 12px; }
.source { background: #fff; border-radius: 8px; padding: 10px; box-shadow: 0 1px 2px #0002; min-width: 0; }
.source h2 { font-size: 15px; margin: 0 0 6px; overflow-wrap: anywhere; }
.source h2 .name { font-weight: normal; color: #6b7280; font-size: 13px; }
.source img { width: 100%; height: auto; display: block; border-radius: 4px; background: #111; }
.facts { display: flex; flex-wrap: wrap; gap: 6px 12px; font-size: 13px; margin: 6px 0; }
.badge { padding: 1px 8px; border-radius: 10px; font-size: 12px; background: #e5e7eb; }
.badge.running, .badge.ok { background: #d1fae5; } .badge.reconnecting, .badge.unhealthy { background: #fde68a; }
.badge.gave-up { background: #fecaca; }
.counts { display: flex; flex-wrap: wrap; gap: 8px; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border-bottom: 1px solid #e5e7eb; padding: 2px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
caption { text-align: left; font-weight: 600; font-size: 13px; padding: 2px 0; }
#events { width: 100%; table-layout: fixed; background: #fff; border-radius: 8px; margin-top: 12px; }
#events td, #events th { text-align: left; overflow-wrap: anywhere; vertical-align: middle; }
#events img { height: 40px; width: auto; max-width: 100%; border-radius: 3px; }
</style></head>
<body>
<h1>retina-trt live view</h1>
<div id="sources"></div>
<table id="events"><colgroup><col style="width:12%"><col style="width:12%"><col style="width:34%">
<col style="width:14%"><col style="width:10%"><col style="width:18%"></colgroup>
<thead><tr><th>time</th><th>source</th><th>what</th><th>class</th><th>track</th><th>snapshot</th></tr></thead>
<tbody></tbody></table>
<script>
const ENTITIES = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'};
const esc = t => String(t ?? '').replace(/[&<>"]/g, c => ENTITIES[c]);
const sum = o => Object.values(o ?? {}).reduce((a, b) => a + b, 0);
function countTable(caption, heads, parts) {
  const classes = [...new Set(parts.flatMap(p => Object.keys(p ?? {})))].sort();
  const cell = (p, c) => `<td>${esc((p ?? {})[c] ?? 0)}</td>`;
  const rows = classes.map(c => `<tr><td>${esc(c)}</td>${parts.map(p => cell(p, c)).join('')}</tr>`);
  if (!rows.length) rows.push(`<tr><td>-</td>${parts.map(() => '<td>0</td>').join('')}</tr>`);
  return `<table class="count"><caption>${esc(caption)}</caption><thead><tr><th>class</th>` +
    heads.map(h => `<th>${h}</th>`).join('') + `</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}
function counts(v) {
  const c = v.counts ?? {};
  const lines = Object.entries(c.lines ?? {}).map(([n, l]) => countTable('line ' + n, ['in', 'out'], [l.in, l.out]));
  const zones = Object.entries(c.zones ?? {}).map(([n, z]) =>
    countTable('zone ' + n, ['enter', 'leave', 'inside'], [z.enter, z.leave, z.occupancy]));
  return lines.concat(zones).join('');
}
function card(id, v) {
  let el = document.querySelector(`.source[data-id="${CSS.escape(id)}"]`);
  if (!el) {
    el = document.createElement('section'); el.className = 'source'; el.dataset.id = id;
    el.innerHTML = `<h2>${esc(id)} <span class="name">${esc(v.name ?? '')}</span></h2>` +
      `<img alt="${esc(id)}" src="/stream/${encodeURIComponent(id)}.mjpg">` +
      '<div class="facts"></div><div class="counts"></div>';
    document.getElementById('sources').append(el);
  }
  const state = String(v.state ?? 'starting'), health = v.health ?? 'ok';
  el.querySelector('.facts').innerHTML =
    `<span class="badge state ${esc(state.replace(' ', '-'))}">${esc(state)}</span>` +
    `<span>${esc(v.fps ?? 0)} fps</span>` +
    `<span>frames <b class="frames">${esc(v.frames ?? 0)}</b> · ` +
    `inferred <b class="inferred">${esc(v.inferred ?? 0)}</b></span>` +
    `<span class="badge health ${health === 'ok' ? 'ok' : 'unhealthy'}">` +
    `${esc(health === 'ok' ? 'picture ok' : health)}</span>`;
  el.querySelector('.counts').innerHTML = counts(v);
}
const WHAT = {
  line_crossing: e => `crossed ${e.line} (${e.direction})`, zone_enter: e => `entered ${e.zone}`,
  zone_leave: e => `left ${e.zone}` + (e.reason ? ` (${e.reason})` : ''), source_lost: e => `lost: ${e.reason}`,
  source_recovered: () => 'recovered', source_unhealthy: e => `picture ${e.reason}`,
  source_healthy: e => `picture ok again (was ${e.reason})`, clip_ready: e => `clip ready (${e.frames} frames)`,
  model_swapped: () => 'model swapped', model_swap_refused: e => `model swap refused: ${e.reason}`,
};
function eventRow(e) {
  const time = e.time ? new Date(e.time * 1000).toLocaleTimeString() : '';
  const what = (WHAT[e.type] ?? (() => e.type))(e);
  const shot = e.snapshot_url ? `<img class="thumb" alt="snapshot" src="${esc(e.snapshot_url)}">` : '';
  return `<tr><td>${esc(time)}</td><td>${esc(e.source)}</td><td>${esc(what)}</td><td>${esc(e.class)}</td>` +
    `<td>${esc(e.track_id)}</td><td>${shot}</td></tr>`;
}
async function refresh() {
  try {
    const s = await (await fetch('/status.json', {cache: 'no-store'})).json();
    for (const id of Object.keys(s.sources).sort((a, b) => a.localeCompare(b, undefined, {numeric: true})))
      card(id, s.sources[id]);
    const shown = s.events.filter(e => !['summary', 'zone_count', 'frame'].includes(e.type)).reverse();
    document.querySelector('#events tbody').innerHTML = shown.map(eventRow).join('');
  } catch (e) { /* the run ended: keep the last state */ }
}
refresh(); setInterval(refresh, 250);
</script></body></html>
"""
