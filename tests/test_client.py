"""The Python client API against a real kvd."""

from __future__ import annotations

import pytest

from kvsh.client import Client, ServerError, Timeout, Unreachable, connect
from shared.codec import ReplyKind
from tests.procs import Kvd, free_port


def test_the_command_api(kvd: Kvd) -> None:
    with connect("127.0.0.1", kvd.port, timeout=5) as kv:
        assert kv.ping() == "PONG"
        assert kv.set("k", "v") is True
        assert kv.set("k", "w", nx=True) is False
        assert kv.set("e", b"\x00\xff", ex=100) is True
        assert kv.get("k") == b"v" and kv.get("e") == b"\x00\xff"
        assert 0 < kv.ttl("e") <= 100 and kv.ttl("k") == -1
        kv.mset({"a": "1", "b": "2"})
        assert kv.mget("a", "zz", "b") == [b"1", None, b"2"]
        assert kv.exists("a", "b", "zz") == 2
        assert kv.expire("a", 100) is True
        assert sorted(kv.keys()) == [b"a", b"b", b"e", b"k"]
        assert sorted(kv.scan_iter(match="[ab]", count=1)) == [b"a", b"b"]
        assert kv.delete("a", "zz") == 1
        assert kv.dbsize() == 3
        assert kv.info()["keys"] == 3
        assert kv.members()[0]["status"] == "alive"


def test_error_replies_raise_with_the_server_code(kvd: Kvd) -> None:
    with kvd.client() as kv:
        with pytest.raises(ServerError) as info:
            kv.call("GET")
        assert info.value.code == "WRONG_ARITY"
        assert kv.execute("NOPE").kind is ReplyKind.ERROR  # execute returns, call raises


@pytest.mark.parametrize("batch", [True, False])
def test_pipeline_returns_replies_in_order(kvd: Kvd, batch: bool) -> None:
    with kvd.client() as kv:
        n = 3000
        replies = kv.pipeline([["SET", f"p{i}", i] for i in range(n)], batch=batch)
        assert all(r.value == "OK" for r in replies)
        got = kv.pipeline([["GET", f"p{i}"] for i in range(n)] + [["NOPE"]], batch=batch)
        assert [r.value for r in got[:n]] == [str(i).encode() for i in range(n)]
        assert got[-1].is_error


def test_watch_as_an_iterator(kvd: Kvd) -> None:
    with kvd.client() as watcher, kvd.client() as writer:
        stream = watcher.watch("user:")
        ack = next(stream)
        assert ack["history"] == "live"
        writer.set("user:1", "ann")
        writer.set("other", "x")
        writer.delete("user:1")
        first, second = next(stream), next(stream)
        assert (first["key"], first["value"], first["deleted"]) == (b"user:1", b"ann", False)
        assert (second["key"], second["deleted"]) == (b"user:1", True)
        assert first["origin"] == kvd.name and second["cursor"] > first["cursor"]
        stream.close()
        resumed = watcher.watch("user:", since=first["cursor"])
        assert next(resumed)["history"] == "replayed"
        assert next(resumed)["cursor"] == second["cursor"]
        resumed.close()


def test_refused_connection_fails_fast() -> None:
    with pytest.raises(Unreachable, match="refused"), Client("127.0.0.1", free_port(), 5) as c:
        c.ping()


def test_timeouts_recover_when_the_server_comes_back(kvd: Kvd) -> None:
    import signal

    with kvd.client(timeout=0.3) as kv:
        kv.set("t", "1")
        kvd.signal(signal.SIGSTOP)
        try:
            with pytest.raises(Timeout):
                kv.get("t")
        finally:
            kvd.signal(signal.SIGCONT)
        kv.timeout = 5
        assert kv.get("t") == b"1"  # the late reply to the timed-out GET is not mistaken


def test_every_oversize_request_gets_too_large_never_a_timeout(kvd: Kvd) -> None:
    """Values just over max_value_size (16 MiB) are read and refused by the node; requests over
    its message limit (max_value_size + 1 MiB), which ZeroMQ would drop unread, are refused by
    the client, which learns the limit from INFO. Either way a TOO_LARGE, not a timeout."""
    mib = 2**20
    with kvd.client(timeout=10) as kv:
        for size in (16 * mib + 1, 17 * mib, 18 * mib):
            with pytest.raises(ServerError) as info:
                kv.set(b"k", b"x" * size)
            assert info.value.code == "TOO_LARGE", (size, info.value)
        with pytest.raises(ServerError) as info:  # each value fits, the message does not
            kv.mset({b"a": b"x" * 9 * mib, b"b": b"y" * 9 * mib})
        assert info.value.code == "TOO_LARGE"
        assert kv.info()["max_message_size"] == 17 * mib
        for batch in (True, False):  # in a pipeline only the big one fails, in its place
            replies = kv.pipeline([["SET", "s", "1"], ["SET", "big", b"x" * 17 * mib],
                                   ["GET", "s"], ["SET", "fits", b"z" * 15 * mib]], batch=batch)
            assert [r.value for r in replies[::2]] == ["OK", b"1"]
            assert replies[1].is_error and replies[1].value[0] == "TOO_LARGE"
            assert replies[3].value == "OK"
        assert kv.exists("k", "a", "b", "big") == 0 and kv.ping() == "PONG"
