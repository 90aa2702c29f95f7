"""TLS on the Redis and HTTP doors, through real clients and a real kvd: redis-py, redis-cli
and curl over TLS; client certificates with --tls-ca; a relay that records every byte on the
wire; plaintext and random bytes on the TLS ports; a stalled handshake; a client that never
reads; and the one-line refusals of bad TLS flags."""

from __future__ import annotations

import http.client
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvd.doors.tls import TlsSession
from tests.procs import Kvd, env_for, info, running, send_and_close, wait_for
from tests.tlscerts import Certs, make_certs

redis = pytest.importorskip("redis", reason="redis-py is a test dependency: pip install -e .[test]")
from redis.backoff import NoBackoff  # noqa: E402 - after the importorskip
from redis.retry import Retry  # noqa: E402

HEADER_TIMEOUT_S = 1.0  # the HTTP door's: it bounds a stalled handshake there too


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls_flags(certs: Certs, ca: bool = False) -> list[str]:
    return ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
            *(["--tls-ca", str(certs.ca)] if ca else [])]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Kvd]:
    """A node whose Redis and HTTP doors speak TLS (no client certificates asked)."""
    home = tmp_path_factory.mktemp("tls")
    config = home / "kvd.toml"
    config.write_text(f"http_header_timeout = {HEADER_TIMEOUT_S}\n")
    with running(home, "tls1", [*tls_flags(certs), "--config", str(config)]) as kvd:
        yield kvd


@pytest.fixture(scope="module")
def mutual(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Kvd]:
    """A node that asks clients for a certificate its CA signed (--tls-ca)."""
    with running(tmp_path_factory.mktemp("mtls"), "mtls1", tls_flags(certs, ca=True)) as kvd:
        yield kvd


def tls_redis(certs: Certs, port: int, cert: Path | None = None,
              key: Path | None = None) -> redis.Redis:
    # No retries: a refused handshake is the answer, not a hiccup to back off from.
    return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certs.ca),
                       ssl_certfile=str(cert) if cert else None,
                       ssl_keyfile=str(key) if key else None, socket_timeout=10,
                       retry=Retry(NoBackoff(), 0))


def curl(certs: Certs, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(certs.ca), *args,
                           url], capture_output=True, text=True, timeout=30)


def failures(node: Kvd, door: str) -> int:
    return info(node)[f"{door}_tls_handshake_failures"]


