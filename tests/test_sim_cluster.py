"""The cluster core in the in-memory network: convergence under drops, duplicates, delays,
partitions, restarts; checked against a last-writer-wins model. Fake clock, no sleeps."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvd.cluster.antientropy import Walk
from kvd.cluster.cluster import Settings
from kvd.cluster.membership import Status
from kvd.state.store import Entry
from tests.sim import Faults, SimNet

HEAL_LIMIT_MS = 60_000


def cluster(n: int = 3, seed: int = 0, **kw) -> SimNet:
    return SimNet(seed, **kw).form(*(f"n{i}" for i in range(n)))


class Model:
    """Last writer wins, computed from every write issued anywhere."""

    def __init__(self) -> None:
        self.best: dict[bytes, Entry] = {}

    def record(self, key: bytes, entry: Entry) -> None:
        old = self.best.get(key)
        if old is None or entry.version > old.version:
            self.best[key] = entry

    def live(self, now: int) -> dict[bytes, tuple[bytes, int]]:
        return {k: (e.value, e.expires_at) for k, e in self.best.items()  # type: ignore[misc]
                if e.live(now)}


def assert_converged(net: SimNet, model: Model) -> None:
    assert net.run_until(net.converged, HEAL_LIMIT_MS), "digests still differ after healing"
    for _ in range(2):  # and it stays so: nothing comes back once tombstones are collected
        want = model.live(net.now)
        for node in net.live():
            assert net.data(node.name) == want, f"{node.name} differs from the LWW model"
        net.run(5000)


op = st.tuples(
    st.integers(0, 2),  # node
    st.integers(0, 15),  # key
    st.sampled_from(["set", "set", "del", "ttl", "restart"]),
    st.integers(0, 60),  # ms to let pass after it
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(op, min_size=1, max_size=60),
    drop=st.floats(0, 0.5), dup=st.floats(0, 0.3), spread=st.integers(1, 300),
    cut=st.sets(st.sampled_from([("n0", "n1"), ("n1", "n2"), ("n0", "n2")]), max_size=2),
    skew=st.integers(-50, 50), seed=st.integers(0, 2**16),
)
def test_random_writes_under_faults_converge_to_lww(ops, drop, dup, spread, cut, skew,
                                                     seed) -> None:
    net = cluster(3, seed)
    net.nodes["n2"].skew_ms = skew  # clocks disagree a little
    net.faults = Faults(drop, dup, (1, spread), {frozenset(p) for p in cut})
    model = Model()
    for i, (who, k, kind, pause) in enumerate(ops):
        key, name = b"k%d" % k, f"n{who}"
        if kind == "restart":  # a crash; it comes back with its data (as from its log)
            net.restart(name, keep_data=True)
            continue
        value = None if kind == "del" else b"v%d" % i
        expires = net.now + 100 if kind == "ttl" else 0
        model.record(key, net.write(name, key, value, expires))
        net.run(pause)
    net.heal()
    assert_converged(net, model)


def test_partition_both_sides_write_then_heal() -> None:
    net = cluster(3)
    model = Model()
    net.faults = Faults(cut={frozenset(("n0", "n2")), frozenset(("n1", "n2"))})
    for i in range(200):
        name = "n2" if i % 2 else "n0"
        model.record(b"k%d" % (i % 50), net.write(name, b"k%d" % (i % 50), b"v%d" % i))
    net.run(8000)
    assert net.nodes["n0"].cluster.ms.get("n2").status in (Status.SUSPECT, Status.DEAD)
    net.heal()
    assert_converged(net, model)
    assert net.run_until(lambda: all(m.status is Status.ALIVE for x in net.live()
                                     for m in x.cluster.ms.members.values()), 10_000)


def test_restart_without_memory_catches_up_and_resurrects_nothing() -> None:
    net = cluster(3)
    model = Model()
    for i in range(100):
        model.record(b"k%d" % i, net.write("n1", b"k%d" % i, b"v"))
    net.run(1000)
    net.nodes["n2"].up = False  # kill -9
    for i in range(0, 100, 2):
        model.record(b"k%d" % i, net.write("n0", b"k%d" % i, None))
    net.run(6000)
    net.restart("n2", keep_data=True)  # back with its old data, which still has k0, k2, ...
    for i in range(5):
        model.record(b"new%d" % i, net.write("n2", b"new%d" % i, b"x"))
    assert_converged(net, model)
    assert b"k0" not in net.data("n2")


def test_a_fresh_node_joining_gets_everything() -> None:
    net = cluster(2)
    model = Model()
    for i in range(3000):
        model.record(b"k%d" % i, net.write(f"n{i % 2}", b"k%d" % i, b"v%d" % i))
    net.run(500)
    net.add("late", ["n1:1"])
    assert_converged(net, model)
    assert net.nodes["late"].cluster.repair.ae.keys_pulled > 0


def test_relay_reaches_a_member_cut_off_from_the_origin() -> None:
    net = cluster(3)
    net.faults = Faults(cut={frozenset(("n0", "n2"))})  # n1 hears both
    net.run(3000)
    model = Model()
    for i in range(50):
        model.record(b"k%d" % i, net.write("n0", b"k%d" % i, b"v"))
    net.run(200)  # well under the anti-entropy period: only relaying can explain it
    assert net.data("n2") == model.live(net.now)
    assert net.nodes["n1"].cluster.counters["relayed"] >= 50


def test_tombstones_are_collected_once_everyone_has_them() -> None:
    net = cluster(3)
    for i in range(50):
        net.write("n0", b"k%d" % i, b"v")
        net.write("n0", b"k%d" % i, None)
    assert net.run_until(lambda: all(x.node.store.tombstones == 0 and len(x.node.store) == 0
                                     for x in net.live()), 30_000)


def test_a_dead_member_holds_back_collection_until_the_max_age() -> None:
    net = cluster(3, settings=replace(Settings(), tombstone_max_age_ms=20_000))
    net.run(5000)  # every stream settled by anti-entropy
    net.nodes["n2"].up = False
    net.run(8000)
    net.write("n0", b"gone", b"v")
    net.write("n0", b"gone", None)
    net.run(5000)
    assert net.nodes["n0"].node.store.tombstones == 1  # n2 might still hold the value
    net.run(20_000)
    assert net.nodes["n0"].node.store.tombstones == 0  # past the maximum age: dropped


def test_graceful_leave_is_shown_as_left() -> None:
    net = cluster(3)
    n2 = net.nodes["n2"]
    net._route(n2, n2.cluster.leave(net.now), None)
    n2.up = False
    net.run(6000)
    for name in ("n0", "n1"):
        assert net.nodes[name].cluster.ms.get("n2").status is Status.LEFT


def test_strangers_other_clusters_and_malformed_bodies_are_dropped_and_counted() -> None:
    from shared.codec import MsgType, Peer

    net = cluster(2)
    core = net.nodes["n0"].cluster
    before = net.nodes["n0"].node.store.digest
    good_item = [10**9, b"k", b"v", 1, 0]
    bad = [
        Peer(MsgType.GOSSIP, "other", "n1", {}),  # another cluster
        Peer(MsgType.GOSSIP, "kv", "mallory", {"origin": "mallory", "epoch": 1, "base": 1,
                                               "items": [good_item]}),  # not a member
        Peer(MsgType.GOSSIP, "kv", "n1", {"origin": "n1", "epoch": "x"}),
        Peer(MsgType.GOSSIP, "kv", "n1", {"origin": "n1", "epoch": 2**40, "base": 1,
                                          "items": [good_item, [1, "not bytes", 3, 4, 5]]}),
        Peer(MsgType.SYNC, "kv", "n1", {"digests": [0] * 3, "cursor": 0}),
        Peer(MsgType.HEARTBEAT, "kv", "n1", {"incarnation": 1, "members": [["x"]],
                                             "stream": [1, 1, 1, 1], "vector": {}}),
        Peer(MsgType.WELCOME, "kv", "n1", {"members": "nope"}),
    ]
    for msg in bad:
        assert core.receive(msg, net.now) == []
    c = core.counters
    assert (c["dropped_wrong_cluster"], c["dropped_stranger"], c["dropped_malformed"]) == (1, 1, 5)
    assert net.nodes["n0"].node.store.digest == before  # nothing half-applied


def test_a_member_that_left_does_not_hold_back_collection() -> None:
    net = cluster(3)
    net.write("n2", b"from-n2", b"v")
    net.run(3000)
    n2 = net.nodes["n2"]
    net._route(n2, n2.cluster.leave(net.now), None)
    n2.up = False
    net.write("n0", b"k", b"v")
    net.write("n0", b"k", None)
    assert net.run_until(lambda: all(x.node.store.tombstones == 0 for x in net.live()), 30_000)


def test_members_show_replication_lag_of_a_cut_off_member() -> None:
    net = cluster(3)
    net.faults = Faults(cut={frozenset(("n0", "n2")), frozenset(("n1", "n2"))})
    for i in range(40):
        net.write("n0", b"k%d" % i, b"v")
    net.run(1000)
    rows = {r["name"]: r for r in net.nodes["n0"].cluster.members_view(net.now)}
    assert rows["n1"]["lag"] == 0 and rows["n2"]["lag"] == 40
    assert rows["n2"]["last_seen_ms"] >= 800 and rows["n0"]["self"]


SKEW_MS = 30_000


def skewed_cluster(skew_ms: int) -> SimNet:
    """n0 and n1 on the network's time, `odd` with its wall clock `skew_ms` off."""
    net = SimNet()
    net.add("n0")
    net.add("n1", ["n0:1"])
    net.add("odd", ["n0:1"], skew_ms=skew_ms)
    assert net.run_until(lambda: all(len(x.cluster.ms.members) == 3 for x in net.live())
                         and all(x.cluster.clocks.of(p.name) is not None for x in net.live()
                                 for p in x.cluster.ms.others()), 10_000)
    net.run(2000)  # a few heartbeats more: the smoothed offsets settle
    return net


