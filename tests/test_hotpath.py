"""The fast paths of the request path give the same answers as the general ones."""

from __future__ import annotations

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from kvd.state.node import Context, Node
from kvd.state.store import Entry, Store, entry_hash
from shared import codec
from shared.errors import KvError


def run(node: Node, *argv: bytes) -> object:
    return node.execute(list(argv), Context(now=1_000))


def test_plain_and_parsed_calls_agree() -> None:
    node = Node("a", "a:1")
    assert run(node, b"SET", b"k", b"v") == "OK"
    assert run(node, b"set", b"k2", b"v", b"EX", b"10") == "OK"  # options: the parser's path
    assert run(node, b"GET", b"k") == b"v"
    assert run(node, b"TTL", b"k2") == 10  # an INTEGER-free command still converts replies
    assert run(node, b"PING") == "PONG" and run(node, b"PING", b"hi") == b"hi"
    assert run(node, b"DBSIZE") == 2


def test_errors_still_come_from_the_grammar() -> None:
    node = Node("a", "a:1")
    assert isinstance(run(node, b"GET"), KvError)
    assert isinstance(run(node, b"SET", b"k"), KvError)
    assert isinstance(run(node, b"NOPE"), KvError)
    assert isinstance(run(node, b"EXPIRE", b"k", b"soon"), KvError)
    assert node.counters["errors"] == 4


def test_size_limits_hold_on_the_fast_path() -> None:
    node = Node("a", "a:1", max_value=8)
    assert run(node, b"SET", b"k", b"12345678") == "OK"
    assert getattr(run(node, b"SET", b"k", b"123456789"), "code", None) == "TOO_LARGE"
    node.max_value = 4  # the floor follows the limit
    assert getattr(run(node, b"SET", b"k", b"12345"), "code", None) == "TOO_LARGE"
    assert getattr(run(node, b"GET", b"x" * (64 * 1024 + 1)), "code", None) == "TOO_LARGE"


PINNED = 17518950467074611260  # changing it changes what every node of a cluster computes


def test_entry_hash_is_pinned_and_the_same_in_every_process() -> None:
    # Nodes compare digests: the value must not depend on the process (no salted hashing).
    import os
    import subprocess
    import sys

    assert entry_hash(b"key:000000000001", Entry(b"v" * 100, 1 << 40, "n1")) == PINNED
    code = ("from kvd.state.store import Entry, entry_hash; "
            "print(entry_hash(b'k', Entry(b'value', 12345, 'node-é', 7)))")
    seen = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "random")
    }
    assert seen == {f"{entry_hash(b'k', Entry(b'value', 12345, 'node-é', 7))}\n"}


def test_the_digest_follows_the_version_not_the_value_bytes() -> None:
    one, other = Store(), Store()
    one.merge(b"k", Entry(b"x" * 1000, 7, "a"))
    other.merge(b"k", Entry(b"x" * 1000, 7, "a"))
    assert one.digest == other.digest
    for changed in (Entry(b"x" * 1000, 8, "a"), Entry(b"x" * 1000, 7, "b"),
                    Entry(b"x" * 1000, 7, "a", expires_at=9)):
        s = Store()
        s.merge(b"k", changed)
        assert s.digest != one.digest


def test_digest_does_not_collapse_like_a_crc() -> None:
    def digest(pairs: list[tuple[bytes, bytes]]) -> int:
        s = Store()
        for i, (k, v) in enumerate(pairs):
            s.merge(k, Entry(v, i + 1, "a"))
        return s.digest

    assert digest([(b"k01", b"v"), (b"k10", b"v")]) != digest([(b"k00", b"v"), (b"k11", b"v")])


def test_digest_is_order_free_and_tracks_overwrites() -> None:
    a, b = Store(), Store()
    entries = [(b"x", Entry(b"1", 1, "n")), (b"x", Entry(b"2", 2, "n")),
               (b"y", Entry(None, 3, "n"))]
    for k, e in entries:
        a.merge(k, e)
    for k, e in reversed(entries):
        b.merge(k, e)
    assert a.digest == b.digest != 0
    c = Store()
    c.merge(b"x", Entry(b"2", 2, "n"))
    assert c.digest == a.digest and a.tombstones == 1 and a.live_count == 1


def test_argv_of_bytes_passes_through_and_str_is_encoded() -> None:
    req = codec.decode(codec.encode_request(3, [b"GET", b"k"]))
    assert req == codec.Request(3, [b"GET", b"k"])
    req = codec.decode(msgpack.packb([1, 1, 4, ["GET", "ké"]]))
    assert req.argv == [b"GET", "ké".encode()]