def handshake(port: int, certs: Certs, timeout: float = 10) -> tuple[socket.socket, TlsSession]:
    """A TLS client made of a plain socket and the sans-IO session: the test decides what
    goes in each write."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    client = TlsSession(certs.client_context(), server_side=False, server_hostname="localhost")
    client.feed(b"")
    sock.sendall(client.data_to_send())  # ClientHello
    while not client.established:
        data = sock.recv(65536)
        assert data, "the node closed the connection mid-handshake"
        client.feed(data)
    return sock, client


def client_hello(certs: Certs) -> bytes:
    client = TlsSession(certs.client_context(), server_side=False, server_hostname="localhost")
    client.feed(b"")
    return client.data_to_send()


# -- real clients ----------------------------------------------------------------------------


def test_redis_py_over_tls_crud_pipelines_and_a_large_value(node: Kvd, certs: Certs) -> None:
    r = tls_redis(certs, node.resp_port)
    assert r.ping() is True
    assert r.set("user:1", "ann") is True and r.get("user:1") == b"ann"
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"p:{i}", i)
    assert all(pipe.execute())
    assert r.mget("p:0", "p:499") == [b"0", b"499"]
    big = secrets.token_bytes(3 * 1024 * 1024)  # many records each way
    assert r.set("big", big) is True and r.get("big") == big
    with r.pipeline() as tx:
        tx.set("t", 1).incr("t").get("t")
        assert tx.execute() == [True, 2, b"2"]
    assert "kv_tls_handshake_failures" in r.info("stats")
    assert info(node)["resp_tls"] is True and info(node)["http_tls"] is True


def _redis_cli_tls() -> str | None:
    """Why redis-cli cannot be used over TLS here, or None when it can."""
    if shutil.which("redis-cli") is None:
        return "redis-cli is not installed (apt-get install redis-tools)"
    usage = subprocess.run(["redis-cli", "--help"], capture_output=True, text=True, timeout=10)
    if "--tls" not in usage.stdout + usage.stderr:
        return "this redis-cli was built without TLS (its --help has no --tls)"
    return None


@pytest.mark.skipif(_redis_cli_tls() is not None, reason=str(_redis_cli_tls()))
def test_redis_cli_over_tls(node: Kvd, certs: Certs) -> None:
    def cli(*args: str) -> str:
        done = subprocess.run(["redis-cli", "--tls", "--cacert", str(certs.ca), "-h",
                               "127.0.0.1", "-p", str(node.resp_port), *args],
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    assert cli("SET", "cli:1", "over tls") == "OK"
    assert cli("GET", "cli:1") == "over tls"
    assert cli("--scan", "--pattern", "cli:*").split() == ["cli:1"]


def test_curl_over_tls_puts_gets_and_reads_health_and_metrics(node: Kvd, certs: Certs) -> None:
    base = f"https://127.0.0.1:{node.http_port}"
    put = curl(certs, f"{base}/v1/kv/curl:1", "-X", "PUT", "--data-binary", "héllo")
    assert (put.returncode, put.stdout) == (0, '{"ok":true}\n'), put
    got = curl(certs, f"{base}/v1/kv/curl:1")
    assert (got.returncode, got.stdout) == (0, "héllo"), got
    assert curl(certs, f"{base}/health").stdout == '{"status":"ok"}\n'
    metrics = curl(certs, f"{base}/metrics").stdout
    assert 'kv_tls_handshake_failures_total{door="http"}' in metrics
    assert 'kv_tls_handshake_failures_total{door="resp"}' in metrics
    with tls_redis(certs, node.resp_port) as r:  # one store behind both doors
        assert r.get("curl:1") == "héllo".encode()


# -- what must not get through -------------------------------------------------------------


def test_plaintext_clients_on_the_tls_ports_get_nothing_and_the_node_serves(
        node: Kvd, certs: Certs) -> None:
    before = {door: failures(node, door) for door in ("resp", "http")}
    sock = socket.create_connection(("127.0.0.1", node.resp_port), timeout=10)
    sock.sendall(b"PING\r\n")
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    assert b"PONG" not in answer and b"+" not in answer[:1]  # closed; at most a TLS alert
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=node.resp_port, socket_timeout=10,
                    retry=Retry(NoBackoff(), 0)).ping()
    plain = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/health")
        plain.getresponse()
    plain.close()
    wait_for(lambda: failures(node, "resp") >= before["resp"] + 2
             and failures(node, "http") >= before["http"] + 1, what="the failures counted")
    assert tls_redis(certs, node.resp_port).ping() is True
    assert curl(certs, f"https://127.0.0.1:{node.http_port}/health").returncode == 0


def test_with_tls_ca_only_a_certificate_the_ca_signed_gets_in(mutual: Kvd, certs: Certs) -> None:
    before = failures(mutual, "resp")
    with pytest.raises(redis.ConnectionError):
        tls_redis(certs, mutual.resp_port).ping()  # no certificate
    with pytest.raises(redis.ConnectionError):
        tls_redis(certs, mutual.resp_port, certs.stranger_cert, certs.stranger_key).ping()
    r = tls_redis(certs, mutual.resp_port, certs.client_cert, certs.client_key)
    assert r.set("mtls", "yes") is True and r.get("mtls") == b"yes"
    wait_for(lambda: r.info("stats")["kv_tls_handshake_failures"] >= before + 2,
             what="both refusals counted in INFO")
    url = f"https://127.0.0.1:{mutual.http_port}/v1/kv/mtls"
    assert curl(certs, url).returncode != 0  # curl without a certificate is refused too
    signed = curl(certs, url, "--cert", str(certs.client_cert), "--key", str(certs.client_key))
    assert (signed.returncode, signed.stdout) == (0, "yes"), signed


class Relay:
    """A TCP relay between a client and a door that keeps every byte it forwards, both ways:
    what someone on the wire would see."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen = bytearray()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed: the test is done
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=30)
            for a, b in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.seen += data  # kept before it is forwarded: a reply is seen first
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self.listener.close()
        for t in self._threads:
            t.join(10)


