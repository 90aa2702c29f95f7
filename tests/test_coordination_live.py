"""The coordination namespace on real nodes: CSET/CGET/CAS/LEASE/LOCK through the native
protocol (the Python client and kvsh) on any member; an acknowledged CAS survives the leader's
SIGKILL; fencing tokens only go up; a node cut off from the quorum answers NO_QUORUM or
TRYAGAIN, and still serves the gossip keyspace."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.errors import ServerError
from tests.procs import Kvd, info, run_kvsh, wait_for
from tests.test_consensus_live import agreed_leader, three_voters

VOTERS = {"a", "b", "c"}


def call(node: Kvd, *argv: object) -> object:
    with node.client(timeout=10) as c:
        return c.call(*argv)


def retrying(node: Kvd, *argv: object) -> object:
    """A command retried while the group is between leaders (TRYAGAIN / NO_QUORUM)."""
    def attempt() -> object:
        try:
            return call(node, *argv) or True
        except ServerError as exc:
            if exc.code in ("TRYAGAIN", "NO_QUORUM"):
                return None
            raise

    return wait_for(attempt, deadline_s=30, what=f"{argv[0]} to be answered")


def test_coordination_through_a_leader_change(kvd_factory: Callable[..., Kvd]) -> None:
    nodes, leader = three_voters(kvd_factory)
    first = leader.name
    followers = [n for n in nodes if n is not leader]

    # Written on a follower (forwarded to the leader), read on the other follower.
    r1 = retrying(followers[0], "CSET", "config", "v1")["revision"]
    got = call(followers[1], "CGET", "config")
    assert got["value"] == b"v1" and got["revision"] == r1
    r2 = call(followers[1], "CAS", "config", "REV", str(r1), "v2")["revision"]
    assert r2 > r1
    with pytest.raises(ServerError) as stale:
        call(followers[0], "CAS", "config", "REV", str(r1), "v3")  # r1 is no longer current
    assert stale.value.code == "COMPARE_FAILED"

    lease = call(followers[0], "LEASE", "GRANT", "60000")["lease"]
    other = call(followers[1], "LEASE", "GRANT", "60000")["lease"]
    t1 = call(followers[0], "LOCK", "job", "LEASE", str(lease))["token"]
    with pytest.raises(ServerError) as held:
        call(followers[1], "LOCK", "job", "LEASE", str(other))
    assert held.value.code == "LOCKED"

    leader.kill()  # SIGKILL, with an acknowledged CAS and a held lock
    second = wait_for(lambda: (lambda x: x if x and x != first else None)(
        agreed_leader(followers, VOTERS)), deadline_s=30, what="a new leader")
    assert second != first
    got = retrying(followers[1], "CGET", "config")
    assert got["value"] == b"v2" and got["revision"] == r2  # the acknowledged CAS is there
    retrying(followers[0], "UNLOCK", "job", "LEASE", str(lease))
    t2 = retrying(followers[1], "LOCK", "job", "LEASE", str(other))["token"]
    assert t2 > t1  # fencing tokens never go backwards, across leaders

    # kvsh speaks them too.
    out = run_kvsh(followers[0].home, followers[0].port, "-c", "CGET config")
    assert out.returncode == 0 and b"v2" in out.stdout

    # One node alone cannot commit; its keyspace goes on.
    followers[1].kill()
    alone = followers[0]
    with pytest.raises(ServerError) as cut:
        call(alone, "CSET", "config", "lonely")
    assert cut.value.code in ("NO_QUORUM", "TRYAGAIN")
    with alone.client() as kv:
        assert kv.set("plain", "still") and kv.get("plain") == b"still"


def test_a_batch_with_coordination_commands_is_answered_whole_and_in_order(
        kvd_factory: Callable[..., Kvd]) -> None:
    """A BATCH's reply waits for its coordination commands; its items stay in order, and a
    read after a write in the same batch sees it."""
    a = kvd_factory("a")
    wait_for(lambda: info(a)["raft_role"] == "leader", what="a group of one to lead")
    assert call(a, "CSET", "k", "v")["revision"] > 0
    with a.client() as c:
        replies = c.pipeline([["CGET", "k"], ["PING"], ["SET", "plain", "1"],
                              ["CAS", "k", "VALUE", "v", "w"], ["CGET", "k"],
                              ["CAS", "k", "VALUE", "v", "x"], ["GET", "plain"]], batch=True)
    assert replies[0].value["value"] == b"v" and replies[1].value == "PONG"
    assert replies[2].value == "OK" and replies[3].value["revision"] > 0
    assert replies[4].value["value"] == b"w"
    assert replies[4].value["revision"] == replies[3].value["revision"]
    assert replies[5].is_error and replies[5].value[0] == "COMPARE_FAILED"
    assert replies[6].value == b"1"
    with a.client() as c:  # pipelined lone requests: answered, each on its own
        replies = c.pipeline([["CGET", "k"], ["PING"], ["CGET", "nope"]], batch=False)
    assert replies[0].value["value"] == b"w" and replies[1].value == "PONG"
    assert replies[2].value["value"] is None


def test_big_coordination_values_replicate_under_small_frame_limits(
        kvd_factory: Callable[..., Kvd], tmp_path) -> None:  # noqa: ANN001
    """Nodes that take 1 MiB values (their doors' frames were 2 MiB): eight 500 KiB CSETs in
    one pipeline reach the followers in messages under the byte budget, with no lost write
    and no leader change; a value over the coordination limit is TOO_LARGE before the log."""
    conf = tmp_path / "small.toml"
    conf.write_text(f"max_value_size = {1 << 20}\npeer_max_message = {2 << 20}\n")
    nodes, leader = three_voters(kvd_factory, ["--config", str(conf)])
    term = info(leader)["raft_term"]
    value = b"v" * (500 * 1024)
    with leader.client(timeout=30) as kv:
        replies = kv.pipeline([["CSET", f"big{i}", value] for i in range(8)], batch=False)
        assert all(not r.is_error for r in replies), [r.value for r in replies if r.is_error]
        with pytest.raises(ServerError) as refused:
            kv.call("CSET", "huge", b"v" * (600 * 1024))
        assert refused.value.code == "TOO_LARGE"
    follower = next(n for n in nodes if n is not leader)
    assert retrying(follower, "CGET", "big7")["value"] == value
    assert info(leader)["raft_term"] == term and info(leader)["raft_role"] == "leader"