def test_server_survives_a_message_of_three_frames(kvd) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"tcp://127.0.0.1:{kvd.port}")
        sock.send_multipart([b"junk", codec.encode_request(1, [b"PING"])])
        assert sock.poll(5000)
        bad = codec.decode(sock.recv())
        assert bad.request_id == 0 and bad.is_error
        sock.send(codec.encode_request(2, [b"PING"]))
        assert sock.poll(5000)
        assert codec.decode(sock.recv()) == codec.Reply(2, codec.ReplyKind.STATUS, "PONG")
    finally:
        sock.close()
    with kvd.client() as c:
        assert c.info()["bad_frames"] == 1


def test_a_local_write_leaves_what_apply_would() -> None:
    """Node.write inlines apply(): same store, same change record, same sequence."""
    from kvd.state.hlc import HybridClock

    inlined = Node("a", "a:1", clock=HybridClock(lambda: 5))
    general = Node("a", "a:1", clock=HybridClock(lambda: 5))
    for i, value in enumerate([b"v", b"w", None, b"x"]):
        entry = inlined.write(b"k%d" % (i % 2), value, i * 7)
        general.seq += 1
        assert general.apply(b"k%d" % (i % 2), Entry(value, entry.stamp, "a", i * 7), general.seq)
    assert inlined.seq == general.seq == 4
    assert dict(inlined.store.items()) == dict(general.store.items())
    assert [(c.key, c.entry, c.previous, c.seq) for c in inlined.take_changes()] == \
        [(c.key, c.entry, c.previous, c.seq) for c in general.take_changes()]


_batch_commands = st.one_of(
    st.tuples(st.just(b"SET"), st.sampled_from([b"a", b"b", b"c"]), st.binary(max_size=12)),
    st.tuples(st.just(b"GET"), st.sampled_from([b"a", b"b", b"c", b"x" * 20])),
    st.tuples(st.just(b"set"), st.sampled_from([b"a", b"b"]), st.binary(max_size=4)),
    st.tuples(st.just(b"SET"), st.just(b"b"), st.just(b"v"), st.just(b"EX"), st.just(b"9")),
    st.tuples(st.just(b"SET"), st.just(b"c"), st.binary(min_size=17, max_size=18)),  # too big
    st.tuples(st.just(b"DEL"), st.sampled_from([b"a", b"c"])),
    st.tuples(st.just(b"GET")),  # wrong arity
    st.tuples(st.just(b"MGET"), st.just(b"a"), st.just(b"b")),
).map(list)


@settings(max_examples=300, deadline=None)
@given(st.lists(_batch_commands, min_size=1, max_size=30), st.integers(0, 3))
def test_a_batch_leaves_what_one_request_at_a_time_would(commands: list, ahead: int) -> None:
    """execute_batch inlines plain SET and GET: the same replies, store, changes (stamps and
    sequence numbers included), counters and clock as `execute`, request by request."""
    from kvd.state.hlc import HybridClock

    def node() -> Node:
        n = Node("a", "a:1", clock=HybridClock(lambda: 5), max_value=16)
        n.clock.last = (5 << 16) + ahead - 2  # sometimes behind the wall clock, sometimes not
        return n

    batched, single = node(), node()
    requests = [[rid, argv] for rid, argv in enumerate(commands, 1)]
    replies, wrote = batched.execute_batch(requests, Context(now=5))
    expected, expected_wrote = [], []
    for rid, argv in requests:
        before = len(single.changes)
        expected.append((rid, single.execute(argv, Context(now=5))))
        if len(single.changes) != before:
            expected_wrote.append(rid - 1)

    def comparable(pairs: list) -> list:
        return [(rid, (v.code, v.message) if isinstance(v, KvError) else v) for rid, v in pairs]

    assert comparable(replies) == comparable(expected) and wrote == expected_wrote
    assert dict(batched.store.items()) == dict(single.store.items())
    assert batched.store.digest == single.store.digest
    assert [(c.key, c.entry, c.previous, c.seq) for c in batched.take_changes()] == \
        [(c.key, c.entry, c.previous, c.seq) for c in single.take_changes()]
    assert (batched.seq, batched.clock.last) == (single.seq, single.clock.last)
    assert batched.counters == single.counters


