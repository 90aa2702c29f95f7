"""Raft under random faults: many seeded schedules, invariants checked after every step.

Every schedule (tests/raftsim.py, `chaos`) draws its own fault mix from its seed: message loss
(0-25%), duplication (0-20%), delays up to 60 ms against 10 ms ticks (reordering), symmetric
partitions and one-way cuts, crashes (some between persisting and sending) with quick or late
restarts, leader crashes, leader transfers, membership changes (learners added, promoted,
voters added and removed, down to two), snapshots and log compaction on any node, client
writes to whoever the client believes leads, and ReadIndex reads; and its own core options
(pre-vote and check-quorum on or off, one entry per message or many, tiny or wide pipelines).
Then it heals everything and requires a leader and a committed write within bounded time.
Some schedules keep each node's state in FileStorage over a fake file layer, so restarts run
recovery and crashes can tear a save in half.

2100 short schedules (1200 of 3 nodes, 500 of 5, 400 on file storage) and 10 long ones.
A failing seed replays exactly: `chaos(seed, voters=..., ticks=..., files=...)`.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.raftsim import Sim, Violation, chaos

# After healing: a leader within this many ticks, then a write applied everywhere within as
# many again. Ten election timeouts; the worst seen over 1300 schedules was three.
BOUND = 100

CHUNK = 100


def _run(seeds: range, voters: int, ticks: int, files: bool = False) -> Counter[str]:
    total: Counter[str] = Counter()
    for seed in seeds:
        try:
            sim = chaos(seed, voters=voters, ticks=ticks, settle_bound=BOUND, files=files)
        except Violation as e:
            raise Violation(f"chaos({seed}, voters={voters}, ticks={ticks}, files={files}): "
                            f"{e}") from e
        total.update(sim.stats)
    return total


def _exercised(total: Counter[str]) -> None:
    """The schedules did what this file claims they do (a sim that faults nothing passes)."""
    for what in ("dropped", "partitions", "one-way cuts", "crashes", "crashes mid-ready",
                 "restarts", "snapshots", "transfers", "reads asked", "config remove",
                 "config add_learner"):
        assert total[what] > 0, f"no {what} in these schedules: {dict(total)}"
    assert total["proposals"] > 20 * CHUNK


@pytest.mark.parametrize("start", range(0, 1200, CHUNK))
def test_three_nodes_random_schedules(start: int) -> None:
    _exercised(_run(range(start, start + CHUNK), voters=3, ticks=120))


@pytest.mark.parametrize("start", range(0, 500, CHUNK))
def test_five_nodes_random_schedules(start: int) -> None:
    _exercised(_run(range(start, start + CHUNK), voters=5, ticks=120))


@pytest.mark.parametrize(("start", "voters"), [(20_000, 3), (20_100, 3), (20_200, 3),
                                               (20_300, 5)])
def test_file_storage_schedules(start: int, voters: int) -> None:
    """The same, with every node's state in FileStorage over a fake file layer: restarts
    run recovery, and crashes land inside saves (torn records, lost unsynced bytes)."""
    total = _run(range(start, start + CHUNK), voters=voters, ticks=120, files=True)
    _exercised(total)
    assert total["crashes in a save"] > 0


@pytest.mark.parametrize("voters", [3, 5])
def test_long_schedules(voters: int) -> None:
    """Fewer, longer runs: logs long enough to compact many times over, configs that drift."""
    total = _run(range(10_000, 10_005), voters=voters, ticks=1500)
    assert total["snapshots"] > 20 and total["config remove"] > 2


# -- liveness, one scenario at a time -------------------------------------------------------


def _elected(sim: Sim) -> str:
    took = sim.wait_for(lambda: sim.leader() is not None, BOUND)
    assert took is not None, "no leader"
    leader = sim.leader()
    assert leader is not None
    return leader.name


def test_a_leader_cut_off_is_replaced_and_nothing_committed_is_lost() -> None:
    sim = Sim(seed=1, voters=5)
    old = _elected(sim)
    for k in range(20):
        sim.propose(b"before-%d" % k)
        sim.tick()
    sim.run(10)
    committed_before = dict(sim.checker.committed)
    others = set(sim.nodes) - {old}
    sim.partition({old}, others)
    took = sim.wait_for(lambda: (sim.leader() is not None and sim.leader().name != old), BOUND)
    assert took is not None, "the majority did not elect a new leader"
    sim.hint = sim.leader().name  # type: ignore[union-attr]
    for k in range(10):
        sim.propose(b"during-%d" % k)
        sim.tick()
    sim.heal()
    elected, wrote = sim.settle(BOUND)
    assert all(sim.checker.committed[i] == t for i, t in committed_before.items())
    assert {b"during-%d" % k for k in range(10)} <= sim.checker.applied_data


def test_a_minority_commits_nothing_while_cut_off() -> None:
    sim = Sim(seed=2, voters=5)
    leader = _elected(sim)
    sim.run(5)
    minority = {leader, next(n for n in sorted(sim.nodes) if n != leader)}
    sim.partition(minority, set(sim.nodes) - minority)
    sim.hint = leader
    for k in range(10):
        sim.propose(b"lost-%d" % k)  # the old leader takes them until it steps down
        sim.tick()
    sim.run(30)
    assert not {b"lost-%d" % k for k in range(10)} & sim.checker.applied_data
    old = sim.nodes[leader].raft
    assert old is not None and old.leading is None, "check-quorum: the cut-off leader stepped down"


def test_everyone_crashed_at_once_comes_back_with_every_committed_write() -> None:
    sim = Sim(seed=3, voters=3)
    sim.hint = _elected(sim)
    for k in range(30):
        assert sim.propose(b"w-%d" % k)
        sim.tick()
    sim.run(10)
    before = sim.checker.max_committed
    assert {b"w-%d" % k for k in range(30)} <= sim.checker.applied_data
    for name in sim.nodes:
        sim.crash(name)
    sim.heal()  # restarts every node from its storage alone
    sim.settle(BOUND)
    # each node applied everything again from its own storage; the checker compared every
    # state it passed through with the states before the crash
    assert all(n.sm.index >= before for n in sim.nodes.values())
