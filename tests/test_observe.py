"""OBSERVE's waiters (kvd.raft.observers), sans-IO: on Consensus objects wired in memory
(tests.test_consensus.Net), a follower's observer is answered once that follower applies a new
leader, a resignation or a revoked lease; a wait runs out with the unchanged state; a node
behind the client's view waits rather than answer older; the cap refuses clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvd.consensus import Consensus
from kvd.raft.coord import Coordination
from kvd.raft.coordcodec import encode_campaign, encode_grant, encode_resign
from kvd.raft.observers import Observers
from kvd.state.context import Deferred
from shared.errors import Busy, NoQuorum
from tests.test_consensus import Net


def committed(net: Net, node: Consensus, command: tuple) -> dict:
    answer = node.submit(command)
    assert net.run_until(lambda: answer.done)
    assert isinstance(answer.value, dict), answer.value
    return answer.value


def group(tmp: Path) -> tuple[Net, Consensus, Consensus]:
    net = Net(tmp)
    a = net.add("a", found=True)
    b = net.add("b", found=False)
    assert net.run_until(lambda: b.info()["raft_voters"] == "a,b"
                         and b.info()["raft_leader"] == "a")
    return net, a, b


def test_a_follower_observer_sees_a_new_leader_then_none(tmp_path: Path) -> None:
    net, a, b = group(tmp_path)
    now = b.observers.observe(b"sched", None, 30_000)
    assert isinstance(now, dict) and now["value"] is None and now["lease"] == 0
    waiting = b.observers.observe(b"sched", now["revision"], 30_000)
    assert isinstance(waiting, Deferred) and not waiting.done

    lease = committed(net, a, ("grant", 60_000, 0))["lease"]
    committed(net, a, ("campaign", b"sched", b"node-a", lease))
    assert net.run_until(lambda: waiting.done)
    seen = waiting.value
    assert seen["value"] == b"node-a" and seen["lease"] == lease
    assert seen["revision"] > now["revision"]
    assert committed(net, b, ("leader", b"sched"))["revision"] == seen["revision"]

    nobody = b.observers.observe(b"sched", seen["revision"], 30_000)
    committed(net, a, ("resign", b"sched", lease))
    assert net.run_until(lambda: nobody.done)
    assert nobody.value["value"] is None and nobody.value["revision"] > seen["revision"]
    again = b.observers.observe(b"sched", None, 30_000)  # the same answer until a change
    assert again == nobody.value
    assert b.observers.count == 0 and not b.observers.waiting


def test_a_revoked_lease_and_a_successor_are_changes_too(tmp_path: Path) -> None:
    net, a, b = group(tmp_path)
    first = committed(net, a, ("grant", 60_000, 0))["lease"]
    second = committed(net, a, ("grant", 60_000, 0))["lease"]
    committed(net, a, ("campaign", b"e", b"one", first))
    committed(net, a, ("campaign", b"e", b"two", second))
    assert net.run_until(lambda: b.coord.elections.get(b"e") is not None
                         and len(b.coord.elections[b"e"].candidates) == 2)
    seen = b.observers.observe(b"e", None, 30_000)
    assert seen["value"] == b"one"
    behind_first = b.observers.observe(b"e", seen["revision"], 30_000)
    committed(net, a, ("campaign", b"e", b"two again", second))  # not the leader: no change
    net.step()
    assert not behind_first.done
    committed(net, a, ("revoke", first))  # the leader's lease ends: the next in line leads
    assert net.run_until(lambda: behind_first.done)
    assert behind_first.value["value"] == b"two again"
    assert behind_first.value["lease"] == second


def test_a_wait_runs_out_with_the_unchanged_state(tmp_path: Path) -> None:
    net, a, b = group(tmp_path)
    now = b.observers.observe(b"quiet", None, 30_000)
    waiting = b.observers.observe(b"quiet", now["revision"], 350)  # 4 ticks of 100 ms
    for _ in range(3):
        b.tick()
    assert not waiting.done
    b.tick()
    assert waiting.done and waiting.value == now
    assert b.observers.count == 0 and not b.observers.waiting


def test_a_node_behind_the_client_waits_instead_of_answering_older() -> None:
    coord = Coordination()
    observers = Observers(coord, lambda: True)
    coord.apply(1, encode_grant(60_000, 0))
    coord.apply(2, encode_campaign(b"e", b"old", 1))
    # The client saw revision 9 on a node further on; this one has applied only up to 2.
    waiting = observers.observe(b"e", 9, 30_000)
    assert isinstance(waiting, Deferred) and not waiting.done
    coord.apply(5, encode_grant(60_000, 0))
    coord.apply(9, encode_campaign(b"e", b"old", 5))  # queued behind: revision stays 2
    coord.apply(10, encode_resign(b"e", 1))  # now 5 leads, at revision 10
    observers.wake()
    assert waiting.done and waiting.value["revision"] == 10
    assert waiting.value["lease"] == 5


def test_a_leaderless_election_keeps_one_revision_until_it_changes() -> None:
    coord = Coordination()
    observers = Observers(coord, lambda: True)
    coord.apply(3, encode_grant(60_000, 0))
    first = observers.observe(b"never", None, 1000)
    coord.apply(7, encode_grant(60_000, 0))  # unrelated entries move `applied`, not the revision
    assert observers.observe(b"never", None, 1000) == first == {
        "value": None, "lease": 0, "revision": 3}


def test_the_cap_refuses_and_no_leader_refuses() -> None:
    coord = Coordination()
    known = {"leader": True}
    observers = Observers(coord, lambda: known["leader"], cap=2)
    revision = observers.observe(b"e", None, 1000)["revision"]
    observers.observe(b"e", revision, 1000)
    observers.observe(b"f", revision, 1000)
    with pytest.raises(Busy, match="already has 2 OBSERVE waiting"):
        observers.observe(b"g", revision, 1000)
    known["leader"] = False
    with pytest.raises(NoQuorum):
        observers.observe(b"e", None, 1000)