@pytest.mark.parametrize("door", ["resp", "http"])
def test_a_relay_sees_no_key_or_value_with_tls_and_both_without(
        door: str, node: Kvd, certs: Certs, kvd_factory) -> None:
    plain = kvd_factory("plain")
    for target, tls in ((node, True), (plain, False)):
        key, value = f"relay-key-{secrets.token_hex(8)}", f"relay-value-{secrets.token_hex(8)}"
        relay = Relay(target.resp_port if door == "resp" else target.http_port)
        try:
            if door == "resp":
                r = tls_redis(certs, relay.port) if tls else redis.Redis(
                    host="127.0.0.1", port=relay.port, socket_timeout=10)
                assert r.set(key, value) is True and r.get(key) == value.encode()
                r.close()
            else:
                url = f"{'https' if tls else 'http'}://127.0.0.1:{relay.port}/v1/kv/{key}"
                assert curl(certs, url, "-X", "PUT", "--data-binary", value).returncode == 0
                assert curl(certs, url).stdout == value
        finally:
            relay.close()
        with relay._lock:
            seen = bytes(relay.seen)
        assert seen, "the relay carried nothing"
        found = key.encode() in seen or value.encode() in seen
        assert found is not tls, f"TLS {'on' if tls else 'off'}: key or value on the wire: {found}"


