"""CurveZMQ on real processes: the client port and peer traffic encrypted (a relay in the middle
sees the bytes), strangers kept out, rotation, and what users type (kvd, kvsh, the client).

Every wait polls with a deadline; absence is asserted only after something observable says the
attempt was made and refused (a counter, a monitor event).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zmq.utils.monitor import parse_monitor_message

from kvd.config import new_secret_file
from kvd.state.hlc import wall_ms
from shared import codec
from shared.codec import MsgType, Peer
from shared.errors import ServerError
from shared.keyring import KeyPair, Keyring
from tests.procs import (
    Kvd,
    env_for,
    free_port,
    info,
    run_kvsh,
    send_and_close,
    statuses,
    wait_for,
)

DEADLINE_S = 30
KEY, VALUE = b"sentinel-key-7f3a", b"sentinel-value-9c1d" * 4


class Relay:
    """A TCP relay from a free loopback port to `target`, recording every byte both ways."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        self._seen = bytearray()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def seen(self) -> bytes:
        with self._lock:
            return bytes(self._seen)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
                up = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            self._socks += [conn, up]
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self._seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for sock in self._socks:
            sock.close()


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    made: list[Relay] = []
    yield made
    for relay in made:
        relay.close()


def secret(path: Path) -> Keyring:
    return new_secret_file(path)


def curve_node(kvd_factory, name: str, ring: Keyring | None, secret_file: Path | None,
               extra: list[str] | None = None, **kw: object) -> Kvd:
    flags = ["--cluster-secret-file", str(secret_file)] if secret_file else []
    key = ring.current.public.decode() if ring else None
    return kvd_factory(name, flags + (extra or []), server_key=key, **kw)


def curve_socket(kind: int, server: bytes | None, pair: KeyPair | None = None) -> zmq.Socket:
    """A socket that links with CURVE to `server` (a public key) as `pair`, or as a fresh
    ephemeral pair; plain when `server` is None."""
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if server is not None:
        public, private = (pair.public, pair.secret) if pair else zmq.curve_keypair()
        sock.setsockopt(zmq.CURVE_SERVERKEY, server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, private)
    return sock


def handshake(sock: zmq.Socket, endpoint: str) -> int:
    """Connect and return the first handshake outcome the monitor reports (the event)."""
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                      | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                      | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                      | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    try:
        sock.connect(endpoint)
        assert monitor.poll(DEADLINE_S * 1000), f"no handshake with {endpoint}"
        return parse_monitor_message(monitor.recv_multipart())["event"]
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)


