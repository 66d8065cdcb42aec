"""An MJPEG-over-HTTP camera on localhost (``multipart/x-mixed-replace``, as IP cameras serve
it), paced at its frame rate, for the soak benchmark and the stream tests, with the faults they
need: a stall mid-stream, garbage instead of frames, a frame size that changes, and a server that
goes away and comes back on the same port."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time

import cv2
import numpy as np

BOUNDARY = b"retinatrtframe"


def frame_jpeg(index: int, size: tuple[int, int]) -> bytes:
    """A frame with a moving filled circle and the frame number drawn (HxW ``size``)."""
    height, width = size
    image = np.full((height, width, 3), 90, np.uint8)
    x = 20 + (index * 3) % max(1, width - 40)
    cv2.circle(image, (x, height // 2), min(height, width) // 6, (40, 200, 240), -1)
    cv2.putText(image, str(index), (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    return cv2.imencode(".jpg", image)[1].tobytes()


class Camera:
    """``Camera(fps=30).url``; faults: ``stall_after`` frames then silence (connection kept open),
    ``garbage=True`` (random bytes, no JPEG), ``resize_after`` frames then ``resize_to``;
    ``stop()`` / ``start()`` take the server away and bring it back on the same port."""

    def __init__(
        self,
        fps: float = 30.0,
        size=(96, 128),
        *,
        stall_after=None,
        garbage=False,
        resize_after=None,
        resize_to=(120, 160),
        frames=None,
        port: int = 0,
    ) -> None:
        self.fps, self.size, self.stall_after, self.garbage = fps, size, stall_after, garbage
        self.resize_after, self.resize_to, self.frames = resize_after, resize_to, frames
        self.sent = 0
        self._port = port
        self._server = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/stream.mjpg"

    def start(self) -> None:
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                camera._serve(self)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        socketserver.ThreadingTCPServer.daemon_threads = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        self._stopped = threading.Event()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        handler.end_headers()
        rng = np.random.default_rng(self.sent)
        index = 0
        try:
            while not self._stopped.is_set() and (self.frames is None or self.sent < self.frames):  # in all
                if self.stall_after is not None and self.sent >= self.stall_after:  # for good: reconnects too
                    self._stopped.wait(3600)  # silence, the connection held open
                    return
                if self.garbage:
                    handler.wfile.write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
                else:
                    size = self.resize_to if self.resize_after is not None and index >= self.resize_after else self.size
                    data = frame_jpeg(index, size)
                    handler.wfile.write(
                        b"--"
                        + BOUNDARY
                        + b"\r\nContent-Type: image/jpeg\r\n"
                        + f"Content-Length: {len(data)}\r\n\r\n".encode()
                        + data
                        + b"\r\n"
                    )
                handler.wfile.flush()
                index += 1
                self.sent += 1
                time.sleep(1.0 / self.fps)
        except (BrokenPipeError, ConnectionResetError):
            return
