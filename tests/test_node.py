"""Command semantics on one node, sans-IO: a fake clock, no sockets."""

from __future__ import annotations

import pytest

from kvd.state.hlc import HybridClock
from kvd.state.node import MAX_KEY, Context, Node
from shared.errors import KvError


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def node(clock: Clock) -> Node:
    return Node("n1", "127.0.0.1:1", HybridClock(clock), max_value=1024)


def run(node: Node, clock: Clock, *argv: bytes | str) -> object:
    args = [a if isinstance(a, bytes) else a.encode() for a in argv]
    return node.execute(args, Context(now=clock.ms, client=b"c", request_id=1))


def code(value: object) -> str:
    assert isinstance(value, KvError), value
    return value.code


def test_set_get_del_exists(node: Node, clock: Clock) -> None:
    assert run(node, clock, "SET", "k", "v") == "OK"
    assert run(node, clock, "GET", "k") == b"v"
    assert run(node, clock, "EXISTS", "k", "k", "nope") == 2
    assert run(node, clock, "DEL", "k", "nope") == 1
    assert run(node, clock, "GET", "k") is None
    assert run(node, clock, "DEL", "k") == 0


def test_nx_and_xx(node: Node, clock: Clock) -> None:
    assert run(node, clock, "SET", "k", "1", "XX") is None
    assert run(node, clock, "SET", "k", "1", "NX") == "OK"
    assert run(node, clock, "SET", "k", "2", "NX") is None
    assert run(node, clock, "SET", "k", "3", "XX") == "OK"
    assert run(node, clock, "GET", "k") == b"3"


def test_ttl_expire_and_expiry_on_the_fake_clock(node: Node, clock: Clock) -> None:
    assert run(node, clock, "TTL", "k") == -2
    run(node, clock, "SET", "k", "v", "EX", "10")
    assert run(node, clock, "TTL", "k") == 10
    clock.ms += 4_400
    assert run(node, clock, "TTL", "k") == 6
    run(node, clock, "SET", "p", "v", "PX", "1500")
    assert run(node, clock, "TTL", "p") == 2  # rounded like Redis
    clock.ms += 6_000
    assert run(node, clock, "GET", "k") is None
    assert run(node, clock, "DBSIZE") == 0
    run(node, clock, "SET", "k", "v")
    assert run(node, clock, "TTL", "k") == -1
    assert run(node, clock, "EXPIRE", "k", "5") == 1
    assert run(node, clock, "EXPIRE", "missing", "5") == 0
    assert run(node, clock, "TTL", "k") == 5
    assert run(node, clock, "EXPIRE", "k", "0") == 1  # a non-positive TTL deletes
    assert run(node, clock, "EXISTS", "k") == 0


def test_set_rejects_a_non_positive_expiry(node: Node, clock: Clock) -> None:
    assert code(run(node, clock, "SET", "k", "v", "EX", "0")) == "SYNTAX"


def test_mget_mset_keys_scan_dbsize(node: Node, clock: Clock) -> None:
    assert run(node, clock, "MSET", "a", "1", "b", "2", "c", "3") == "OK"
    assert run(node, clock, "MGET", "a", "x", "c") == [b"1", None, b"3"]
    assert sorted(run(node, clock, "KEYS")) == [b"a", b"b", b"c"]  # type: ignore[arg-type]
    assert run(node, clock, "KEYS", "[ab]") is not None
    cursor, found = run(node, clock, "SCAN", "0", "COUNT", "100")  # type: ignore[misc]
    assert cursor == b"0" and sorted(found) == [b"a", b"b", b"c"]
    assert run(node, clock, "DBSIZE") == 3
    assert code(run(node, clock, "SCAN", "99999")) == "SYNTAX"


def test_errors_are_replies_with_stable_codes(node: Node, clock: Clock) -> None:
    assert code(run(node, clock, "NOPE")) == "UNKNOWN_COMMAND"
    assert code(run(node, clock, "GET")) == "WRONG_ARITY"
    assert code(run(node, clock, "EXPIRE", "k", "x")) == "NOT_INTEGER"
    assert code(run(node, clock, "SET", "k", "v" * 1025)) == "TOO_LARGE"
    assert code(run(node, clock, "GET", b"k" * (MAX_KEY + 1))) == "TOO_LARGE"
    assert node.counters["errors"] == 5
    assert run(node, clock, "PING") == "PONG"


def test_writes_are_recorded_with_sequence_numbers_and_can_be_undone(node: Node,
                                                                      clock: Clock) -> None:
    run(node, clock, "SET", "k", "1")
    node.take_changes()
    digest = node.store.digest
    run(node, clock, "SET", "k", "2")
    run(node, clock, "DEL", "k")
    changes = node.take_changes()
    assert [c.seq for c in changes] == [2, 3]
    node.undo(changes)
    assert run(node, clock, "GET", "k") == b"1"
    assert node.store.digest == digest and node.seq == 1


def test_info_has_the_contract_fields_and_ping_echoes(node: Node, clock: Clock) -> None:
    info = run(node, clock, "INFO")
    assert isinstance(info, dict)
    assert {"name", "version", "uptime_s", "keys", "digest", "members"} <= set(info)
    assert run(node, clock, "PING", "hello") == b"hello"
    assert run(node, clock, "HELP", "get")[0] == b"GET key"  # type: ignore[index]
    assert len(run(node, clock, "HELP")) >= 16  # type: ignore[arg-type]


def test_watch_streams_changes_under_the_prefix(node: Node, clock: Clock) -> None:
    ctx = Context(now=clock.ms, client=b"w", request_id=9)
    ack = node.execute([b"WATCH", b"user:"], ctx)
    assert ack["history"] == "live"  # type: ignore[index]
    run(node, clock, "SET", "user:1", "bob")
    run(node, clock, "SET", "order:1", "x")
    events = [e for c in node.take_changes() for e in node.watches.record(c.key, c.entry)]
    assert [(cl, rid, e["key"], e["value"]) for cl, rid, e in events] == [
        (b"w", 9, b"user:1", b"bob")
    ]
