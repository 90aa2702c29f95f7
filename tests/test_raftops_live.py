"""`kvd raft` on real nodes: after kill -9 of one of three voters, `kvd raft remove` takes it
out (refused while it is still alive), the two left commit — and need each other; `kvd raft
init` founds the group on a cluster whose nodes have no Raft state (as one upgraded from a
version before it), and its leader adds every member. Exit codes as kvsh's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

from shared.errors import ServerError
from tests.procs import Kvd, env_for, info, statuses, wait_for
from tests.test_consensus_live import agreed_leader, three_voters
from tests.test_coordination_live import call, retrying


def raft_cli(node: Kvd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvd", "raft", *args, "--port", str(node.port)],
                          capture_output=True, env=env_for(node.home), timeout=60)


def voters(node: Kvd) -> set[str]:
    return set(filter(None, info(node)["raft_voters"].split(",")))


def test_remove_a_killed_voter(kvd_factory: Callable[..., Kvd]) -> None:
    nodes, leader = three_voters(kvd_factory)
    victim = next(n for n in nodes if n is not leader)
    rest = [n for n in nodes if n is not victim]
    asked = next(n for n in rest if n is not leader)  # a follower forwards to the leader

    alive = raft_cli(asked, "remove", victim.name)
    assert alive.returncode == 2 and b"MEMBERSHIP" in alive.stderr and b"alive" in alive.stderr
    victim.kill()  # SIGKILL: gone for good
    wait_for(lambda: statuses(asked).get(victim.name) == "dead", deadline_s=60,
             what=f"{victim.name} to be seen dead")
    out = raft_cli(asked, "remove", victim.name)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().startswith(f"{victim.name} removed; voters ")
    left = {n.name for n in rest}
    wait_for(lambda: all(voters(n) == left for n in rest), what="two voters on both nodes")

    status = raft_cli(asked, "status", "--json")
    assert status.returncode == 0
    shown = json.loads(status.stdout)
    assert set(shown["voters"].split(",")) == left and shown["leader"] in left
    again = raft_cli(asked, "remove", victim.name)
    assert again.returncode == 2 and b"not a member" in again.stderr

    assert retrying(asked, "CSET", "after-removal", "ok")["revision"] > 0
    # Two voters tolerate no failure: with one of them gone too, nothing commits.
    next(n for n in rest if n is not asked).kill()
    with pytest.raises(ServerError) as cut:
        call(asked, "CSET", "after-removal", "lonely")
    assert cut.value.code in ("NO_QUORUM", "TRYAGAIN")
    assert info(asked)["raft_voters"].count(",") == 1  # the dead one is not removed by itself

    asked.kill()
    gone = raft_cli(asked, "status")
    assert gone.returncode == 3


def test_init_on_a_cluster_that_predates_the_group(kvd_factory: Callable[..., Kvd]) -> None:
    a = kvd_factory("a")
    b = kvd_factory("b", ["--join", a.address])
    c = kvd_factory("c", ["--join", a.address])
    nodes = [a, b, c]
    wait_for(lambda: all(len(statuses(n)) == 3 for n in nodes), what="three members")
    with a.client() as kv:
        kv.set("kept", "across the upgrade")
    for node in nodes:  # what a pre-Raft version leaves: keyspace and members, no raft folder
        assert node.stop() == 0
        shutil.rmtree(node.data_dir / "raft")
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
    wait_for(lambda: all(statuses(n).get(m.name) == "alive" for n in nodes for m in nodes),
             deadline_s=60, what="all members alive again")
    assert all(info(n)["raft_voters"] == "" for n in nodes)  # nobody founds one by itself
    assert "kvd raft init" in b.stderr()

    c.kill()  # a member that cannot be asked: it might have a group of its own
    refused = raft_cli(b, "init")
    assert refused.returncode == 2 and b"cannot ask c" in refused.stderr, refused.stderr
    assert info(b)["raft_voters"] == ""
    out = raft_cli(b, "init", "--force")  # the operator knows better
    assert out.returncode == 0, out.stderr
    assert b"founded the consensus group on b" in out.stdout
    c.start(wait=False)
    c.wait_ready()
    wait_for(lambda: agreed_leader(nodes, {"a", "b", "c"}), deadline_s=60,
             what="the new group to take in all three members")
    assert retrying(a, "CSET", "upgraded", "yes")["revision"] > 0
    with c.client() as kv:
        assert kv.get("kept") == b"across the upgrade"
    twice = raft_cli(a, "init")
    assert twice.returncode == 2 and b"already" in twice.stderr
