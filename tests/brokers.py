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


class Certificates:
    """A test CA and a server certificate it signed for ``names`` (openssl CLI)."""

    def __init__(self, folder: Path, names: str = "DNS:localhost,IP:127.0.0.1") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.ca, self.cert, self.key = folder / "ca.pem", folder / "server.pem", folder / "server.key"
        ca_key, request, san = folder / "ca.key", folder / "server.csr", folder / "san"
        _openssl("req", "-x509", "-keyout", ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=test CA")
        _openssl("req", "-keyout", self.key, "-out", request, "-subj", "/CN=localhost")
        san.write_text(f"subjectAltName={names}\n")
        signed = ["-CA", self.ca, "-CAkey", ca_key, "-CAcreateserial", "-extfile", san]
        _openssl("x509", "-req", "-in", request, *signed, "-out", self.cert, "-days", "2")
        # a client certificate from the same CA, for servers that require one (mutual TLS)
        self.client_cert, self.client_key = folder / "client.pem", folder / "client.key"
        _openssl("req", "-keyout", self.client_key, "-out", folder / "client.csr", "-subj", "/CN=retina-trt")
        client = ["-CA", self.ca, "-CAkey", ca_key, "-CAcreateserial"]
        _openssl("x509", "-req", "-in", folder / "client.csr", *client, "-out", self.client_cert, "-days", "2")


def _openssl(command: str, *args) -> None:
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"] if command == "req" else []
    subprocess.run([need("openssl"), command, *new_key, *map(str, args)], check=True, capture_output=True)


def mosquitto(
    folder: Path, users: dict[str, str] | None = None, tls: Certificates | None = None, client_certs: bool = False
) -> Server:
    """A Mosquitto on a free port; with ``users``, a password file and no anonymous access; with
    ``tls``, TLS only (no plain listener), and with ``client_certs`` clients must present a
    certificate from the test CA."""
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
        access = f"allow_anonymous false\npassword_file {passwords}\n"
    if tls is not None:
        access += f"cafile {tls.ca}\ncertfile {tls.cert}\nkeyfile {tls.key}\n"
        access += "require_certificate true\n" if client_certs else ""
    if os.geteuid() == 0:  # else Mosquitto drops to its own user, which cannot read our folder
        access = "user root\n" + access
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n{access}persistence true\npersistence_location {folder}/\nautosave_interval 1\n"
    )
    return Server([binary, "-c", str(conf)], port, folder)


def redis_server(
    folder: Path, password: str | None = None, tls: Certificates | None = None, client_certs: bool = False
) -> Server:
    """A Redis on a free port; with ``password``, AUTH required (``requirepass``); with ``tls``,
    TLS only (``--tls-port``, no plain port), and with ``client_certs`` clients must present a
    certificate from the test CA."""
    binary = need("redis-server")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    listen = ["--port", str(port)]
    if tls is not None:
        listen = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "yes" if client_certs else "no"]
        listen += ["--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca)]
    return Server(
        [
            binary,
            *(["--requirepass", password] if password else []),
            *listen,
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
