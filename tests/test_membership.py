"""Membership: the timer arithmetic by table (no sleeps), and the claim/refute rules."""

from __future__ import annotations

import pytest

from kvd.cluster.membership import (
    Membership,
    Status,
    Timers,
    next_status,
    supersedes,
    suspicion_timeout,
)

T = Timers(heartbeat_ms=200, suspect_after_ms=1500, suspicion_min_ms=1000,
           suspicion_max_ms=4000, confirmations_k=3)


@pytest.mark.parametrize(("confirmations", "expected"), [
    (0, 4000),  # alone in suspecting: the longest wait
    (1, 2500),  # log(2)/log(4) = 0.5 of the way down
    (3, 1000),  # k confirmations: the minimum
    (10, 1000),  # never below the minimum
    (-1, 4000),
])
def test_suspicion_timeout_shrinks_with_confirmations(confirmations: int, expected: int) -> None:
    assert suspicion_timeout(confirmations, T) == expected


@pytest.mark.parametrize(("status", "silent", "suspect_for", "confirmations", "expected"), [
    (Status.ALIVE, 0, 0, 0, Status.ALIVE),
    (Status.ALIVE, 1500, 0, 0, Status.ALIVE),  # the bound itself is still fine
    (Status.ALIVE, 1501, 0, 0, Status.SUSPECT),
    (Status.SUSPECT, 5000, 3999, 0, Status.SUSPECT),
    (Status.SUSPECT, 5000, 4001, 0, Status.DEAD),
    (Status.SUSPECT, 5000, 1001, 3, Status.DEAD),  # confirmed by others: dead sooner
    (Status.SUSPECT, 5000, 999, 3, Status.SUSPECT),
    (Status.DEAD, 99999, 99999, 0, Status.DEAD),  # only the member itself revives itself
    (Status.LEFT, 99999, 99999, 0, Status.LEFT),
])
def test_next_status_table(status: Status, silent: int, suspect_for: int, confirmations: int,
                           expected: Status) -> None:
    assert next_status(status, silent, suspect_for, confirmations, T) is expected


@pytest.mark.parametrize(("claim", "current", "wins"), [
    ((5, Status.ALIVE), (4, Status.DEAD), True),  # a higher incarnation always wins
    ((4, Status.ALIVE), (4, Status.SUSPECT), False),  # an old "alive" cannot undo suspicion
    ((4, Status.SUSPECT), (4, Status.ALIVE), True),
    ((4, Status.DEAD), (4, Status.SUSPECT), True),
    ((4, Status.SUSPECT), (4, Status.DEAD), False),
    ((3, Status.DEAD), (4, Status.ALIVE), False),
    ((4, Status.LEFT), (4, Status.ALIVE), True),
])
def test_claim_precedence(claim: tuple, current: tuple, wins: bool) -> None:
    assert supersedes(*claim, *current) is wins


def _pair() -> Membership:
    ms = Membership("a", "a:1", "a:2", now=1000, timers=T)
    ms.add("b", "b:1", "b:2", 7, now=1000)
    return ms


def test_silence_makes_suspect_then_dead_and_a_refutation_revives() -> None:
    ms = _pair()
    b = ms.get("b")
    assert b is not None
    ms.heard_from("b", 7, now=1000)
    assert ms.tick(2000) == [] and b.status is Status.ALIVE
    ms.tick(2600)
    assert b.status is Status.SUSPECT
    ms.heard_from("b", 7, now=2700)  # same incarnation: the suspicion stands
    assert b.status is Status.SUSPECT
    ms.tick(2600 + 4001)
    assert b.status is Status.DEAD
    ms.heard_from("b", 8, now=7000)  # it refuted with a higher incarnation
    assert b.status is Status.ALIVE and b.incarnation == 8


def test_a_node_refutes_a_claim_about_itself() -> None:
    ms = _pair()
    me = ms.me.incarnation
    ms.claim("b", "a", me, Status.SUSPECT, now=1100)
    assert ms.me.incarnation == me + 1 and ms.me.status is Status.ALIVE
    ms.claim("b", "a", me - 5, Status.DEAD, now=1100)  # stale: nothing to refute
    assert ms.me.incarnation == me + 1


def test_left_is_said_by_the_member_and_a_restart_outranks_it() -> None:
    ms = _pair()
    ms.left("b", 7, now=1200)
    b = ms.get("b")
    assert b is not None and b.status is Status.LEFT
    ms.heard_from("b", 7, now=1300)  # a straggler sent before it left
    assert b.status is Status.LEFT
    assert ms.tick(99_999) == []  # no timers run on a member that left
    ms.heard_from("b", 9000, now=1400)  # restarted: a new incarnation
    assert b.status is Status.ALIVE


def test_confirmations_from_others_shorten_suspicion() -> None:
    ms = _pair()
    for other in ("c", "d", "e"):
        ms.add(other, f"{other}:1", f"{other}:2", 1, now=1000)
        ms.claim(other, "b", 7, Status.SUSPECT, now=1000)
    b = ms.get("b")
    assert b is not None and b.status is Status.SUSPECT and len(b.suspectors) == 3
    ms.tick(1000 + 1001)
    assert b.status is Status.DEAD
