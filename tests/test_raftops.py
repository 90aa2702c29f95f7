"""Operators' changes to the consensus group, sans-IO (tests.test_consensus.Net): RAFT REMOVE
of a dead member through a follower, the reconciler keeping it out while it is dead and taking
it back once alive, the refusals; RAFT INIT founding a group on nodes that predate one."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvd.consensus import Consensus
from kvd.raft.removals import Removals
from kvd.state.context import Deferred
from shared.errors import MembershipRefused, TryAgain
from tests.test_consensus import Net


def three(tmp: Path) -> tuple[Net, Consensus, Consensus, Consensus]:
    net = Net(tmp)
    a = net.add("a", found=True)
    b = net.add("b", found=False)
    c = net.add("c", found=False)
    assert net.run_until(lambda: all(n.info()["raft_voters"] == "a,b,c"
                                     for n in net.nodes.values()))
    assert net.run_until(lambda: b.info()["raft_leader"] == "a")
    return net, a, b, c


def test_a_dead_member_is_removed_through_a_follower_and_stays_out(tmp_path: Path) -> None:
    net, a, b, c = three(tmp_path)
    del net.nodes["c"]  # kill -9: its files stay, it hears nothing
    net.status["c"] = "dead"
    answer = b.operate(("remove", "c"))
    assert isinstance(answer, Deferred)
    assert net.run_until(lambda: answer.done)
    assert answer.value == {"removed": "c", "voters": ["a", "b"], "learners": []}
    for _ in range(40):  # a few reconciles: the dead member is not added back
        net.step()
    assert a.info()["raft_voters"] == "a,b" and a.info()["raft_learners"] == ""
    # Two voters need both: the group still commits.
    done = b.submit(("put", b"k", b"v", 0))
    assert net.run_until(lambda: done.done) and done.value["revision"] > 0

    net.nodes["c"] = c  # it was not gone for good after all: alive again, added again
    net.status["c"] = "alive"
    assert net.run_until(lambda: a.info()["raft_voters"] == "a,b,c")


def test_refusals_say_why(tmp_path: Path) -> None:
    net, a, b, c = three(tmp_path)
    with pytest.raises(MembershipRefused, match="not a member"):
        b.operate(("remove", "zed"))
    with pytest.raises(MembershipRefused, match="c is alive: stop it"):
        b.operate(("remove", "c"))
    net.status["a"] = "dead"  # as b might see it: the leader itself
    with pytest.raises(MembershipRefused, match="leads the consensus group"):
        b.operate(("remove", "a"))
    with pytest.raises(MembershipRefused, match="already takes part"):
        b.operate(("init",))


def test_two_voters_one_dead_the_removal_commits_on_the_new_config(tmp_path: Path) -> None:
    """A change takes effect where it is appended (single-server changes): removing b from
    {a, b} commits with a alone, since every majority of {a, b} includes a."""
    net = Net(tmp_path)
    a = net.add("a", found=True)
    net.add("b", found=False)
    assert net.run_until(lambda: a.info()["raft_voters"] == "a,b")
    del net.nodes["b"]
    net.status["b"] = "dead"
    stuck = a.submit(("put", b"k", b"v", 0))  # a,b need b: no commit
    for _ in range(10):
        net.step()
    assert not stuck.done
    answer = a.operate(("remove", "b"))
    assert net.run_until(lambda: answer.done)
    assert answer.value == {"removed": "b", "voters": ["a"], "learners": []}
    assert net.run_until(lambda: stuck.done) and stuck.value["revision"] > 0


def test_a_removal_not_committed_in_time_answers_tryagain() -> None:
    removals = Removals()
    answer = removals.wait("c", deadline=3)
    removals.expire(2)
    assert not answer.done
    removals.expire(3)
    assert isinstance(answer.value, TryAgain) and "may still commit" in str(answer.value)
    assert not removals.pending


def test_init_founds_a_group_on_nodes_that_predate_it(tmp_path: Path) -> None:
    net = Net(tmp_path)
    nodes = [net.add(name, found=False) for name in ("a", "b", "c")]  # known members, no group
    for _ in range(30):
        net.step()
    assert all(not n.has_group and n.info()["raft_leader"] == "" for n in nodes)
    assert nodes[1].operate(("init",)) == {"founded": "b"}
    assert net.run_until(lambda: all(n.info()["raft_voters"] == "a,b,c" for n in nodes))
    assert {n.info()["raft_leader"] for n in nodes} == {"b"}
    with pytest.raises(MembershipRefused, match="already takes part"):
        nodes[0].operate(("init",))
