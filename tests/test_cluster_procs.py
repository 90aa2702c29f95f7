"""Real kvd processes on loopback: replication, conflicts, crashes, hangs, joins and leaves.

Every wait polls with a deadline (tests.procs.wait_for); nothing sleeps and hopes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from shared import codec
from shared.codec import MsgType, Peer
from tests.procs import Kvd, info, statuses, wait_for

DEADLINE_S = 30


def converged(*nodes: Kvd) -> bool:
    return len({info(n)["digest"] for n in nodes}) == 1


def start_cluster(kvd_factory: Callable[..., Kvd], n: int = 3) -> list[Kvd]:
    first = kvd_factory("n0")
    nodes = [first] + [kvd_factory(f"n{i}", ["--join", first.address]) for i in range(1, n)]
    for node in nodes:
        wait_for(lambda node=node: list(statuses(node).values()) == ["alive"] * n, DEADLINE_S,
                 f"{node.name} to see {n} alive members")
    return nodes


def test_writes_on_each_node_replicate_and_concurrent_writes_converge(kvd_factory) -> None:
    nodes = start_cluster(kvd_factory)
    for i, node in enumerate(nodes):
        with node.client() as c:
            c.set(f"from{i}", f"v{i}")
            c.set("ttl", "x", ex=600)
            c.delete("nothing")

    def everywhere() -> bool:
        return all(n.client().mget("from0", "from1", "from2") == [b"v0", b"v1", b"v2"]
                   for n in nodes)

    wait_for(everywhere, DEADLINE_S, "every write on every node")

    def hammer(node: Kvd, tag: str) -> None:
        with node.client(timeout=30) as c:
            c.pipeline([["SET", "hot", f"{tag}{i}"] for i in range(3000)])

    threads = [threading.Thread(target=hammer, args=(n, n.name)) for n in nodes[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: converged(*nodes), DEADLINE_S, "equal digests")
    values = {n.client().get("hot") for n in nodes}
    assert len(values) == 1 and values.pop().endswith(b"2999")
    assert 0 < nodes[2].client().ttl("ttl") <= 600  # the origin's expiry travelled with it
    # Heartbeats carry wall time: every node measures every peer's clock (one host here, so
    # the offsets are the one-way delays; their size is the simulator's to check).
    assert all(type(info(n)["max_clock_offset_ms"]) is int for n in nodes)
    wait_for(lambda: all(type(r["clock_offset_ms"]) is int for n in nodes
                         for r in n.client().members()), DEADLINE_S, "clock offsets measured")


def test_a_killed_node_catches_up_after_restart_and_resurrects_nothing(kvd_factory) -> None:
    n0, n1, n2 = start_cluster(kvd_factory)
    with n0.client() as c:
        c.pipeline([["SET", f"k{i}", "old"] for i in range(1000)])
    wait_for(lambda: converged(n0, n1, n2), DEADLINE_S, "the first load everywhere")
    n2.kill()
    with n1.client() as c:
        c.pipeline([["DEL", f"k{i}"] for i in range(0, 1000, 2)])
        c.pipeline([["SET", f"new{i}", "x"] for i in range(1000)])
    n2.start()  # no --join: it rejoins the members it knew (members.json), and it comes
    # back with its log, which still holds the deleted keys as live values
    wait_for(lambda: converged(n0, n1, n2), DEADLINE_S, "the restarted node to catch up")
    for node in (n0, n1, n2):
        with node.client() as c:
            assert c.exists(*[f"k{i}" for i in range(0, 1000, 2)]) == 0
            assert c.dbsize() == 1500
    wait_for(lambda: set(statuses(n0).values()) == {"alive"}, DEADLINE_S, "n2 alive again")


def test_a_hung_node_is_suspected_then_catches_up_on_a_burst(kvd_factory, tmp_path) -> None:
    # Tiny gossip buffers, so that the burst overflows them for certain and gap repair must
    # do the work (with the default, 30k writes in 1000-write messages would still fit).
    config = tmp_path / "small-buffers.toml"
    config.write_text("gossip_hwm = 4\n")
    first = kvd_factory("n0", ["--config", str(config)])
    n1 = kvd_factory("n1", ["--config", str(config), "--join", first.address])
    n2 = kvd_factory("n2", ["--config", str(config), "--join", first.address])
    n0 = first
    for node in (n0, n1, n2):
        wait_for(lambda node=node: list(statuses(node).values()) == ["alive"] * 3, DEADLINE_S,
                 "three alive members")
    n2.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: statuses(n0)["n2"] in ("suspect", "dead"), DEADLINE_S, "suspicion")
        wait_for(lambda: statuses(n0)["n2"] == "dead", DEADLINE_S, "n2 declared dead")
        # far more than the gossip buffers hold: loopback TCP buffers alone autotune to tens
        # of MB here (tcp_rmem max 32 MiB), so the burst is ~48 MB, not just many writes
        with n0.client(timeout=60) as c:
            c.pipeline([["SET", f"burst{i}", f"{i:08d}" * 200] for i in range(30_000)])
    finally:
        n2.signal(signal.SIGCONT)
    wait_for(lambda: converged(n0, n1, n2), 60, "the hung node to catch up")
    assert n2.client().dbsize() == 30_000
    wait_for(lambda: statuses(n0)["n2"] == "alive", DEADLINE_S, "n2 to refute")
    # PUB drops silently: the repair counters show the buffers overflowed. n2 catches up, or
    # the others push to it in the pass they start when it is back from dead (counted when
    # the pass ends).
    def repaired() -> int:
        got = info(n2)
        return got["catchup_received"] + got["ae_keys_pulled"] + sum(
            info(n)["ae_keys_pushed"] for n in (n0, n1))

    wait_for(repaired, DEADLINE_S, "the repair counters to show the lost gossip")


def test_a_fresh_node_joining_a_loaded_cluster_gets_everything(kvd_factory) -> None:
    n0, n1 = start_cluster(kvd_factory, 2)
    with n0.client() as c:
        c.pipeline([["SET", f"a{i}", "v"] for i in range(10_000)])
    with n1.client() as c:
        c.pipeline([["SET", f"b{i}", "v"] for i in range(10_000)])
    # DEL deletes what the node it runs on holds: let n1 see n0's writes first (reads on
    # another node see a write only after replication lag; see README, Cluster)
    wait_for(lambda: converged(n0, n1), DEADLINE_S, "n1 to hold n0's writes")
    with n1.client() as c:
        c.pipeline([["DEL", f"a{i}"] for i in range(100)])
    late = kvd_factory("late", ["--join", n1.address])
    wait_for(lambda: converged(n0, n1, late), DEADLINE_S, "the newcomer to hold everything")
    assert late.client().dbsize() == 19_900
    wait_for(lambda: statuses(n0).get("late") == "alive", DEADLINE_S, "n0 to learn of it")


def test_graceful_stop_is_shown_as_left(kvd_factory) -> None:
    n0, n1, n2 = start_cluster(kvd_factory)
    assert n2.stop() == 0
    for node in (n0, n1):
        wait_for(lambda node=node: statuses(node)["n2"] == "left", DEADLINE_S, "left")
    assert info(n0)["members_left"] == 1


@pytest.mark.parametrize("frame", [
    codec.encode_peer(Peer(MsgType.JOIN, "another", "x", {})),
    codec.encode_peer(Peer(MsgType.GOSSIP, "kv", "stranger", {"origin": "stranger"})),
    codec.encode_peer(Peer(MsgType.SYNC, "kv", "x", {"digests": "garbage", "cursor": 0})),
    b"\x95\x02\x0a\xa2kv\xa1x\x80",  # protocol version 2
])
def test_peer_messages_that_do_not_belong_are_dropped_and_counted(kvd, frame: bytes) -> None:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{kvd.address}")
    try:
        sock.send(frame)

        def counted() -> bool:
            got = info(kvd)
            return sum(v for k, v in got.items() if k.startswith("dropped_")) + \
                got["bad_frames"] > 0
        wait_for(counted, DEADLINE_S, "the message to be counted")
    finally:
        sock.close()
    with kvd.client() as c:
        assert c.ping() == "PONG" and c.dbsize() == 0


def test_gossip_port_in_use_is_one_clear_line(kvd_factory, tmp_path) -> None:
    import subprocess
    import sys

    from tests.procs import env_for, free_port

    first = kvd_factory("first")
    done = subprocess.run(
        [sys.executable, "-m", "kvd", "start", "--foreground", "--port", str(free_port()),
         "--gossip-port", str(first.gossip_port), "--resp-port", "0", "--http-port", "0",
         "--data-dir", str(tmp_path / "other")],
        capture_output=True, text=True, env=env_for(tmp_path), timeout=60)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("kvd:")]
    assert len(lines) == 1 and "gossip port" in lines[0], done.stderr


def test_watch_on_one_node_sees_writes_made_on_another(kvd_factory) -> None:
    n0, n1 = start_cluster(kvd_factory, 2)
    events: list[dict] = []

    def watch() -> None:
        with n1.client() as c:
            for event in c.watch("w:", poll_s=0.05):
                if "key" in event:
                    events.append(event)
                    return
                n0.client().set("w:1", "hello")  # after the acknowledgement: no race

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    t.join(DEADLINE_S)
    assert events and events[0]["key"] == b"w:1" and events[0]["origin"] == "n0"


def test_members_that_come_back_on_other_ports_find_each_other(kvd_factory) -> None:
    n0, n1 = start_cluster(kvd_factory, 2)
    n0.stop()
    n1.stop()
    # Both restart on their data dirs and on new ports; n1 remembers n0's old address.
    new0 = kvd_factory("n0", data_dir=n0.data_dir)
    new1 = kvd_factory("n1", ["--join", new0.address], data_dir=n1.data_dir)
    wait_for(lambda: {m["name"]: m["address"] for m in new1.client().members()}.get("n0")
             == new0.address, DEADLINE_S, "n1 to follow n0 to its new address")
    new0.client().set("after-the-move", "1")
    wait_for(lambda: new1.client().get("after-the-move") == b"1", DEADLINE_S, "gossip")
    assert info(new1)["received"] >= 1  # by gossip, not only by anti-entropy


LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="needs libfaketime (apt-get install faketime)")
def test_a_node_30s_behind_is_measured_and_its_ttls_live_on_the_others(kvd_factory,
                                                                       monkeypatch) -> None:
    n0, n1 = start_cluster(kvd_factory, 2)
    slow = kvd_factory("slow", ["--join", n0.address], start=False)
    with monkeypatch.context() as m:  # only the slow node's process runs on the fake clock
        m.setenv("LD_PRELOAD", str(LIBFAKETIME))
        m.setenv("FAKETIME", "-30s")
        m.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        slow.start()

    def offset_of_slow() -> int | None:
        rows = {r["name"]: r for r in n0.client().members()}
        return rows["slow"].get("clock_offset_ms") if "slow" in rows else None

    wait_for(lambda: (offset_of_slow() or 0) < -29_000, DEADLINE_S, "n0 to measure slow's clock")
    assert info(n0)["max_clock_offset_ms"] > 29_000
    wait_for(lambda: "the clock of slow is -" in n0.stderr(), DEADLINE_S, "n0's warning")
    assert slow.client().set("k", "v", ex=10)
    for node in (n0, n1):  # not born expired: visible, with (about) the TTL it was given
        wait_for(lambda node=node: node.client().get("k") == b"v", DEADLINE_S,
                 f"slow's key with a TTL on {node.name}")
        assert 0 < node.client().ttl("k") <= 10
