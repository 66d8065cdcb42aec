"""Event sinks against real brokers: every event arrives in order, a broker restart loses
nothing within the buffer, drops beyond it are counted, and the analytics never block."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from brokers import Certificates, free_port, mosquitto, redis_server
from helpers import wait_until

from retina_trt.analytics.sinks import FileSink, open_sink


def _events(n: int, start: int = 0, source: str = "cam") -> list[dict]:
    return [{"type": "line_crossing", "source": source, "seq": i} for i in range(start, start + n)]


class MqttSubscriber:
    """A persistent-session QoS 1 subscriber: the broker keeps its messages across a restart."""

    def __init__(self, port: int, topic: str, ca: Path | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.received: list[dict] = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="retina-trt-test", clean_session=False, protocol=mqtt.MQTTv311
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = lambda c, u, m: self.received.append(json.loads(m.payload))
        self.client.reconnect_delay_set(0.05, 0.5)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert wait_until(self.client.is_connected, 10)
        time.sleep(0.3)  # the SUBACK

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_mqtt_sink_delivers_in_order_across_a_broker_restart(tmp_path):
    broker = mosquitto(tmp_path / "mqtt")
    subscriber = MqttSubscriber(broker.port, "retina/events")
    sink = open_sink(f"mqtt://127.0.0.1:{broker.port}/retina/events", buffer=1000)
    try:
        for event in _events(50):
            sink.emit(event)
        assert wait_until(lambda: sink.stats()["delivered"] == 50)
        broker.stop()
        started = time.perf_counter()
        for event in _events(100, 50):
            sink.emit(event)  # the broker is away: buffered, never blocking
        assert time.perf_counter() - started < 0.5
        assert wait_until(lambda: not sink.stats()["connected"])
        broker.start()
        assert wait_until(lambda: sink.stats()["delivered"] == 150, 30), sink.stats()
        assert wait_until(lambda: len({e["seq"] for e in subscriber.received}) == 150, 30), len(subscriber.received)
    finally:
        stats = sink.close()
        subscriber.close()
        broker.stop()
    seqs = [e["seq"] for e in subscriber.received]
    assert sorted(set(seqs)) == list(range(150))
    first = [seqs.index(i) for i in range(150)]
    assert first == sorted(first), "events of one source arrive in order"
    assert stats["dropped"] == 0 and stats["reconnects"] >= 1


def test_redis_sink_delivers_everything_and_counts_drops_beyond_the_buffer(tmp_path):
    import redis

    server = redis_server(tmp_path / "redis")
    client = redis.Redis(port=server.port)
    sink = open_sink(f"redis://127.0.0.1:{server.port}/retina", buffer=40)
    try:
        for event in _events(30):
            sink.emit(event)
        assert wait_until(lambda: sink.stats()["delivered"] == 30)
        server.stop()
        for event in _events(60, 30):  # 60 while away, 40 fit: the 20 oldest are dropped and counted
            sink.emit(event)
        stats = sink.stats()
        assert stats["dropped"] == 20 and stats["buffered"] == 40
        server.start()
        assert wait_until(lambda: sink.stats()["delivered"] == 70, 30), sink.stats()
    finally:
        stats = sink.close()
        entries = client.xrange("retina") if server.process.poll() is None else []
        server.stop()
    seqs = [json.loads(fields[b"event"])["seq"] for _, fields in entries]
    assert seqs == list(range(30)) + list(range(50, 90))
    assert stats["delivered"] + stats["dropped"] == 90 and stats["dropped"] == 20


def test_unreachable_broker_at_start_keeps_running_and_delivers_when_it_appears(tmp_path, caplog):
    port = free_port()
    sink = open_sink(f"redis://127.0.0.1:{port}/late", buffer=100)
    try:
        for event in _events(5, 0):
            sink.emit(event)
        assert wait_until(lambda: sink.stats()["last_error"] is not None)
        assert "cannot connect" in caplog.text and "retrying" in caplog.text
        server = redis_server_on(tmp_path, port)
        assert wait_until(lambda: sink.stats()["delivered"] == 5, 30), sink.stats()
    finally:
        sink.close()
    server.stop()


def redis_server_on(tmp_path, port):
    """A Redis server on a given port (the sink was pointed at it before it existed)."""
    from brokers import Server, need

    folder = tmp_path / "late"
    folder.mkdir()
    return Server(
        [need("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        port,
        folder,
    )


def test_close_counts_what_could_not_be_sent():
    sink = open_sink(f"mqtt://127.0.0.1:{free_port()}/nobody", buffer=10)
    for event in _events(4, 0):
        sink.emit(event)
    stats = sink.close(timeout_s=0.2)
    assert stats["delivered"] == 0 and stats["dropped"] == 4


def test_file_sink_is_atomic_and_thread_safe(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = open_sink(str(path))
    assert isinstance(sink, FileSink)
    threads = [threading.Thread(target=lambda s=s: [sink.emit(e) for e in _events(200, source=s)]) for s in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not path.exists(), "written under a temporary name until closed"
    sink.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 800
    for s in "abcd":
        assert [r["seq"] for r in records if r["source"] == s] == list(range(200))


@pytest.mark.parametrize(
    "url, match",
    [
        ("kafka://host:9092/t", "unknown URL scheme"),
        ("mqtt://:1883/topic", "needs a host and a topic"),
        ("mqtt://host:1883/", "needs a host and a topic"),
        ("redis://host:99999/s", "port"),
        ("", "empty"),
    ],
)
def test_malformed_urls_are_refused_with_the_reason(url, match):
    with pytest.raises(ValueError, match=match):
        open_sink(url)


def test_file_sink_with_no_event_leaves_no_file_and_a_failed_write_is_counted(tmp_path):
    empty = tmp_path / "empty.jsonl"
    assert open_sink(str(empty)).close()["delivered"] == 0
    assert not empty.exists() and not list(tmp_path.iterdir())  # nor a temporary file
    sink = open_sink(str(tmp_path / "full.jsonl"))
    sink.emit({"type": "summary"})
    real = sink._out._file

    class FullDisk:  # the file's writes fail as on a full disk
        def write(self, text):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(real, name)

    sink._out._file = FullDisk()
    sink.emit({"type": "summary"})  # counted, not raised into the analytics
    sink._out._file = real
    stats = sink.close()
    assert stats["delivered"] == 1 and stats["dropped"] == 1 and "No space" in stats["last_error"]
    assert (tmp_path / "full.jsonl").read_text().count("\n") == 1


def test_mqtt_credentials_from_the_url_and_refused_ones_fail_for_good(tmp_path):
    """Issue #38: a Mosquitto with a password file; the right user is delivered to, a wrong
    password makes the sink fail at once with "refused the credentials" (no retries), and the
    password never shows."""
    server = mosquitto(tmp_path / "mq", users={"cam": "p@ss:w0rd"})
    try:
        good = open_sink(f"mqtt://cam:p%40ss%3Aw0rd@127.0.0.1:{server.port}/events")
        for event in _events(5, 0):
            good.emit(event)
        assert wait_until(lambda: good.stats()["delivered"] == 5, 15)
        assert good.close()["fatal"] is None
        bad = open_sink(f"mqtt://cam:wrong@127.0.0.1:{server.port}/events")
        assert wait_until(lambda: bad.stats()["fatal"] is not None, 15)
        bad.emit({"type": "x"})
        stats = bad.close()
        assert "refused the credentials" in stats["fatal"] and "wrong" not in stats["fatal"]
        assert stats["delivered"] == 0 and stats["dropped"] == 1 and stats["sink"].startswith("mqtt://cam:***@")
    finally:
        server.stop()


def test_redis_password_from_the_url_or_the_environment(tmp_path, monkeypatch):
    redis = pytest.importorskip("redis")
    server = redis_server(tmp_path / "rd", password="s3cret-pass")
    try:
        url = f"redis://:s3cret-pass@127.0.0.1:{server.port}/events"
        sink = open_sink(url)
        for event in _events(4, 0):
            sink.emit(event)
        assert wait_until(lambda: sink.stats()["delivered"] == 4, 15)
        sink.close()
        monkeypatch.setenv("RETINA_TRT_REDIS_PASSWORD", "s3cret-pass")
        from_env = open_sink(f"redis://127.0.0.1:{server.port}/events")
        from_env.emit({"type": "y"})
        assert wait_until(lambda: from_env.stats()["delivered"] == 1, 15)
        from_env.close()
        client = redis.Redis(port=server.port, password="s3cret-pass")
        assert client.xlen("events") == 5
        client.close()
        monkeypatch.delenv("RETINA_TRT_REDIS_PASSWORD")
        anonymous = open_sink(f"redis://127.0.0.1:{server.port}/events")
        assert wait_until(lambda: anonymous.stats()["fatal"] is not None, 15)
        assert "needs a password" in anonymous.close()["fatal"]
    finally:
        server.stop()


def test_analyze_stops_with_exit_2_when_the_broker_refuses_the_password(demo_onnx, tmp_path):
    import subprocess
    import sys

    from retina_trt.data.scenes import SCENES, write_scene

    server = redis_server(tmp_path / "rd", password="s3cret-pass")
    video = write_scene(SCENES[0], tmp_path / "scene") / "video.avi"
    try:
        command = [sys.executable, "-m", "retina_trt.cli", "analyze", str(demo_onnx), str(video)]
        command += ["--events", f"redis://:wrong-pass@127.0.0.1:{server.port}/events"]
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert run.returncode == 2, run.stderr
    assert "events cannot be delivered" in run.stderr and "wrong-pass" not in run.stderr + run.stdout


def test_mqtts_delivers_with_the_ca_and_fails_for_good_without(tmp_path):
    """Issue #38: a Mosquitto that speaks only TLS. With its CA the events arrive (a TLS
    subscriber reads them); without it the certificate does not verify, which retrying cannot
    fix: the sink fails at once with the reason. Mosquitto resets TLS on a plain port, which
    could be a restart: the sink retries and says what it may be."""
    certs = Certificates(tmp_path / "certs")
    server = mosquitto(tmp_path / "mq", tls=certs)
    plain = mosquitto(tmp_path / "plain")
    try:
        reader = MqttSubscriber(server.port, "events", ca=certs.ca)
        good = open_sink(f"mqtts://localhost:{server.port}/events", ca_file=certs.ca)
        for event in _events(5):
            good.emit(event)
        assert wait_until(lambda: len(reader.received) == 5, 15), good.stats()
        assert reader.received == _events(5) and good.close()["fatal"] is None
        reader.close()
        untrusted = open_sink(f"mqtts://127.0.0.1:{server.port}/events")
        assert wait_until(lambda: untrusted.stats()["fatal"] is not None, 15)
        assert "certificate did not verify" in untrusted.close()["fatal"]
        not_tls = open_sink(f"mqtts://127.0.0.1:{plain.port}/events", ca_file=certs.ca)
        assert wait_until(lambda: not_tls.stats()["last_error"] is not None, 15)  # Mosquitto resets it
        assert "is this port a plain, non-TLS one?" in not_tls.close()["last_error"]
    finally:
        server.stop()
        plain.stop()


def test_rediss_with_a_password_delivers_and_a_wrong_host_name_fails_for_good(tmp_path):
    """Issue #38: a Redis that speaks only TLS and requires AUTH: events arrive with the CA and
    the password; no CA, or a certificate for another name (only ``localhost`` here), fails for
    good with the reason; TLS to a plain Redis times out and says what it may be; a CA file that
    is not one is refused before any work."""
    redis = pytest.importorskip("redis")
    certs = Certificates(tmp_path / "certs", names="DNS:localhost")
    server = redis_server(tmp_path / "rd", password="pw", tls=certs)
    plain = redis_server(tmp_path / "plain")
    try:
        good = open_sink(f"rediss://:pw@localhost:{server.port}/events", ca_file=certs.ca)
        for event in _events(4):
            good.emit(event)
        assert wait_until(lambda: good.stats()["delivered"] == 4, 15), good.stats()
        good.close()
        client = redis.Redis("localhost", server.port, password="pw", ssl=True, ssl_ca_certs=str(certs.ca))
        assert [json.loads(e[1][b"event"]) for e in client.xrange("events")] == _events(4)
        client.close()
        untrusted = open_sink(f"rediss://:pw@127.0.0.1:{server.port}/events")
        assert wait_until(lambda: untrusted.stats()["fatal"] is not None, 15)
        assert "did not verify" in untrusted.close()["fatal"]
        wrong_name = open_sink(f"rediss://:pw@127.0.0.1:{server.port}/events", ca_file=certs.ca)
        assert wait_until(lambda: wrong_name.stats()["fatal"] is not None, 15)
        assert "did not verify" in wrong_name.close()["fatal"]
        not_tls = open_sink(f"rediss://localhost:{plain.port}/events", ca_file=certs.ca)  # Redis waits: no reply
        assert wait_until(lambda: not_tls.stats()["last_error"] is not None, 15)
        assert "is this port a plain, non-TLS one?" in not_tls.close()["last_error"]
    finally:
        server.stop()
        plain.stop()
    with pytest.raises(ValueError, match="not a PEM certificate"):
        open_sink("rediss://localhost/events", ca_file=certs.key.parent / "san")
    with pytest.raises(ValueError, match="no such file"):
        open_sink("mqtts://localhost/events", ca_file=tmp_path / "missing.pem")


def test_analyze_sends_events_over_tls_with_events_ca(demo_onnx, tmp_path):
    """``analyze --events rediss://... --events-ca PEM`` delivers its events over TLS; a
    ``--events-ca`` with no TLS URL to use it is refused before any work."""
    import subprocess
    import sys

    import redis

    from retina_trt.data.scenes import SCENES, write_scene

    certs = Certificates(tmp_path / "certs")
    server = redis_server(tmp_path / "rd", tls=certs)
    video = write_scene(SCENES[0], tmp_path / "scene") / "video.avi"
    command = [sys.executable, "-m", "retina_trt.cli", "analyze", str(demo_onnx), str(video), "--max-frames", "10"]
    try:
        url = f"rediss://localhost:{server.port}/events"
        run = subprocess.run([*command, "--events", url, "--events-ca", str(certs.ca)], capture_output=True, text=True)
        client = redis.Redis("localhost", server.port, ssl=True, ssl_ca_certs=str(certs.ca))
        events = [json.loads(e[1][b"event"]) for e in client.xrange("events")]
        client.close()
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    assert events and events[-1]["type"] == "summary" and f"{len(events)} delivered, 0 dropped" in run.stdout
    tls_files = ["--events-ca", str(certs.ca), "--events-cert", str(certs.client_cert)]
    refused = subprocess.run([*command, *tls_files], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--events-ca, --events-cert: for mqtts://" in refused.stderr


@pytest.mark.parametrize("scheme", ["mqtts", "rediss"])
def test_brokers_that_require_a_client_certificate_get_one(tmp_path, scheme):
    """Mutual TLS: a Mosquitto (``require_certificate``) or Redis (``--tls-auth-clients yes``)
    that requires a client certificate delivers with ``cert_file``/``key_file``. Without them,
    where the broker's alert says so (Redis, mostly) the sink fails for good; where it only
    closes the connection (Mosquitto; Redis when a write sees the close first) the sink retries
    and says what may be missing. A key without its certificate, or a
    certificate file that is not one, is refused before any work."""
    certs = Certificates(tmp_path / "certs")
    start = mosquitto if scheme == "mqtts" else redis_server
    server = start(tmp_path / "server", tls=certs, client_certs=True)
    url = f"{scheme}://localhost:{server.port}/events"
    try:
        good = open_sink(url, ca_file=certs.ca, cert_file=certs.client_cert, key_file=certs.client_key)
        for event in _events(3):
            good.emit(event)
        assert wait_until(lambda: good.stats()["delivered"] == 3, 15), good.stats()
        good.close()
        anonymous = open_sink(url, ca_file=certs.ca)
        assert wait_until(lambda: anonymous.stats()["last_error"] or anonymous.stats()["fatal"], 15)
        stats = anonymous.close()
        said = stats["fatal"] or stats["last_error"]  # Redis: its alert, or a write's EOF before it
        assert stats["delivered"] == 0 and "require a client certificate" in said.replace("requires", "require"), stats
    finally:
        server.stop()
    with pytest.raises(ValueError, match="--events-key needs --events-cert"):
        open_sink(url, ca_file=certs.ca, key_file=certs.client_key)
    with pytest.raises(ValueError, match="not a PEM certificate with its private key"):
        open_sink(url, ca_file=certs.ca, cert_file=certs.ca)