def recv_until(sock: zmq.Socket, found, what: str) -> object:  # noqa: ANN001
    """Decode messages from `sock` until `found(msg)` is truthy; fail at the deadline."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        if sock.poll(200):
            msg = codec.decode(sock.recv())
            if found(msg):
                return msg
    raise AssertionError(f"timed out waiting for {what}")


def alive(*nodes: Kvd) -> bool:
    n = len(nodes)
    return all(list(statuses(node).values()) == ["alive"] * n for node in nodes)


# -- the bytes on the wire --------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "curve"])
def test_a_relay_sees_client_traffic_only_without_the_secret(kvd_factory, relays, tmp_path,
                                                             encrypted: bool) -> None:
    ring = secret(tmp_path / "secret") if encrypted else None
    node = curve_node(kvd_factory, "n1", ring, tmp_path / "secret" if encrypted else None)
    relay = Relay(node.port)
    relays.append(relay)
    with node.client() as direct:
        direct.ping()
    from kvsh.client import Client

    with Client("127.0.0.1", relay.port, server_key=node.server_key) as c:
        assert c.set(KEY, VALUE) and c.get(KEY) == VALUE
        assert c.pipeline([["GET", KEY]])[0].value == VALUE
    seen = relay.seen()
    assert len(seen) > 2 * len(VALUE)  # the traffic did go through the relay
    assert (KEY in seen, VALUE in seen) == (not encrypted, not encrypted)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "curve"])
def test_a_relay_sees_peer_traffic_only_without_the_secret(kvd_factory, relays, tmp_path,
                                                           encrypted: bool) -> None:
    """B joins A through a relay of A's client port; a process holding the secret (the test,
    as a peer would) walks A's buckets through that relay and subscribes to A's gossip through
    a relay of A's gossip port. It reads the sentinel; the relays must not."""
    path = tmp_path / "secret" if encrypted else None
    ring = secret(path) if path else None
    a = curve_node(kvd_factory, "curve-a", ring, path)
    client_relay, gossip_relay = Relay(a.port), Relay(a.gossip_port)
    relays += [client_relay, gossip_relay]
    b = curve_node(kvd_factory, "curve-b", ring, path, ["--join", client_relay.address])
    wait_for(lambda: alive(a, b), DEADLINE_S, "A and B to see each other")
    server, pair = (ring.current.public, ring.current) if ring else (None, None)
    sub = curve_socket(zmq.SUB, server, pair)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    dealer = curve_socket(zmq.DEALER, server, pair)
    try:
        assert handshake(sub, f"tcp://{gossip_relay.address}") == zmq.EVENT_HANDSHAKE_SUCCEEDED

        def gossiped() -> bool:
            """Write the sentinel on A and look for its GOSSIP: a PUB drops what it publishes
            before our subscription reaches it, which the handshake does not wait for."""
            with a.client() as c:
                c.set(KEY, VALUE)
            end = time.monotonic() + 1  # heartbeats keep coming: look for a second at most
            while time.monotonic() < end and sub.poll(300):
                msg = codec.decode(sub.recv())
                if (isinstance(msg, Peer) and msg.type is MsgType.GOSSIP
                        and any(item[1] == KEY for item in msg.body["items"])):
                    return True
            return False

        wait_for(gossiped, DEADLINE_S, "the sentinel's GOSSIP through the relay")
        assert handshake(dealer, f"tcp://{client_relay.address}") \
            == zmq.EVENT_HANDSHAKE_SUCCEEDED
        dealer.send(codec.encode_peer(Peer(MsgType.SYNC, "kv", "curve-b",
                                           {"digests": [0] * 1024, "cursor": 0})))
        reply = recv_until(dealer, lambda m: isinstance(m, Peer), "a SYNC_REPLY")
        assert reply.type is MsgType.SYNC_REPLY  # type: ignore[union-attr]
        assert [KEY, VALUE] in [e[:2] for e in reply.body["entries"]]  # type: ignore[union-attr]
    finally:
        sub.close()
        dealer.close()
    for relay in (client_relay, gossip_relay):
        seen = relay.seen()
        assert (VALUE in seen) == (not encrypted), relay.target
    joined = client_relay.seen()  # B's JOIN and A's WELCOME went this way
    assert (b"curve-b" in joined and b"curve-a" in joined) == (not encrypted)


# -- strangers ----------------------------------------------------------------------------------


def test_strangers_cannot_join_read_gossip_or_write(kvd_factory, tmp_path) -> None:
    path = tmp_path / "secret"
    ring = secret(path)
    a = curve_node(kvd_factory, "a", ring, path)
    b = curve_node(kvd_factory, "b", ring, path, ["--join", a.address])
    wait_for(lambda: alive(a, b), DEADLINE_S, "A and B to form")
    with a.client() as c:
        c.set("before", "1")
    wait_for(lambda: len({info(a)["digest"], info(b)["digest"]}) == 1, DEADLINE_S, "convergence")
    digest = info(a)["digest"]
    other = tmp_path / "other-secret"
    other_ring = secret(other)
    s = curve_node(kvd_factory, "s", other_ring, other, ["--join", a.address])  # another secret
    n = kvd_factory("n", ["--join", a.address])  # no secret at all
    for stranger in (s, n):
        wait_for(lambda stranger=stranger: "cluster secret probably differs" in stranger.stderr(),
                 DEADLINE_S, f"{stranger.name} to say why it cannot join")
        with stranger.client() as c:
            c.set(KEY, b"from " + stranger.name.encode())  # alone: nobody to replicate to
    wait_for(lambda: info(a)["curve_failed"] >= 2, DEADLINE_S, "A to refuse both handshakes")

    # One that knows A's public key (it is no secret) connects as a client, and sends what a
    # peer would; its key is not the cluster's, so its peer messages are dropped.
    assert info(a)["curve_key"] == ring.current.public.decode()
    push = codec.encode_peer(Peer(MsgType.SYNC_PUSH, "kv", "b", {"entries": [
        [KEY, b"injected", (wall_ms() + 1000) << 16, "b", 0]]}))
    gossip = codec.encode_peer(Peer(MsgType.GOSSIP, "kv", "b", {
        "origin": "b", "epoch": 1, "base": 1, "items": [[1, KEY, b"injected", 1 << 16, 0]]}))
    intruder = curve_socket(zmq.DEALER, ring.current.public)
    listener = curve_socket(zmq.SUB, ring.current.public)
    listener.setsockopt(zmq.SUBSCRIBE, b"")
    peer = curve_socket(zmq.DEALER, ring.current.public, ring.current)  # the control: a peer
    try:
        assert handshake(intruder, f"tcp://{a.address}") == zmq.EVENT_HANDSHAKE_SUCCEEDED
        intruder.send(push)
        intruder.send(gossip)
        wait_for(lambda: info(a)["peer_messages_refused"] >= 2, DEADLINE_S,
                 "A to drop the client's peer messages")
        # It cannot even subscribe to the gossip: ZAP refuses its key, no session exists.
        refused = handshake(listener, f"tcp://127.0.0.1:{a.gossip_port}")
        assert refused == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        wait_for(lambda: info(a)["curve_refused"] >= 1, DEADLINE_S, "A to count the refusal")
        assert "refused a CURVE handshake from 127.0.0.1" in a.stderr()
        for node in (a, b):
            assert info(node)["digest"] == digest and node.client().get(KEY) is None
        assert sorted(statuses(a)) == sorted(statuses(b)) == ["a", "b"]
        assert list(statuses(s)) == ["s"] and list(statuses(n)) == ["n"]
        assert info(s)["received"] == info(n)["received"] == 0  # no write of A's or B's
        # The same push from a holder of the secret applies: the gate is what stopped it.
        assert handshake(peer, f"tcp://{a.address}") == zmq.EVENT_HANDSHAKE_SUCCEEDED
        peer.send(push)
        wait_for(lambda: a.client().get(KEY) == b"injected", DEADLINE_S, "the peer's push")
    finally:
        for sock in (intruder, listener, peer):
            sock.close()


