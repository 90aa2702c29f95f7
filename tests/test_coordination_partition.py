"""The consensus group across a real network partition (network namespaces, tests/netns.py):
a minority with the leader in it is cut off (the leader alone of three; the leader and a
follower of five, which still reach each other). It cannot commit: every coordination command
sent there answers NO_QUORUM or TRYAGAIN, never success, while its gossip keyspace takes
writes. The majority elects a new leader and commits. Pre-vote keeps the minority's term
where it was, so after healing it rejoins as followers without deposing anyone, and its
coordination state becomes the majority's (its uncommitted writes are overwritten)."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import PORT, Net, ask, command, namespaces, start
from tests.procs import wait_for

DEADLINE_S = 40
CUT_S = 4.0  # the minority's time to campaign: two to four election timeouts (1-2 s each)
REFUSED = ("NO_QUORUM", "TRYAGAIN")


@pytest.fixture(params=[3, 5], ids=["3-nodes", "5-nodes"])
def net(request) -> Iterator[tuple[Net, list[subprocess.Popen]]]:
    with namespaces(request.param) as made:
        yield made


def raft(net: Net, i: int, home: Path) -> dict:
    got = ask(net, i, home, "{k: v for k, v in c.info().items() if k.startswith('raft_')}")
    return got if isinstance(got, dict) else {}


def leader_of(net: Net, nodes: list[int], home: Path, voters: str) -> str | None:
    """The leader all of `nodes` name, with `voters`, when they agree."""
    views = [raft(net, i, home) for i in nodes]
    if any(v.get("raft_voters") != voters for v in views):
        return None
    leaders = {v["raft_leader"] for v in views}
    return leaders.pop() if len(leaders) == 1 and "" not in leaders else None


def test_a_minority_with_the_leader_cannot_commit_and_rejoins_without_disruption(
        net, tmp_path) -> None:
    """The minority: the leader alone of three, the leader and a follower of five."""
    net_, procs = net
    n = len(net_.nodes)
    start(net_, 0, tmp_path, procs, None)
    for i in range(1, n):
        start(net_, i, tmp_path, procs, f"{net_.ip_of(0)}:{PORT}")
    everyone = list(range(n))
    voters = ",".join(f"n{i}" for i in everyone)
    first = wait_for(lambda: leader_of(net_, everyone, tmp_path, voters), DEADLINE_S,
                     f"one leader with {n} voters")
    old_leader = int(str(first)[1:])
    followers = [i for i in everyone if i != old_leader]
    minority = [old_leader, *followers[:n // 2 - 1]]
    majority = [i for i in everyone if i not in minority]
    assert command(net_, majority[0], tmp_path, "CSET", "cfg", "before")[0] == "ok"
    old_term = raft(net_, old_leader, tmp_path)["raft_term"]

    net_.split(minority)
    second = wait_for(lambda: (lambda x: x if x and x != first else None)(
        leader_of(net_, majority, tmp_path, voters)), DEADLINE_S,
        "the majority to elect a leader")
    new_term = raft(net_, majority[0], tmp_path)["raft_term"]
    assert new_term > old_term
    assert command(net_, majority[-1], tmp_path, "CSET", "cfg", "majority")[0] == "ok"

    # The minority: no coordination command succeeds there, reads included (a read answered
    # from its stale state would not be linearizable); its keyspace goes on.
    cut_at = time.monotonic()
    tries = [("CSET", "cfg", "minority"), ("CAS", "cfg", "VALUE", "before", "minority"),
             ("CGET", "cfg"), ("LEASE", "GRANT", "60000")]
    for i, argv in zip(itertools.cycle(minority), tries):
        kind, got = command(net_, i, tmp_path, *argv)
        assert kind == "error" and got in REFUSED, f"{argv} on n{i}, cut off: {kind} {got}"
    assert ask(net_, old_leader, tmp_path, "[c.set('gossip', 'minority'), c.get('gossip')]") \
        == [True, "minority"]
    assert ask(net_, majority[0], tmp_path, "[c.set('gossip2', 'majority'), c.get('gossip2')]") \
        == [True, "majority"]
    wait_for(lambda: raft(net_, old_leader, tmp_path)["raft_role"] != "leader", DEADLINE_S,
             "the cut-off leader to step down (check-quorum)")
    while time.monotonic() - cut_at < CUT_S:  # sampled across several election timeouts
        for i in minority:  # pre-vote: campaigns that cannot win raise no term
            view = raft(net_, i, tmp_path)
            assert view["raft_term"] == old_term, f"n{i}'s term moved while cut off: {view}"
            assert view["raft_role"] != "leader", f"n{i} leads a minority: {view}"

    for i in minority[1:]:  # the minority's members still reach each other
        members = ask(net_, i, tmp_path, "{m['name']: m['status'] for m in c.members()}")
        assert isinstance(members, dict) and members[first] == "alive", members

    net_.heal()
    assert wait_for(lambda: leader_of(net_, everyone, tmp_path, voters), DEADLINE_S,
                    "the healed nodes to follow the majority's leader") == second
    for i in everyone:  # the returning nodes deposed no one
        assert raft(net_, i, tmp_path)["raft_term"] == new_term
    for i in minority:  # their uncommitted writes are gone, the majority's is there
        kind, got = command(net_, i, tmp_path, "CGET", "cfg")
        assert kind == "ok" and got["value"] == "majority", (i, kind, got)
    wait_for(lambda: ask(net_, majority[0], tmp_path, "c.get('gossip')") == "minority",
             DEADLINE_S, "the keyspace written on the cut-off side to reach the majority")
