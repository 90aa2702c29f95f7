"""Peer messages stay under the frame limit and repair work stays bounded per turn: the
chunking helpers alone, then the cluster cores in the in-memory network (fake clock)."""

from __future__ import annotations

from kvd.cluster.antientropy import collect, entry_to_wire, to_push
from kvd.cluster.membership import Status
from kvd.cluster.peerwire import ENVELOPE, entry_size, fitting, split
from kvd.cluster.settings import Settings
from kvd.state.store import Entry, Store, bucket_of
from shared import codec
from shared.codec import MsgType
from tests.sim import SimNet

MIB = 1024 * 1024
LIMIT = Settings().chunk_bytes + ENVELOPE  # the most a message of several entries takes


def wire(n: int, size: int) -> list[list]:
    return [[b"k%d" % i, b"v" * size, 1, "o", 0] for i in range(n)]


def test_chunks_are_bounded_by_count_and_bytes_and_a_big_entry_travels_alone() -> None:
    items = wire(10, 300)
    assert [len(c) for c in split(items, entry_size, 4, 1 << 30)] == [4, 4, 2]
    one = entry_size(items[0])
    assert [len(c) for c in split(items, entry_size, 100, 3 * one)] == [3, 3, 3, 1]
    big = wire(3, 5 * MIB)
    assert [len(c) for c in split(big, entry_size, 100, MIB)] == [1, 1, 1]
    assert fitting(big, entry_size, 100, MIB) == 1
    assert split([], entry_size, 100, MIB) == []


def test_collect_and_to_push_stop_at_a_bucket_within_their_budget() -> None:
    store = Store()
    for i in range(5000):
        store.merge(b"key:%d" % i, Entry(b"x" * 200, 10 + i, "a", 0))
    empty = Store()
    buckets, entries, nxt = collect(store, empty.bucket_digests, 0, 1024, 1 << 40)
    assert 0 < len(entries) <= 1024 and nxt == buckets[-1] + 1
    buckets, entries, nxt = collect(store, empty.bucket_digests, 0, 1 << 20, 100_000)
    assert sum(map(entry_size, entries)) <= 100_000 and nxt > 0
    # The peer holds nothing: it answers every bucket with no entries, and we push a step.
    all_buckets = list(range(1024))
    push, cut = to_push(store, all_buckets, [], 1024, 1 << 40)
    assert 0 < len(push) <= 1024 and cut is not None
    assert {bucket_of(w[0]) for w in push} == set(range(cut))
    push, cut = to_push(store, all_buckets, [entry_to_wire(k, e) for k, e in store.items()])
    assert push == [] and cut is None


class Wire:
    """Records, per message a node handles (one `_route` call), what it sends."""

    def __init__(self, net: SimNet) -> None:
        self.frames: list[tuple[str, MsgType, int, int]] = []  # src, type, bytes, entries
        self.turns: list[tuple[str, int]] = []  # src, entries sent in one call
        route = net._route

        def recording(src, outs, requester) -> None:
            sent = 0
            for out in outs:
                body = out.msg.body
                n = len(body.get("items") or body.get("entries") or [])
                sent += n
                self.frames.append((src.name, out.msg.type, len(codec.encode_peer(out.msg)), n))
            self.turns.append((src.name, sent))
            route(src, outs, requester)

        net._route = recording  # type: ignore[method-assign]


def test_a_turn_of_big_values_leaves_as_gossip_under_the_frame_limit() -> None:
    net = SimNet().form("a", "b")
    rec = Wire(net)
    a = net.nodes["a"]
    for i in range(8):  # one turn: 8 writes of 600 KiB, committed together
        a.node.write(b"big:%d" % i, b"x" * (600 * 1024), 0)
    net._commit(a)
    gossip = [(size, n) for src, t, size, n in rec.frames if t is MsgType.GOSSIP]
    assert len(gossip) == 8 and all(size <= LIMIT or n == 1 for size, n in gossip)
    assert net.run_until(net.converged, 10_000)


def test_a_store_joining_an_empty_node_moves_in_bounded_steps_and_once() -> None:
    net = SimNet()
    a = net.add("a", ["b:1"])  # its seed comes up later
    n = 20_000
    for i in range(n):
        a.node.write(b"key:%012d" % i, b"v" * 100, 0)
    net._commit(a)
    rec = Wire(net)
    net.add("b")
    assert net.run_until(net.converged, 60_000), "b never held a's keys"
    net.run(5_000)  # and nothing more moves afterwards
    # Each message a handles makes it send at most a step of anti-entropy or a chunk of
    # catch-up (b also catches up on a's stream while it is in a's backlog).
    s = Settings()
    assert max(sent for src, sent in rec.turns if src == "a") <= max(s.step_entries,
                                                                       s.catchup_chunk)
    assert all(size <= LIMIT or n == 1 for _, _, size, n in rec.frames)
    moved = {t: sum(k for src, t_, _, k in rec.frames if src == "a" and t_ is t)
             for t in (MsgType.SYNC_PUSH, MsgType.SYNC_REPLY, MsgType.CATCHUP_REPLY)}
    assert moved[MsgType.SYNC_PUSH] + moved[MsgType.SYNC_REPLY] + moved[MsgType.CATCHUP_REPLY] == n


def test_a_member_back_from_dead_gets_a_pass_at_once() -> None:
    net = SimNet().form("a", "b")
    a = net.nodes["a"]
    net.faults.cut.add(frozenset(("a", "b")))
    assert net.run_until(lambda: a.cluster.ms.members["b"].status is Status.DEAD, 20_000)
    net.heal()
    rounds = a.cluster.repair.ae.rounds
    # Writes keep flowing on a, which holds its periodic pass back (for up to 20 s): only
    # the member's return starts one.
    back_at = None
    for i in range(100):
        net.write("a", b"w%d" % i, b"v")
        net.run(100)
        if back_at is None and a.cluster.ms.members["b"].status is Status.ALIVE:
            back_at = net.now
        if a.cluster.repair.ae.rounds > rounds:
            break
    assert back_at is not None, "b never came back"
    assert a.cluster.repair.ae.rounds > rounds and net.now - back_at <= 2_000