def test_nodes_serving_different_current_secrets_still_link_while_one_rolls_out(
        kvd_factory, tmp_path) -> None:
    """The middle of a rotation: A already serves the new secret (first line) and still
    accepts the old; B still serves the old and already accepts the new. Each links to the
    other with its current key, fails, and moves on to the next key of its keyring. A goes by
    a host name (B's SUB connects to localhost:port; ZeroMQ names it by its address once it
    reconnects)."""
    new_secret_file(tmp_path / "old")
    new_secret_file(tmp_path / "new")
    old, new = ((tmp_path / n).read_text() for n in ("old", "new"))
    for name, text in (("a", new + old), ("b", old + new)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o600)
    ring_a = Keyring([bytes.fromhex(new), bytes.fromhex(old)])
    ring_b = Keyring([bytes.fromhex(old), bytes.fromhex(new)])
    a = curve_node(kvd_factory, "a", ring_a, tmp_path / "a", ["--bind", "localhost"])
    b = curve_node(kvd_factory, "b", ring_b, tmp_path / "b", ["--join", f"localhost:{a.port}"])
    wait_for(lambda: alive(a, b), DEADLINE_S, "A and B to link across the rotation")
    with a.client() as c:
        c.set("on-a", "1")
    with b.client() as c:
        c.set("on-b", "2")
    for node in (a, b):
        wait_for(lambda node=node: node.client().mget("on-a", "on-b") == [b"1", b"2"],
                 DEADLINE_S, f"both writes on {node.name}")
    assert info(a)["curve_key"] != info(b)["curve_key"]


# -- what users type ---------------------------------------------------------------------------