def test_random_and_broken_client_hellos_never_cost_the_node(node: Kvd, certs: Certs) -> None:
    """Hypothesis throws bytes at both TLS ports: noise, a real ClientHello cut short or with a
    byte changed, a TLS record header over noise. After each the node answers a TLS client."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    hello = client_hello(certs)
    r = tls_redis(certs, node.resp_port)
    r.set("fuzz:safe", "1")

    def flip(at_and_by: tuple[int, int]) -> bytes:
        at, by = at_and_by
        return hello[:at] + bytes([hello[at] ^ by]) + hello[at + 1:]

    inputs = st.one_of(
        st.binary(max_size=300),
        st.integers(0, len(hello)).map(lambda n: hello[:n]),
        st.tuples(st.integers(0, len(hello) - 1), st.integers(1, 255)).map(flip),
        st.binary(max_size=200).map(lambda tail: hello + tail),
        st.binary(max_size=200).map(lambda body: b"\x16\x03\x01" + body),
    )

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(["resp", "http"]), inputs)
    def throw(door: str, data: bytes) -> None:
        send_and_close(node.resp_port if door == "resp" else node.http_port, data)
        assert r.get("fuzz:safe") == b"1"

    throw()
    assert tls_redis(certs, node.resp_port).get("fuzz:safe") == b"1"  # a new handshake, too
    assert curl(certs, f"https://127.0.0.1:{node.http_port}/health").returncode == 0


# -- the edges of a TLS connection ------------------------------------------------------------


def test_requests_riding_the_last_handshake_flight_then_close_notify(
        node: Kvd, certs: Certs) -> None:
    sock, client = handshake(node.resp_port, certs)
    try:
        requests = b"".join(b"SET edge:%d v%d\r\n" % (i, i) for i in range(200)) + \
            b"GET edge:199\r\n"
        # One write: the client's Finished, 201 pipelined requests and its close_notify.
        sock.sendall(client.encrypt(requests) + client.close())
        got = b""
        while not client.peer_closed and (data := sock.recv(65536)):
            got += client.feed(data)
    finally:
        sock.close()
    assert got == b"+OK\r\n" * 200 + b"$4\r\nv199\r\n"
    assert client.peer_closed  # the node answered, then sent its own close_notify


def test_pipelined_http_requests_over_tls_are_answered_in_order(node: Kvd,
                                                                 certs: Certs) -> None:
    from tests.test_http import read_response

    sock = certs.client_context().wrap_socket(
        socket.create_connection(("127.0.0.1", node.http_port), timeout=10),
        server_hostname="localhost")
    requests = b"".join(
        b"PUT /v1/kv/tpipe/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%d" % (
            i, len(b"%d" % i), i) + b"GET /v1/kv/tpipe/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
        for i in range(50))
    sock.sendall(requests)  # one write: many records, more than one turn's worth of reading
    f = sock.makefile("rb")
    try:
        for i in range(50):
            assert read_response(f)[0] == 200
            assert read_response(f)[::2] == (200, b"%d" % i)
    finally:
        f.close()
        sock.close()


def test_server_sent_events_flow_over_tls(node: Kvd, certs: Certs) -> None:
    """The node writes unasked (changes, heartbeats): encrypted as they are flushed."""
    conn = http.client.HTTPSConnection("127.0.0.1", node.http_port, timeout=10,
                                       context=certs.client_context())
    conn.request("GET", "/v1/watch?prefix=sse/")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type") == "text/event-stream"
    with tls_redis(certs, node.resp_port) as r:
        r.set("sse/a", "over tls")
    lines = []
    while not any(line.startswith(b"data:") and b"sse/a" in line for line in lines):
        line = resp.readline()
        assert line, "the stream ended"
        lines.append(line)
    assert any(b'"over tls"' in line for line in lines)
    conn.close()


def test_a_stalled_handshake_is_dropped_and_counted(node: Kvd, certs: Certs) -> None:
    before = failures(node, "http")
    sock = socket.create_connection(("127.0.0.1", node.http_port), timeout=0.2)
    sock.sendall(client_hello(certs)[:20])  # a ClientHello begun and never finished

    def closed_by_the_node() -> bool:
        try:
            return sock.recv(65536) == b""
        except TimeoutError:
            return False

    try:
        wait_for(closed_by_the_node, deadline_s=HEADER_TIMEOUT_S + 10,
                 what="the node to drop a handshake stalled past http_header_timeout")
    finally:
        sock.close()
    assert failures(node, "http") >= before + 1


def test_a_tls_client_that_reads_late_stalls_no_one_and_loses_nothing(
        node: Kvd, certs: Certs) -> None:
    """80 MB of replies asked for and not read (past the door's 64 MiB output limit, so the
    door stops reading it): the others are served meanwhile; then every reply arrives."""
    r = tls_redis(certs, node.resp_port)
    value = secrets.token_bytes(50_000)
    r.set("hog:big", value)
    sock, hog = handshake(node.resp_port, certs)
    batches, per_batch = 8, 200
    try:
        for _ in range(batches):
            sock.sendall(hog.encrypt(b"GET hog:big\r\n" * per_batch))
        for i in range(50):
            assert r.set(f"other:{i}", i) is True
        assert r.get("other:49") == b"49"
        reply = b"$%d\r\n%b\r\n" % (len(value), value)
        want, got = len(reply) * batches * per_batch, bytearray()
        while len(got) < want and (data := sock.recv(1 << 20)):
            got += hog.feed(data)
    finally:
        sock.close()
    assert len(got) == want and got[:len(reply)] == reply and got[-len(reply):] == reply


# -- start-up ------------------------------------------------------------------------------------


def start(tmp_path: Path, *flags: str, foreground: bool = True) -> subprocess.CompletedProcess:
    from tests.procs import free_port

    argv = [sys.executable, "-m", "kvd", "start", *(["--foreground"] if foreground else []),
            "--name", "bad-tls", "--port", str(free_port()), "--resp-port", "0",
            "--http-port", "0", "--data-dir", str(tmp_path / "data"), *flags]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env=env_for(tmp_path), stdin=subprocess.DEVNULL)


def test_bad_tls_flags_fail_the_start_with_one_line(tmp_path: Path, certs: Certs) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    cases = [
        (["--tls-cert", str(certs.cert)], "--tls-cert needs --tls-key"),
        (["--tls-key", str(certs.key)], "--tls-key needs --tls-cert"),
        (["--tls-cert", str(missing), "--tls-key", str(certs.key)], "cannot read --tls-cert"),
        (["--tls-cert", str(certs.cert), "--tls-key", str(tmp_path)], "cannot read --tls-key"),
        (["--tls-cert", str(certs.cert), "--tls-key", str(certs.client_key)],
         "cannot use --tls-cert"),
        (["--tls-cert", str(junk), "--tls-key", str(junk)], "cannot use --tls-cert"),
        ([*tls_flags(certs), "--tls-ca", str(junk)], "cannot use --tls-ca"),
    ]
    for flags, says in cases:
        done = start(tmp_path, *flags)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1, (flags, done.stderr)
        assert lines[0].startswith("kvd: ") and says in lines[0], (flags, lines)
    detached = start(tmp_path, "--tls-cert", str(junk), "--tls-key", str(junk),
                     foreground=False)  # the detached start reports the node's own line
    assert detached.returncode != 0, detached
    assert detached.stderr.strip().splitlines() == [
        line for line in detached.stderr.strip().splitlines() if "cannot use --tls-cert" in line]
