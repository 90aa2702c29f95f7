"""The Redis door through real clients: redis-py (RESP2 and RESP3), redis-cli, a telnet-style
socket; writes seen through every door and on another node; bad input that costs nothing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Callable

import pytest

from tests.procs import Kvd, run_kvsh, send_and_close, wait_for

redis = pytest.importorskip("redis", reason="redis-py is a test dependency: pip install -e .[test]")


def client(node: Kvd, protocol: int = 2) -> redis.Redis:
    return redis.Redis(port=node.resp_port, protocol=protocol, socket_timeout=10)


def raw(node: Kvd) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.resp_port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _members(node: Kvd) -> int:
    with node.client() as c:
        return len(c.members())


def read_until(sock: socket.socket, end: bytes) -> bytes:
    got = b""
    while not got.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_crud_pipelines_scan_and_transactions(kvd: Kvd, protocol: int) -> None:
    r = client(kvd, protocol)
    assert r.ping() is True
    assert r.set("user:1", "ann", ex=100) is True
    assert r.get("user:1") == b"ann" and 0 < r.ttl("user:1") <= 100
    assert r.set("user:1", "bob", nx=True) is None
    assert r.incr("n") == 1 and r.incrby("n", 41) == 42 and r.incrbyfloat("n", 0.5) == 42.5
    assert r.mset({"a": 1, "b": 2}) is True and r.mget("a", "b", "zz") == [b"1", b"2", None]
    assert r.append("a", "x") == 2 and r.getrange("a", 0, 0) == b"1"
    assert r.rename("b", "c") is True and r.exists("b", "c") == 1
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"p:{i}", i)
    assert all(pipe.execute())
    assert sorted(r.scan_iter(match="p:*", count=100)) == sorted(
        f"p:{i}".encode() for i in range(500))
    assert r.delete("a", "c", "missing") == 2
    assert r.type("user:1") == b"string" and r.type("nope") == b"none"
    info = r.info()
    assert info["redis_version"] and info["db0"]["keys"] == r.dbsize()
    with r.pipeline() as tx:
        tx.set("t", 1).incr("t").get("t")
        assert tx.execute() == [True, 2, b"2"]


def test_watch_conflict_aborts_exec_whichever_door_wrote(kvd: Kvd) -> None:
    r = client(kvd)
    r.set("balance", 10)
    with r.pipeline() as tx:
        tx.watch("balance")
        with kvd.client() as native:
            native.set("balance", 99)  # another door changes the key after WATCH
        tx.multi()
        tx.set("balance", 0)
        with pytest.raises(redis.WatchError):
            tx.execute()
    assert r.get("balance") == b"99"
    with r.pipeline() as tx:  # untouched: EXEC runs
        tx.watch("balance")
        tx.multi()
        tx.set("balance", 1)
        assert tx.execute() == [True]


def test_queued_errors_abort_exec_as_redis_does(kvd: Kvd) -> None:
    sock = raw(kvd)
    sock.sendall(b"MULTI\r\nSET a 1\r\nNOSUCH x\r\nGET\r\nEXEC\r\nGET a\r\n")
    got = read_until(sock, b"$-1\r\n")
    assert got == (b"+OK\r\n+QUEUED\r\n"
                   b"-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n"
                   b"-ERR wrong number of arguments for 'get' command\r\n"
                   b"-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n")


@pytest.mark.parametrize("protocol", [2, 3])
def test_keyspace_notifications_carry_every_write_replicated_ones_included(
        kvd_factory: Callable[..., Kvd], protocol: int) -> None:
    a = kvd_factory("a")
    b = kvd_factory("b", extra=["--join", a.address])
    wait_for(lambda: _members(b) == 2, what="b to join a")
    # b's gossip must reach a before the writes under test: a subscribes to b's PUB only once
    # it has heard of b, and a write published before that waits for the next repair round.
    with b.client() as c:
        c.set("probe", "1")

    def a_has_probe() -> bool:
        with a.client() as c:
            return c.get("probe") == b"1"

    wait_for(a_has_probe, what="b's gossip to reach a")
    pubsub = client(a, protocol).pubsub()
    pubsub.psubscribe("__keyspace@0__:user:*")
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
    with b.client() as c:  # written on the other node: arrives by gossip
        c.set("user:7", "zoe")
        c.delete("user:7")
        c.set("other", "x")
    events = []
    wait_for(lambda: events.append(pubsub.get_message(timeout=1)) or len(
        [e for e in events if e]) >= 2, what="two notifications")
    got = [(e["channel"], e["data"]) for e in events if e]
    assert got[:2] == [(b"__keyspace@0__:user:7", b"set"), (b"__keyspace@0__:user:7", b"del")]
    pubsub.close()


def test_a_write_through_resp_is_read_through_kvsh_the_client_and_another_node(
        kvd_factory: Callable[..., Kvd]) -> None:
    a = kvd_factory("a")
    b = kvd_factory("b", extra=["--join", a.address])
    client(a).set("greeting", "héllo")
    with a.client() as c:
        assert c.get("greeting") == "héllo".encode()
    done = run_kvsh(a.home, a.port, "-c", "GET greeting")
    assert done.stdout.strip() == "héllo".encode()
    wait_for(lambda: client(b).get("greeting") == "héllo".encode(), what="replication to b")


def test_telnet_style_inline_session(kvd: Kvd) -> None:
    sock = raw(kvd)
    sock.sendall(b"SET name Alice\r\nGET name\r\nSET \"two words\" 'x y'\r\nGET \"two words\"\r\n")
    assert read_until(sock, b"x y\r\n") == b"+OK\r\n$5\r\nAlice\r\n+OK\r\n$3\r\nx y\r\n"
    sock.sendall(b"SET \"broken\r\n")
    assert read_until(sock, b"\r\n") == b"-ERR Protocol error: unbalanced quotes in request\r\n"
    assert sock.recv(10) == b""  # closed, as Redis closes it


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed "
                    "(apt-get install redis-tools)")
def test_redis_cli_one_shot_and_scan(kvd: Kvd) -> None:
    def cli(*args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(kvd.resp_port), *args],
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    assert cli("SET", "k:1", "v") == "OK"
    assert cli("MSET", "k:2", "v", "k:3", "v") == "OK"
    assert cli("GET", "k:1") == "v"
    assert sorted(cli("--scan", "--pattern", "k:*").split()) == ["k:1", "k:2", "k:3"]
    assert "redis_version:" in cli("INFO", "server")
    assert cli("NOSUCH").startswith("ERR unknown command 'NOSUCH'")


def test_bad_input_costs_one_connection_and_nothing_else(kvd: Kvd) -> None:
    r = client(kvd)
    r.set("safe", "1")
    for garbage in (b"\x00\xff\xfe garbage\r\n", b"*1\r\n$1000000000\r\n",
                    b"*99999999999\r\n", b"*1\r\n:5\r\n", b"*2\r\n$3\r\nGET\r\n"):
        sock = raw(kvd)
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)  # half a request, then gone
        read_until(sock, b"\r\n")
        sock.close()
    assert r.get("safe") == b"1" and r.dbsize() == 1


def test_a_client_that_never_reads_does_not_stall_the_others(kvd: Kvd) -> None:
    hog = raw(kvd)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    big = b"x" * 100_000
    client(kvd).set("big", big)
    request = b"GET big\r\n" * 200
    stop = threading.Event()

    def flood() -> None:  # 20 MB of replies asked for, none read
        try:
            for _ in range(100):
                if stop.is_set():
                    return
                hog.sendall(request)
        except OSError:
            pass

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    r = client(kvd)
    for i in range(50):
        assert r.set(f"other:{i}", i) is True
    assert r.get("other:49") == b"49"
    stop.set()
    hog.close()
    t.join(10)


def test_a_subscriber_that_stops_reading_is_dropped_and_counted(kvd: Kvd) -> None:
    """A PSUBSCRIBE client with a tiny receive window that never reads: once 64 MiB of
    notifications wait for it (OUTPUT_LIMIT, as Redis's client-output-buffer-limit for
    pub/sub) it is closed, logged and counted; a subscriber that reads goes on hearing."""
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    stuck.settimeout(30)
    stuck.connect(("127.0.0.1", kvd.resp_port))
    stuck.sendall(b"PSUBSCRIBE *\r\n")
    assert read_until(stuck, b":1\r\n").startswith(b"*3\r\n$10\r\npsubscribe")
    live = client(kvd).pubsub()
    live.psubscribe("__keyspace@0__:after*")
    assert live.get_message(timeout=10)["type"] == "psubscribe"

    def dropped() -> int:
        with kvd.client() as c:
            return c.info()["resp_dropped_slow_subscribers"]

    r = client(kvd)
    # A 60 KiB key makes two notifications of about that size for a `*` subscriber (its
    # keyspace and keyevent channels): the limit is passed after about 550 writes.
    for batch in range(20):
        with r.pipeline(transaction=False) as p:
            for i in range(100):
                p.set(b"%d:" % (batch * 100 + i) + b"k" * 60_000, b"v")
            p.execute()
        if dropped():
            break
    assert dropped() == 1
    r.set("after", "1")
    heard = live.get_message(timeout=10)
    assert heard["channel"] == b"__keyspace@0__:after" and heard["data"] == b"set"
    assert r.get("after") == b"1"
    got = 0
    while data := stuck.recv(1 << 20):  # what was in flight, then the close
        got += len(data)
    assert got < 80 << 20
    assert "dropped a subscriber that stopped reading" in kvd.stderr()
    live.close()


def test_maxclients_refuses_with_redis_words(kvd_factory: Callable[..., Kvd], tmp_path) -> None:
    config = tmp_path / "kvd.toml"
    config.write_text("maxclients = 2\n")
    node = kvd_factory("m", extra=["--config", str(config)])
    keep = [raw(node), raw(node)]
    for s in keep:
        s.sendall(b"PING\r\n")
        assert read_until(s, b"\r\n") == b"+PONG\r\n"
    third = raw(node)
    assert read_until(third, b"\r\n") == b"-ERR max number of clients reached\r\n"
    for s in keep:
        s.close()


def test_expired_keys_are_announced_on_the_keyevent_channel(kvd: Kvd) -> None:
    pubsub = client(kvd, 3).pubsub()
    pubsub.subscribe("__keyevent@0__:expired")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    client(kvd).set("brief", "x", px=50)
    message = wait_for(lambda: pubsub.get_message(timeout=1), what="the expired event")
    assert (message["channel"], message["data"]) == (b"__keyevent@0__:expired", b"brief")
    pubsub.close()


def test_random_bytes_on_the_port_never_cost_the_node(kvd: Kvd) -> None:
    """Hypothesis throws bytes (and half-requests) at the live port; after each, the node
    answers a well-behaved client and its data is intact."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    r = client(kvd)
    r.set("safe", "1")
    pieces = st.one_of(st.binary(max_size=64), st.sampled_from(
        [b"*", b"$", b"\r\n", b"*2\r\n", b"$3\r\nSET\r\n", b"$-5\r\n", b"*999999999\r\n",
         b"$2147483648\r\n", b'"', b"'", b"\x00", b"PING\r\n", b"MULTI\r\n"]))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(pieces, max_size=8))
    def throw(parts: list[bytes]) -> None:
        send_and_close(kvd.resp_port, b"".join(parts))
        assert r.get("safe") == b"1"

    throw()
    assert r.dbsize() == 1