@pytest.mark.parametrize("skew_ms", [-SKEW_MS, SKEW_MS])
def test_clock_offsets_are_measured_reported_and_warned_about(skew_ms) -> None:
    net = skewed_cluster(skew_ms)
    n0, odd = net.nodes["n0"].cluster, net.nodes["odd"].cluster
    # A sample reads low by the one-way delay (here up to a 20 ms tick and 5 ms in flight).
    rows = {r["name"]: r for r in n0.members_view(net.now)}
    assert abs(rows["odd"]["clock_offset_ms"] - skew_ms) <= 50
    assert abs(rows["n1"]["clock_offset_ms"]) <= 50 and rows["n0"]["clock_offset_ms"] == 0
    assert abs(n0.info(net.now)["max_clock_offset_ms"] - SKEW_MS) <= 50
    assert abs(odd.info(odd.ms.me.last_seen)["max_clock_offset_ms"] - SKEW_MS) <= 50
    # Past the bound (500 ms by default): one warning per peer, then quiet for a minute.
    assert [p for p, _ in n0.clock_warnings(net.now)] == ["odd"]
    assert sorted(p for p, _ in odd.clock_warnings(net.nodes["odd"].wall())) == ["n0", "n1"]
    assert n0.clock_warnings(net.now + 1000) == []
    assert [p for p, _ in n0.clock_warnings(net.now + 61_000)] == ["odd"]
    assert n0.counters["clock_offset_warnings"] == 2
    assert [p for p, _ in net.nodes["n1"].cluster.clock_warnings(net.now)] == ["odd"]


