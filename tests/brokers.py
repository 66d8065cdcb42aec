"""Real Mosquitto and Redis servers for the tests, on free loopback ports, each in its own
temporary folder, with persistence so that a restart on the same port keeps what it had
acknowledged. ``.ci/run`` installs them from Debian's packages; without them the tests skip
(and fail under CI, where they must run)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is not installed; .ci/run installs it (apt-get install {binary})")
        pytest.skip(f"{binary} is not installed (apt-get install {binary}; .ci/run does)")
    return path


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class Server:
    """A broker process that can be stopped (SIGTERM: it saves its state) and started again."""

    def __init__(self, command: list[str], port: int, folder: Path) -> None:
        self.command, self.port, self.folder = command, port, folder
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = open(self.folder / "server.log", "ab")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        wait_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def mosquitto(folder: Path, users: dict[str, str] | None = None) -> Server:
    """A Mosquitto on a free port; with ``users``, a password file and no anonymous access."""
    binary = need("mosquitto")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    access = "allow_anonymous true\n"
    if users:
        passwords = folder / "passwords"
        for i, (user, password) in enumerate(users.items()):
            flags = ["-b", "-c"] if i == 0 else ["-b"]
            subprocess.run([need("mosquitto_passwd"), *flags, str(passwords), user, password], check=True)
        passwords.chmod(0o600)
        # as root, Mosquitto would drop to its own user, which cannot read a file in our folder
        owner = "user root\n" if os.geteuid() == 0 else ""
        access = f"{owner}allow_anonymous false\npassword_file {passwords}\n"
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n{access}persistence true\npersistence_location {folder}/\nautosave_interval 1\n"
    )
    return Server([binary, "-c", str(conf)], port, folder)


def redis_server(folder: Path, password: str | None = None) -> Server:
    """A Redis on a free port; with ``password``, AUTH required (``requirepass``)."""
    binary = need("redis-server")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    return Server(
        [
            binary,
            *(["--requirepass", password] if password else []),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
        ],
        port,
        folder,
    )