def test_batch_decoding_checks_every_pair_and_encodes_text() -> None:
    batch = codec.decode(msgpack.packb([1, 3, [[1, [b"GET", b"k"]], [2, ["SET", "k", "é"]]]]))
    assert batch == codec.Batch([[1, [b"GET", b"k"]], [2, [b"SET", b"k", "é".encode()]]])
    for bad in ([[1]], [[-1, [b"GET"]]], [[1, []]], [[1, [b"GET", 5]]], [["1", [b"PING"]]],
                [[1, b"PING"]]):
        with pytest.raises(KvError):
            codec.decode(msgpack.packb([1, 3, bad]))


def test_requests_of_several_clients_run_together_keep_who_sent_each() -> None:
    """The server runs a turn's one-request messages from every client as one batch: a WATCH
    among them must still belong to the client that sent it."""
    node = Node("a", "a:1")
    requests = [[7, [b"SET", b"k1", b"v"]], [1, [b"WATCH", b"k"]], [8, [b"SET", b"k2", b"w"]],
                [2, [b"GET", b"k1"]]]
    replies, wrote = node.execute_batch(requests, Context(now=1_000), [b"B", b"A", b"B", b"C"])
    assert [rid for rid, _ in replies] == [7, 1, 8, 2] and wrote == [0, 2]
    assert replies[3][1] == b"v"
    events = node.watches.record_all(node.take_changes())
    assert [(client, rid, e["key"]) for client, rid, e in events] == [(b"A", 1, b"k1"),
                                                                      (b"A", 1, b"k2")]


_stream_items = st.lists(st.tuples(st.integers(0, 2**63), st.binary(max_size=4),
                                   st.one_of(st.none(), st.binary(max_size=4)),
                                   st.integers(0, 2**63), st.integers(0, 2**63)), max_size=6)
# For each field of a stream item, values of the wrong type or range.
_not_int = st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=2),
                     st.binary(max_size=2))
_bad_field = [
    _not_int,
    st.one_of(st.none(), st.text(max_size=2), st.integers(), st.lists(st.integers(), max_size=2)),
    st.one_of(st.text(max_size=2), st.integers(), st.booleans()),
    st.one_of(_not_int, st.integers(max_value=-1)),
    st.one_of(_not_int, st.integers(max_value=-1)),
]


@settings(max_examples=200, deadline=None)
@given(_stream_items, st.text(max_size=3))
def test_well_formed_stream_items_come_back_as_sent(items: list, origin: str) -> None:
    from kvd.cluster.peerwire import items_from_wire, wire_item

    sent = [(seq, key, Entry(value, stamp, origin, exp)) for seq, key, value, stamp, exp in items]
    assert items_from_wire([wire_item(*item) for item in sent], origin) == sent


@settings(max_examples=400, deadline=None)
@given(_stream_items.filter(bool), st.data())
def test_one_bad_field_anywhere_refuses_the_whole_stream(items: list, data) -> None:  # noqa: ANN001
    from kvd.cluster.peerwire import items_from_wire
    from shared.errors import ProtocolError

    raw = [list(item) for item in items]
    where = data.draw(st.integers(0, len(raw) - 1))
    damage = data.draw(st.sampled_from(["field", "length", "shape"]))
    if damage == "field":
        field = data.draw(st.integers(0, 4))
        raw[where][field] = data.draw(_bad_field[field])
    elif damage == "length":
        raw[where] = raw[where] + [0] if data.draw(st.booleans()) else raw[where][:-1]
    else:
        raw[where] = tuple(raw[where])
    with pytest.raises(ProtocolError):
        items_from_wire(raw, "o")


def test_a_stream_needs_a_text_origin() -> None:
    from kvd.cluster.peerwire import items_from_wire
    from shared.errors import ProtocolError

    with pytest.raises(ProtocolError):
        items_from_wire([], 7)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c"]),
                          st.one_of(st.none(), st.binary(max_size=3)),
                          st.integers(1, 6), st.sampled_from(["p", "q"])), max_size=20))
def test_applying_a_peer_stream_at_once_leaves_what_apply_would(writes: list) -> None:
    one, many = Node("a", "a:1"), Node("a", "a:1")
    items = [(i, key, Entry(value, stamp, origin, 0))
             for i, (key, value, stamp, origin) in enumerate(writes, 1)]
    for seq, key, entry in items:
        one.apply(key, entry, seq)
    many.apply_all(items)
    assert dict(one.store.items()) == dict(many.store.items())
    assert one.store.digest == many.store.digest
    assert [(c.key, c.entry, c.previous, c.seq) for c in one.take_changes()] == \
        [(c.key, c.entry, c.previous, c.seq) for c in many.take_changes()]
