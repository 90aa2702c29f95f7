"""The coordination namespace under load while its leader is killed with SIGKILL, on 3 and 5
real nodes: client threads on different nodes increment counters by CAS and take turns on
locks (tests/coordload.py records what they see). A new leader serves within a deadline, and
the histories hold up:

- the counters' history (reads, CAS, the final read) is linearizable as registers, by
  tests/linearizability.py — so no acknowledged CAS is lost and none applied twice; each
  acknowledged write's revision is the one later reads give its value;
- the locks' history is linearizable as locks with fencing tokens (one holder at a time, a
  new holder's token above every token before);
- across all clients, a token acknowledged before another LOCK was sent is lower than that
  LOCK's; and, for each lock, in token order, a holder was acknowledged only after the
  previous holder had asked to UNLOCK (leases outlive the test, so UNLOCK is the only
  release): what a client can soundly conclude about "never two holders at once".
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import pytest

from shared.errors import ServerError
from tests import linearizability
from tests.coordload import Counting, Locking, Record, Worker
from tests.procs import Kvd, info, wait_for
from tests.test_consensus_live import agreed_leader

KEYS = ["counter-a", "counter-b"]
LOCKS = ["lock-a"]
SERVE_DEADLINE_S = 15.0  # a deadline for the new leader to serve, not a timing assertion
BEFORE, AFTER = 40, 40  # acknowledged increments under each leader: the load, in counts


def retrying(node: Kvd, *argv: object) -> object:
    def attempt() -> object:
        try:
            with node.client(timeout=5) as c:
                return c.call(*argv) or True
        except ServerError as exc:
            if exc.code in ("TRYAGAIN", "NO_QUORUM"):
                return None
            raise

    return wait_for(attempt, deadline_s=30, what=f"{argv[0]} to be answered")


def cluster(kvd_factory: Callable[..., Kvd], n: int) -> tuple[list[Kvd], set[str]]:
    names = [f"n{i}" for i in range(n)]
    first = kvd_factory(names[0])
    nodes = [first, *(kvd_factory(name, ["--join", first.address]) for name in names[1:])]
    wait_for(lambda: agreed_leader(nodes, set(names)), deadline_s=60,
             what=f"one leader with {n} voters")
    return nodes, set(names)


@pytest.mark.parametrize("n", [3, 5])
def test_killing_the_leader_under_load_loses_nothing(kvd_factory: Callable[..., Kvd],
                                                     n: int) -> None:
    nodes, voters = cluster(kvd_factory, n)
    assert info(nodes[0])["raft_voters"] == ",".join(sorted(voters))
    record, stop = Record(), threading.Event()
    for key in KEYS:  # the counters start at 0, written before any worker runs
        retrying(nodes[0], "CSET", key, "0")
        record.counters.append(linearizability.Op("setup", 0.0, time.monotonic(), "write",
                                                  (key, 0)))
    workers: list[Worker] = [Counting(f"count{i}", nodes, i, record, stop, i, keys=KEYS)
                             for i in range(4)]
    workers += [Locking(f"lock{i}", nodes, i + 1, record, stop, 100 + i, names=LOCKS)
                for i in range(3)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: record.acked_after(0) >= BEFORE, what="the load to get going")
        old = agreed_leader(nodes, voters)
        victim = next(node for node in nodes if node.name == old)
        victim.kill()
        killed_at = time.monotonic()
        survivors = [node for node in nodes if node is not victim]
        wait_for(lambda: record.acked_after(killed_at) > 0, SERVE_DEADLINE_S,
                 "an increment sent after the SIGKILL to be acknowledged")
        print(f"{n} nodes: {victim.name} killed; served again "
              f"{time.monotonic() - killed_at:.2f} s after SIGKILL")
        new = agreed_leader(survivors, voters)
        assert new != old
        wait_for(lambda: record.acked_after(killed_at) >= AFTER, what="load under the new leader")
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    assert not [w for w in workers if w.is_alive()], "a worker is stuck"
    for w in workers:
        assert w.error is None, f"{w.name}: {w.error!r}"
    assert not record.surprises, record.surprises
    for when, who, why in record.unanswered:  # shown with -s: what the kill cost the clients
        print(f"  {when - killed_at:+.2f} s {who}: {why[:70]}")
    check(record, survivors)


def check(record: Record, survivors: list[Kvd]) -> None:
    at = time.monotonic()
    for key in KEYS:
        got = retrying(survivors[0], "CGET", key)
        record.counters.append(linearizability.Op("final", at, time.monotonic(), "read", (key,),
                                                  int(got["value"])))  # type: ignore[index]
        acked = [v for k, v, _ in record.writes if k == key]
        assert int(got["value"]) >= len(acked) and len(set(acked)) == len(acked)  # type: ignore
    revisions = {}  # a value's revision, from the acknowledged CAS that wrote it
    for key, value, revision in record.writes:
        assert revisions.setdefault((key, value), revision) == revision
    for key, value, revision in record.reads:
        if (key, value) in revisions:
            assert revisions[(key, value)] == revision, f"{key}={value} read at {revision}"
    by_key = sorted(record.writes)
    for (k1, _, r1), (k2, _, r2) in itertools.pairwise(by_key):
        assert k1 != k2 or r1 < r2, "a higher value written at a lower revision"
    verdict = linearizability.check(record.counters, linearizability.register)
    assert verdict, verdict.explain()
    verdict = linearizability.check(record.locks, linearizability.lock)
    assert verdict, verdict.explain()
    check_fencing(record)
    print(f"{len(record.counters)} counter ops ({len(record.writes)} increments acknowledged),"
          f" {len(record.locks)} lock ops ({len(record.acquisitions)} acquisitions)")


def check_fencing(record: Record) -> None:
    acquired = record.acquisitions
    assert acquired, "no lock was ever taken"
    for a in acquired:
        for b in acquired:
            if a.returned < b.called:
                assert a.token < b.token or (a.token, a.lease) == (b.token, b.lease), \
                    f"token {b.token} acknowledged after {a.token} ({a} then {b})"
    for name in LOCKS:
        turns = sorted({a.token: a for a in acquired if a.name == name}.values(),
                       key=lambda a: a.token)
        for before, after in itertools.pairwise(turns):
            assert before.unlock_called is not None and before.unlock_called < after.returned, \
                f"two holders at once: {before} and {after}"
