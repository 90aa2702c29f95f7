"""OBSERVE on real nodes: a client long-polling an election on a follower is answered when a
client of another node campaigns (the new leader), and again when it resigns (no leader);
a wait that runs out answers the unchanged state, through kvsh too."""

from __future__ import annotations

import threading
from collections.abc import Callable

from tests.procs import Kvd, run_kvsh
from tests.test_consensus_live import three_voters
from tests.test_coordination_live import call, retrying


def observe_in_background(node: Kvd, election: str, after: int) -> tuple[threading.Thread,
                                                                            dict]:
    got: dict = {}

    def run() -> None:
        with node.client(timeout=10) as c:
            got["reply"] = c.observe(election, after=after, timeout_ms=60_000)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got


def test_observe_on_a_follower_sees_a_campaign_and_a_resignation(
        kvd_factory: Callable[..., Kvd]) -> None:
    nodes, leader = three_voters(kvd_factory)
    follower, other = [n for n in nodes if n is not leader]

    now = retrying(follower, "OBSERVE", "scheduler")
    assert now["value"] is None and now["lease"] == 0
    thread, got = observe_in_background(follower, "scheduler", now["revision"])
    lease = retrying(other, "LEASE", "GRANT", "60000")["lease"]
    won = call(other, "CAMPAIGN", "scheduler", "node-7", "LEASE", str(lease))
    thread.join(timeout=30)
    assert not thread.is_alive(), "OBSERVE was not answered after the campaign"
    seen = got["reply"]
    assert seen == {"value": b"node-7", "lease": lease, "revision": won["revision"]}

    thread, got = observe_in_background(follower, "scheduler", seen["revision"])
    call(other, "RESIGN", "scheduler", "LEASE", str(lease))
    thread.join(timeout=30)
    assert not thread.is_alive(), "OBSERVE was not answered after the resignation"
    gone = got["reply"]
    assert gone["value"] is None and gone["lease"] == 0 and gone["revision"] > seen["revision"]

    # Nothing changes: the wait runs out and answers the same state (kvsh waits for it).
    out = run_kvsh(follower.home, follower.port, "--json", "-c",
                   f"OBSERVE scheduler AFTER {gone['revision']} TIMEOUT 7000")
    assert out.returncode == 0, out.stderr
    assert b'"revision": %d' % gone["revision"] in out.stdout and b"null" in out.stdout
    with follower.client() as kv:
        assert kv.observe("scheduler") == gone