def test_kvsh_remembers_a_server_key_and_refuses_a_changed_one(kvd_factory, tmp_path) -> None:
    path = tmp_path / "secret"
    ring = secret(path)
    node = curve_node(kvd_factory, "n1", ring, path)
    key = ring.current.public.decode()
    known = tmp_path / "config" / "kvsh" / "known_hosts"
    plain = run_kvsh(tmp_path, node.port, "-c", "PING")
    assert plain.returncode == 3 and b"give its server key" in plain.stderr + plain.stdout
    first = run_kvsh(tmp_path, node.port, "--server-key", key, "-c", f"SET {KEY.decode()} v")
    assert first.returncode == 0 and first.stdout.strip() == b"OK", first.stderr
    assert known.read_text() == f"127.0.0.1:{node.port} {key}\n"  # trusted on first use
    again = run_kvsh(tmp_path, node.port, "-c", f"GET {KEY.decode()}")  # the stored key
    assert again.returncode == 0 and again.stdout.strip() == b"v", again.stderr
    before = known.read_bytes()
    other = secret(tmp_path / "other").current.public.decode()
    changed = run_kvsh(tmp_path, node.port, "--server-key", other, "-c", "PING")
    assert changed.returncode == 2 and changed.stdout == b""
    err = changed.stderr.decode()
    assert "has changed" in err and f"remove line 1 of {known}" in err
    assert known.read_bytes() == before
    # A wrong key for an address not yet known: no answer, and the error says why it may be.
    wrong = run_kvsh(tmp_path, node.port, "--host", "localhost", "--server-key", other,
                     "-c", "PING")
    assert wrong.returncode == 3
    assert b"a wrong server key looks exactly like this" in wrong.stdout + wrong.stderr
    assert known.read_bytes() == before  # nothing learnt from a failed handshake
    env = {**env_for(tmp_path), "KV_SERVER_KEY": key}
    piped = subprocess.run([sys.executable, "-m", "kvsh", "--host", "localhost", "--port",
                            str(node.port)], input=b"PING\nGET " + KEY + b"\n",
                           capture_output=True, env=env, timeout=60)
    assert piped.returncode == 0 and piped.stdout.split() == [b"PONG", b"v"], piped.stderr
    assert known.read_text().splitlines()[-1] == f"localhost:{node.port} {key}"


def test_the_python_client_with_a_server_key(kvd_factory, tmp_path) -> None:
    path = tmp_path / "secret"
    ring = secret(path)
    node = curve_node(kvd_factory, "n1", ring, path)
    from kvsh.client import connect

    with connect("127.0.0.1", node.port, server_key=ring.current.public) as kv:
        assert kv.set("a", "1") and kv.get("a") == b"1"
        assert [r.value for r in kv.pipeline([["SET", "b", "2"], ["MGET", "a", "b"]])] \
            == ["OK", [b"1", b"2"]]
        events = kv.watch("w:")
        assert "watching" in next(events)
        with node.client() as writer:
            writer.set("w:1", "x")
        assert next(events)["key"] == b"w:1"
        events.close()
        assert kv.info()["peer_messages_refused"] == 0


def test_the_shell_s_side_connections_and_connect_use_the_key(kvd_factory, tmp_path) -> None:
    """The REPL's completion and link monitor open connections of their own, and CONNECT
    opens one to another member: all with the cluster's server key."""
    import io

    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from kvsh.client import Client
    from kvsh.printer import Printer
    from kvsh.repl import Shell

    path = tmp_path / "secret"
    ring = secret(path)
    one, two = (curve_node(kvd_factory, name, ring, path) for name in ("n1", "n2"))
    out = io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text(f"SET cache:a 1\rCONNECT 127.0.0.1:{two.port}\rSET where n2\r")
        inp.close()
        shell = Shell(Client("127.0.0.1", one.port, timeout=2, server_key=one.server_key),
                      Printer("plain", out), history=InMemoryHistory(), input=inp,
                      output=DummyOutput(), monitor=False)
        shell.run()
    assert f"connected to 127.0.0.1:{two.port}" in out.getvalue(), out.getvalue()
    assert two.client().get("where") == b"n2"
    shell.run_line("SET cache:b 1")
    assert shell.keys.keys(b"cache:") == [b"cache:b"]  # a side connection, to n2 now
    shell.keys.close()


def kvd_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvd", *args], capture_output=True, text=True,
                          env=env_for(home), timeout=60)