def test_clocks_within_the_bound_raise_no_warning() -> None:
    net = skewed_cluster(200)
    assert all(x.cluster.clock_warnings(x.wall()) == [] for x in net.live())
    assert 150 <= net.nodes["n0"].cluster.info(net.now)["max_clock_offset_ms"] <= 250


@pytest.mark.parametrize("skew_ms", [-SKEW_MS, SKEW_MS])
def test_a_ttl_set_on_a_skewed_node_lives_its_ttl_everywhere(skew_ms) -> None:
    net = skewed_cluster(skew_ms)
    assert net.command("odd", b"SET", b"k", b"v", b"EX", b"10") == "OK"
    net.run(200)
    for name in net.nodes:  # not born expired anywhere, and the same TTL everywhere
        assert net.data(name).get(b"k", (None,))[0] == b"v", name
        assert net.command(name, b"TTL", b"k") in (9, 10), name
    net.run(9000)
    assert all(net.command(name, b"GET", b"k") == b"v" for name in net.nodes)
    net.run(1500)  # and it expires everywhere at the same moment, give or take a heartbeat
    assert all(net.command(name, b"GET", b"k") is None for name in net.nodes)
    assert net.converged()


def test_a_ttl_set_by_expire_on_a_slow_node_lives_everywhere() -> None:
    net = skewed_cluster(-SKEW_MS)
    net.command("odd", b"SET", b"k", b"v")
    assert net.command("odd", b"EXPIRE", b"k", b"5") == 1
    net.run(200)
    assert all(net.command(name, b"TTL", b"k") in (4, 5) for name in net.nodes)


