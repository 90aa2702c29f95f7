"""A node with no peers skips the cluster's per-write work, and loses nothing by it."""

from __future__ import annotations

from kvd.cluster.cluster import Settings
from kvd.cluster.replication import Replication
from kvd.state.store import NBUCKETS, Entry
from tests.sim import SimNet
from tests.test_sim_cluster import Model, assert_converged


def test_alone_the_writes_are_kept_for_the_stream_but_not_gossiped() -> None:
    net = SimNet()
    alone = net.add("n0")
    for i in range(20):
        alone.node.write(b"k%d" % i, b"v")
    changes = alone.node.take_changes()
    assert alone.cluster.committed(changes, net.now) == []  # nobody to tell
    assert alone.cluster.published == 20
    assert [seq for seq, *_ in alone.cluster.repl.mine.backlog] == list(range(1, 21))


def test_with_a_member_the_same_writes_are_gossiped() -> None:
    net = SimNet().form("n0", "n1")
    n0 = net.nodes["n0"]
    n0.node.write(b"k", b"v")
    outs = n0.cluster.committed(n0.node.take_changes(), net.now)
    assert len(outs) == 1 and outs[0].msg.body["items"][0][1] == b"k"


def test_writes_made_alone_reach_a_node_that_joins_later() -> None:
    net = SimNet()
    net.add("n0")
    model = Model()
    for i in range(500):
        model.record(b"k%d" % i, net.write("n0", b"k%d" % i, b"v%d" % i))
    net.add("n1", ["n0:1"])
    assert_converged(net, model)


def test_local_all_leaves_the_stream_as_local_one_by_one_does() -> None:
    class C:
        def __init__(self, seq: int) -> None:
            self.seq, self.key, self.entry = seq, b"k%d" % seq, Entry(b"v", seq << 16, "a")

    changes = [C(s) for s in range(5, 12)]
    one, many = Replication("a", 1, 5), Replication("a", 1, 5)
    for c in changes:
        one.local(c.seq, c.key, c.entry)
    many.local_all(changes)
    a, b = one.mine, many.mine
    assert (a.contiguous, a.stable, list(a.backlog)) == (b.contiguous, b.stable, list(b.backlog))


def test_with_no_tombstones_gc_moves_on_as_a_scan_would() -> None:
    net = SimNet(settings=Settings(gc_buckets=NBUCKETS // 3))
    node = net.add("n0")
    node.node.write(b"k", b"v")
    for _ in range(5):
        assert node.cluster.collect_tombstones(net.now) == 0
    assert node.cluster.gc_cursor == 5 * (NBUCKETS // 3) % NBUCKETS
    node.node.write(b"k", None)  # a tombstone: the scan runs again
    for _ in range(4):  # a full sweep, whatever bucket the key is in
        node.cluster.collect_tombstones(net.now + Settings().tombstone_max_age_ms + 1)
    assert node.node.store.tombstones == 0