def test_detached_start_prints_the_key_and_the_secret_shows_nowhere(tmp_path) -> None:
    path = tmp_path / "secret"
    made = kvd_cli(tmp_path, "secret", "new", str(path))
    assert made.returncode == 0, made.stderr
    hexed = path.read_text().strip()
    again = kvd_cli(tmp_path, "secret", "new", str(path))
    assert again.returncode == 1 and path.read_text().strip() == hexed
    key = kvd_cli(tmp_path, "secret", "key", str(path)).stdout.strip()
    derived = Keyring([bytes.fromhex(hexed)]).current
    assert key == derived.public.decode()
    port = str(free_port())
    started = kvd_cli(tmp_path, "start", "--port", port, "--resp-port", "0", "--http-port", "0",
                      "--cluster-secret-file", str(path))
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip().endswith(f"(server key {key})")
        assert len(started.stdout.strip().splitlines()) == 1
        status = kvd_cli(tmp_path, "status", "--port", port, "--json", "--server-key", key)
        assert status.returncode == 0, status.stderr
        node_info = json.loads(status.stdout)
        assert node_info["curve_key"] == key
        pid = node_info["pid"]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        log = (tmp_path / "state" / "kv" / "log" / f"127.0.0.1_{port}.log").read_text()
        assert key in log  # the foreground log says it
        for leak in (hexed, derived.secret.decode()):
            assert leak not in status.stdout and leak not in log
            assert leak.encode() not in argv
        locked_out = kvd_cli(tmp_path, "status", "--port", port)
        assert locked_out.returncode == 3 and "server key" in locked_out.stderr
        by_secret = kvd_cli(tmp_path, "status", "--port", port, "--cluster-secret-file",
                            str(path))
        assert by_secret.returncode == 0, by_secret.stderr
    finally:
        stopped = kvd_cli(tmp_path, "stop", "--port", port, "--server-key", key)
    assert stopped.returncode == 0, stopped.stderr


# -- hostile bytes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def curve_kvd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kvd]:
    home: Path = tmp_path_factory.mktemp("curve-fuzz")
    ring = secret(home / "secret")
    node = Kvd(home, "fuzz", ["--cluster-secret-file", str(home / "secret")],
               server_key=ring.current.public.decode())
    try:
        yield node.start()
    finally:
        try:
            node.stop()
        finally:
            node.kill()


MECHANISMS = st.sampled_from([b"CURVE", b"NULL", b"PLAIN", b"GSSAPI", b""]) | st.binary(
    max_size=20)
greeting = st.builds(
    lambda major, minor, mechanism, as_server, tail: (
        b"\xff" + bytes(8) + b"\x7f" + bytes([major, minor]) + mechanism.ljust(20, b"\0")[:20]
        + bytes([as_server]) + bytes(31) + tail),
    st.sampled_from([3, 3, 2, 1, 255]), st.sampled_from([0, 1, 0, 9]), MECHANISMS,
    st.sampled_from([0, 1, 7]),
    # what may follow a greeting: a command frame (HELLO's flag and size, then noise)
    st.one_of(st.binary(max_size=300),
              st.builds(lambda n, body: b"\x04" + bytes([n]) + b"\x05HELLO" + body,
                        st.integers(0, 255), st.binary(max_size=250))),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(greeting, st.binary(min_size=1, max_size=200)), min_size=1,
                max_size=3), st.booleans())
def test_hostile_bytes_on_the_curve_ports_never_stop_the_node(curve_kvd: Kvd,
                                                              payloads: list[bytes],
                                                              gossip: bool) -> None:
    port = curve_kvd.gossip_port if gossip else curve_kvd.port
    for payload in payloads:
        send_and_close(port, payload, timeout=2)
    with curve_kvd.client() as c:
        assert c.ping() == "PONG"


def test_after_the_hostile_bytes_the_node_serves_and_counted_them(curve_kvd: Kvd) -> None:
    with curve_kvd.client() as c:
        assert c.set("still", "here") and c.get("still") == b"here"
        assert c.info()["bad_handshakes"] > 0


def test_users_over_curve_and_a_peer_needs_no_login(kvd_factory, tmp_path) -> None:
    """Both layers at once: CURVE encrypts, users authorize. A second node joins a locked
    node (peers' messages are not user requests) and the users reach it."""
    path = tmp_path / "secret"
    ring = secret(path)
    a = curve_node(kvd_factory, "a", ring, path)
    env = env_for(tmp_path) | {"KV_SERVER_KEY": ring.current.public.decode()}
    out = subprocess.run([sys.executable, "-m", "kvd", "user", "add", "root", "--admin",
                          "--password-stdin", "--port", str(a.port)], input=b"root-pw\n",
                         capture_output=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    b = curve_node(kvd_factory, "b", ring, path, ["--join", a.address])
    with a.client(user="root", password="root-pw") as root:
        root.set("k", "v")
    with b.client() as anonymous:
        assert anonymous.execute("GET", "k").value[0] == "NOAUTH"

    def readable_on_b() -> bool:
        try:
            with b.client(user="root", password="root-pw") as c:
                return c.get("k") == b"v"
        except ServerError:
            return False

    wait_for(readable_on_b, what="the user and the key to reach b")