def test_a_heartbeat_without_wall_time_is_taken_from_an_older_peer() -> None:
    from shared.codec import MsgType, Peer

    net = cluster(2)
    n1 = net.nodes["n1"]
    heartbeat = n1.cluster._heartbeat(net.now).msg
    body = {k: v for k, v in heartbeat.body.items() if k != "wall"}
    core = net.nodes["n0"].cluster
    core.clocks = type(core.clocks)(500)  # measured nothing yet
    core.receive(Peer(MsgType.HEARTBEAT, "kv", "n1", body), net.now)
    assert core.counters["dropped_malformed"] == 0
    rows = {r["name"]: r for r in core.members_view(net.now)}
    assert rows["n1"]["clock_offset_ms"] is None
    assert core.info(net.now)["max_clock_offset_ms"] == 0


wire_value = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.binary(max_size=8)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=5),
    max_leaves=20,
)
FIELDS = ["origin", "epoch", "base", "items", "address", "gossip", "incarnation", "members",
          "stream", "vector", "low", "hears", "first", "last", "gone", "digests", "cursor",
          "buckets", "entries", "next", "progress", "seq", "wall"]


@settings(max_examples=300, deadline=None)
@given(mtype=st.integers(7, 16), body=st.dictionaries(st.sampled_from(FIELDS), wire_value))
def test_no_peer_body_crashes_the_core(mtype, body) -> None:
    from shared.codec import MsgType, Peer

    net = _fuzz_net()
    core = net.nodes["n0"].cluster
    core.repair.walk = None
    core.receive(Peer(MsgType(mtype), "kv", "n1", body), net.now)
    assert core.counters["dropped_unforeseen"] == 0, body


_NET: list[SimNet] = []


def _fuzz_net() -> SimNet:
    if not _NET:
        _NET.append(cluster(2))
    return _NET[0]


def _sample_traffic() -> list:
    """Valid messages of every kind, captured from a small cluster at work."""
    from shared import codec

    net = SimNet(3)
    seen: dict = {}
    post = net._post

    def record(src: str, dst: str, frame: bytes) -> None:
        msg = codec.decode(frame)
        seen.setdefault(msg.type, msg)
        post(src, dst, frame)

    net._post = record  # type: ignore[method-assign]
    net.add("n0")
    net.add("n1", ["n0:1"])
    net.run(3000)
    net.faults = Faults(drop=0.5)
    for i in range(300):
        net.write("n1", b"k%d" % i, b"v")
    net.heal()
    net.run(3000)
    n1 = net.nodes["n1"]
    net._route(n1, n1.cluster.leave(net.now), None)
    return list(seen.values())


SAMPLES = _sample_traffic()


@settings(max_examples=600, deadline=None)
@given(pick=st.integers(0, 100), field=st.sampled_from(FIELDS), value=wire_value,
       drop=st.booleans())
def test_no_mutated_peer_message_crashes_the_core(pick, field, value, drop) -> None:
    from shared.codec import Peer

    msg = SAMPLES[pick % len(SAMPLES)]
    body = dict(msg.body)
    if drop:
        body.pop(field, None)
    else:
        body[field] = value
    net = _fuzz_net()
    core = net.nodes["n0"].cluster
    core.repair.walk = Walk("n1", net.now, net.now)  # so that a SYNC_REPLY is taken in
    core.receive(Peer(msg.type, "kv", "n1", body), net.now)
    assert core.counters["dropped_unforeseen"] == 0, (msg.type, field, value)
