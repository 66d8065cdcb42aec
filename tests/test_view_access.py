"""Who may read the live view (issue #38): the Host header (DNS rebinding), a token from the
environment or a file, a warning when the view is open to the network, a cap on viewers, stalled
viewers let go, and resets without tracebacks. Real sockets against a real ``LiveView``."""

from __future__ import annotations

import http.client
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import wait_until

from retina_trt.analytics.view import LiveView
from retina_trt.analytics.view_access import TOKEN_ENV, read_token, warn_if_exposed

TOKEN = "0123456789abcdef0123"


def _get(view: LiveView, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", view.port, timeout=10)
    connection.request("GET", path, headers={"Host": f"127.0.0.1:{view.port}", **(headers or {})})
    reply = connection.getresponse()
    body = reply.read() if reply.getheader("Content-Type", "").startswith(("text", "application")) else b""
    result = reply.status, dict(reply.getheaders()), body
    connection.close()
    return result


@pytest.fixture
def view():
    live = LiveView(0, allowed_hosts=["cams.example.lan"])
    yield live
    live.close()


def test_host_header_guards_against_dns_rebinding(view):
    assert _get(view, "/status.json")[0] == 200
    for host in ("localhost", f"localhost:{view.port}", "[::1]:80", "cams.example.lan", "CAMS.example.lan:8080"):
        assert _get(view, "/status.json", {"Host": host})[0] == 200, host
    for host in ("attacker.example", "127.0.0.1.attacker.example", ""):
        status, _, body = _get(view, "/status.json", {"Host": host})
        assert status == 403 and b"not allowed" in body, host


def test_token_from_the_query_once_then_a_cookie(monkeypatch):
    view = LiveView(0, token=TOKEN)
    try:
        assert _get(view, "/")[0] == 401
        assert _get(view, "/status.json", {"Authorization": "Bearer wrong-token-xxxxxxx"})[0] == 401
        status, headers, _ = _get(view, f"/?token={TOKEN}")
        cookie = headers["Set-Cookie"]
        assert status == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert _get(view, "/status.json", {"Cookie": cookie.split(";")[0]})[0] == 200
        assert _get(view, "/status.json", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    finally:
        view.close()


def test_token_comes_from_the_environment_or_a_file_never_too_short(monkeypatch, tmp_path):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert read_token(None) is None
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert read_token(None) == TOKEN
    file = tmp_path / "token"
    file.write_text("file-token-0123456789\n")
    assert read_token(file) == "file-token-0123456789"
    file.write_text("short\n")
    with pytest.raises(ValueError, match="at least 16"):
        read_token(file)
    with pytest.raises(ValueError, match="cannot read"):
        read_token(tmp_path / "missing")


def test_a_view_open_to_the_network_warns_unless_it_has_a_token(demo_onnx, tmp_path):
    assert warn_if_exposed("127.0.0.1", None) is None and warn_if_exposed("localhost", None) is None
    assert "open to the network" in warn_if_exposed("0.0.0.0", None)
    assert warn_if_exposed("0.0.0.0", TOKEN) is None
    video = tmp_path / "v.avi"
    import cv2

    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    command = [sys.executable, "-m", "retina_trt.cli", "analyze", str(demo_onnx), str(video), "--view", "0"]
    command += ["--view-host", "0.0.0.0", "--events", str(tmp_path / "e.jsonl"), "--no-health"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert "open to the network without a password" in run.stderr and TOKEN_ENV in run.stderr


def _open_stream(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /stream/cam.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


def test_viewers_are_capped_and_a_stalled_one_is_let_go(capfd):
    view = LiveView(0, max_streams=1, send_timeout_s=1.0)
    rng = np.random.default_rng(0)
    try:
        view.publish("cam", rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8), None)
        stalled = _open_stream(view.port)  # never reads
        assert wait_until(lambda: view._server.streams._value == 0, 10)
        status, _, body = _get(view, "/stream/cam.mjpg")
        assert status == 503 and b"too many viewers" in body
        for _ in range(40):  # new frames until the stalled viewer's socket is full and times out
            view.publish("cam", rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8), None)
            time.sleep(0.1)
            if view._server.streams._value == 1:
                break
        assert view._server.streams._value == 1, "the stalled viewer was disconnected"
        stalled.close()
        for _ in range(20):  # viewers that reset the connection
            sock = _open_stream(view.port)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        time.sleep(0.5)
    finally:
        view.close()
    assert "Traceback" not in capfd.readouterr().err


VIEW_PROCESS = """
import sys, threading, time
import cv2, numpy as np
from retina_trt.analytics.view import LiveView
view = LiveView(0, max_streams=int(sys.argv[1]), send_timeout_s=float(sys.argv[2]))
frame = np.zeros((720, 1280, 3), np.uint8)
def publish():
    i = 0
    while True:  # a moving picture, so every frame is a new JPEG
        frame[:] = 40
        cv2.circle(frame, (100 + i % 1000, 360), 80, (0, 200, 255), -1)
        cv2.putText(frame, str(i), (50, 100), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
        view.publish("cam", frame, None)
        i += 1
        time.sleep(1 / 15)
threading.Thread(target=publish, daemon=True).start()
print(view.port, flush=True)
sys.stdin.readline()
"""


def _rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _stall_wave(port: int, pid: int, viewers: int = 100) -> tuple[float, float]:
    """RSS (MiB) with ``viewers`` sockets that never read, then after they closed."""
    sockets = [_open_stream(port) for _ in range(viewers)]
    try:
        time.sleep(2.0)  # every viewer's socket buffer fills and its handler blocks on one frame
        stalled = _rss_mib(pid)
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(3.0)  # a closed viewer fails its handler's send at once; the stalled ones time out (2 s)
    return stalled, _rss_mib(pid)


def test_100_stalled_viewers_cost_little_memory_and_return_it(capsys):
    """Issue #38: 100 MJPEG viewers that stop reading cost about 5 MiB each (+583 MiB) and 233 MiB
    stayed after they left. Each viewer now holds at most the frame being sent, shared with the
    others (encoded once, never queued or copied per viewer), and is let go when it stays stalled.
    Two waves of 100 real sockets that never read, against a real LiveView process (cap raised
    to 100 to measure; the default is 16): the second wave costs what the first did, so what
    stays is the allocator's, not a leak. The figures are in docs/failure-behaviour.md."""
    command = [sys.executable, "-c", VIEW_PROCESS, "100", "2"]
    view = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(view.stdout.readline())
        time.sleep(2.0)
        before = _rss_mib(view.pid)
        first, second = _stall_wave(port, view.pid), _stall_wave(port, view.pid)
    finally:
        view.kill()
        view.wait()
    per_viewer = (first[0] - before) / 100
    with capsys.disabled():
        print(f"\nlive view RSS {before:.0f} MiB; 100 stalled viewers: {first[0]:.0f} MiB ({per_viewer:.2f} MiB each)")
        print(f"after they left {first[1]:.0f} MiB; a second wave {second[0]:.0f} MiB, after it {second[1]:.0f} MiB")
    assert per_viewer < 2.0, per_viewer
    # no leak: a second wave peaks where the first did, and what stays after it (the allocator
    # trims on its own schedule: 127-154 MiB measured) stays under that peak
    assert second[0] < first[0] + 20 and second[1] < first[0], (first, second)
