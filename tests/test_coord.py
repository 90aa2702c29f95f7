"""The coordination namespace's state machine (kvd.raft.coord), applied entry by entry as
Raft would: revisions, compare-and-set, leases and their end, locks, elections, snapshots,
garbage in the log — and its histories judged by the linearizability checker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvd.raft.coord import Coordination
from kvd.raft.coordcodec import (
    Error,
    Result,
    encode_campaign,
    encode_cas,
    encode_delete,
    encode_get,
    encode_grant,
    encode_keepalive,
    encode_leader,
    encode_lease_info,
    encode_lock,
    encode_promote,
    encode_put,
    encode_resign,
    encode_revoke,
    encode_tick,
    encode_unlock,
)
from tests.linearizability import Op, check, lock, register


class Log:
    """A Raft log in miniature: each command gets the next index and is applied at once."""

    def __init__(self) -> None:
        self.coord = Coordination()
        self.entries: list[tuple[int, bytes]] = []

    @property
    def index(self) -> int:
        return len(self.entries)

    def __call__(self, command: bytes) -> Result:
        self.entries.append((self.index + 1, command))
        return self.coord.apply(self.index, command)


@pytest.fixture
def log() -> Log:
    return Log()


def error(result: Result) -> str:
    assert not result["ok"], result
    return result["error"]


# -- keys ---------------------------------------------------------------------------------------


def test_a_write_s_revision_is_its_index(log: Log) -> None:
    assert log(encode_get(b"k")) == {"ok": True, "value": None, "revision": 0, "lease": 0}
    log(encode_get(b"other"))
    assert log(encode_put(b"k", b"v")) == {"ok": True, "revision": 3}
    assert log(encode_get(b"k")) == {"ok": True, "value": b"v", "revision": 3, "lease": 0}
    assert log(encode_put(b"k", b"w"))["revision"] == 5
    assert log(encode_delete(b"k")) == {"ok": True, "deleted": 1}
    assert log(encode_delete(b"k")) == {"ok": True, "deleted": 0}
    assert log(encode_get(b"k"))["revision"] == 0


def test_compare_and_set_on_the_revision(log: Log) -> None:
    assert log(encode_cas(b"k", b"v1", revision=0)) == {"ok": True, "revision": 1}  # create
    failed = log(encode_cas(b"k", b"v2", revision=0))  # exists already
    assert failed["error"] == Error.COMPARE_FAILED
    assert (failed["revision"], failed["value"]) == (1, b"v1")
    assert log(encode_cas(b"k", b"v2", revision=1)) == {"ok": True, "revision": 3}
    assert error(log(encode_cas(b"k", b"v3", revision=1))) == Error.COMPARE_FAILED
    assert log(encode_get(b"k"))["value"] == b"v2"


def test_compare_and_set_on_the_value(log: Log) -> None:
    assert error(log(encode_cas(b"k", b"v", value=b""))) == Error.COMPARE_FAILED  # absent
    log(encode_put(b"k", b"a"))
    assert error(log(encode_cas(b"k", b"b", value=b"x"))) == Error.COMPARE_FAILED
    assert log(encode_cas(b"k", b"b", value=b"a")) == {"ok": True, "revision": 4}
    assert log(encode_get(b"k"))["value"] == b"b"


def test_compare_and_delete(log: Log) -> None:
    log(encode_put(b"k", b"a"))
    assert error(log(encode_cas(b"k", None, revision=7))) == Error.COMPARE_FAILED
    assert log(encode_cas(b"k", None, revision=1)) == {"ok": True, "deleted": 1, "revision": 3}
    assert log(encode_get(b"k"))["value"] is None
    with pytest.raises(ValueError):
        encode_cas(b"k", None)


# -- leases -------------------------------------------------------------------------------------


def test_keys_die_with_their_lease_at_the_first_tick_past_its_deadline(log: Log) -> None:
    assert log(encode_grant(1000, 5000)) == {"ok": True, "lease": 1, "ttl": 1000,
                                            "deadline": 6000}
    log(encode_put(b"a", b"1", lease=1))
    log(encode_put(b"b", b"2", lease=1))
    log(encode_put(b"c", b"3"))
    assert log(encode_get(b"a"))["lease"] == 1
    assert log(encode_lease_info(1))["keys"] == [b"a", b"b"]
    assert log(encode_tick(5999)) == {"ok": True, "expired": []}
    assert log(encode_tick(6000)) == {"ok": True, "expired": [1]}
    assert [log(encode_get(k))["value"] for k in (b"a", b"b", b"c")] == [None, None, b"3"]
    assert error(log(encode_lease_info(1))) == Error.NO_LEASE


def test_keepalive_restarts_the_ttl_but_not_past_the_deadline(log: Log) -> None:
    log(encode_grant(1000, 0))
    assert log(encode_keepalive(1, 900))["deadline"] == 1900
    assert log(encode_tick(1500))["expired"] == []
    assert error(log(encode_keepalive(1, 1900))) == Error.NO_LEASE  # dead, though not ticked
    assert error(log(encode_keepalive(99, 0))) == Error.NO_LEASE


def test_a_key_rewritten_without_its_lease_outlives_it(log: Log) -> None:
    log(encode_grant(10, 0))
    log(encode_put(b"k", b"v", lease=1))
    log(encode_put(b"k", b"w"))
    log(encode_tick(100))
    assert log(encode_get(b"k"))["value"] == b"w"


def test_nothing_attaches_to_a_lease_that_is_gone_or_past_its_deadline(log: Log) -> None:
    log(encode_grant(10, 0))
    log(encode_grant(1000, 50))  # the clock is at 50 now: lease 1 is past its deadline
    for command in (encode_put(b"k", b"v", 1), encode_cas(b"k", b"v", revision=0, lease=1),
                    encode_lock(b"L", 1), encode_campaign(b"e", b"v", 1), encode_put(b"k", b"v", 9),
                    encode_lock(b"L", 0)):
        before = log.coord.image()
        assert error(log(command)) == Error.NO_LEASE
        assert log.coord.image() == before
    assert log(encode_put(b"k", b"v", 2))["ok"]


def test_revoke_ends_a_lease_and_all_it_holds(log: Log) -> None:
    log(encode_grant(1000, 0))
    log(encode_put(b"k", b"v", 1))
    log(encode_lock(b"L", 1))
    log(encode_campaign(b"e", b"me", 1))
    assert log(encode_revoke(1)) == {"ok": True, "revoked": 1}
    assert log.coord.image() == {"clock": 0, "keys": [], "leases": [], "locks": [],
                                 "elections": []}
    assert error(log(encode_revoke(1))) == Error.NO_LEASE


def test_time_never_runs_backwards_under_a_slower_leader(log: Log) -> None:
    log(encode_grant(100, 1000))
    assert log(encode_tick(500))["expired"] == []
    assert log(encode_grant(100, 500))["deadline"] == 1100  # from the clock, 1000
    assert log.coord.clock == 1000
    assert log(encode_tick(1100))["expired"] == [1, 3]


def test_a_new_leader_gives_every_lease_a_full_ttl(log: Log) -> None:
    log(encode_grant(100, 0))
    log(encode_grant(1000, 0))
    assert log(encode_promote(950)) == {"ok": True, "leases": 2}
    assert [lease[2] for lease in log.coord.image()["leases"]] == [1050, 1950]
    assert log(encode_tick(1049))["expired"] == []


# -- locks --------------------------------------------------------------------------------------


def test_a_lock_has_one_holder_and_its_token_is_the_acquisition_s_index(log: Log) -> None:
    a, b = log(encode_grant(1000, 0))["lease"], log(encode_grant(1000, 0))["lease"]
    assert log(encode_lock(b"L", a)) == {"ok": True, "token": 3}
    held = log(encode_lock(b"L", b))
    assert (held["error"], held["holder"], held["token"]) == (Error.LOCKED, a, 3)
    assert log(encode_lock(b"L", a)) == {"ok": True, "token": 3}  # a retry: same answer
    assert error(log(encode_unlock(b"L", b))) == Error.NOT_HOLDER
    assert log(encode_unlock(b"L", a)) == {"ok": True}
    assert error(log(encode_unlock(b"L", a))) == Error.NOT_HOLDER
    assert log(encode_lock(b"L", b)) == {"ok": True, "token": 9}
    assert log(encode_lock(b"M", a)) == {"ok": True, "token": 10}  # another lock


def test_a_lock_is_released_when_its_lease_expires(log: Log) -> None:
    a = log(encode_grant(100, 0))["lease"]
    b = log(encode_grant(1000, 0))["lease"]
    log(encode_lock(b"L", a))
    assert error(log(encode_lock(b"L", b))) == Error.LOCKED
    log(encode_tick(100))
    assert log(encode_lock(b"L", b)) == {"ok": True, "token": 6}


# -- elections ----------------------------------------------------------------------------------


def test_candidates_queue_and_lead_in_turn(log: Log) -> None:
    a, b, c = (log(encode_grant(ttl, 0))["lease"] for ttl in (100, 1000, 1000))
    assert log(encode_leader(b"e")) == {"ok": True, "value": None, "lease": 0, "revision": 0}
    first = log(encode_campaign(b"e", b"A", a))
    assert (first["leader"], first["position"], first["revision"]) == (True, 0, 5)
    second = log(encode_campaign(b"e", b"B", b))
    assert (second["leader"], second["position"], second["value"]) == (False, 1, b"A")
    log(encode_campaign(b"e", b"C", c))
    assert log(encode_leader(b"e")) == {"ok": True, "value": b"A", "lease": a, "revision": 5}
    log(encode_tick(100))  # a's lease ends: b leads from this entry on
    assert log(encode_leader(b"e")) == {"ok": True, "value": b"B", "lease": b, "revision": 9}
    assert log(encode_resign(b"e", c)) == {"ok": True, "revision": 9}  # in line: no change
    assert log(encode_resign(b"e", b)) == {"ok": True, "revision": 0}  # the last one
    assert log(encode_leader(b"e"))["value"] is None
    assert error(log(encode_resign(b"e", b))) == Error.NOT_CANDIDATE


def test_resigning_hands_over_and_campaigning_again_proclaims(log: Log) -> None:
    a, b = log(encode_grant(1000, 0))["lease"], log(encode_grant(1000, 0))["lease"]
    log(encode_campaign(b"e", b"A", a))
    log(encode_campaign(b"e", b"B", b))
    assert log(encode_campaign(b"e", b"A", a))["revision"] == 3  # the same: nothing new
    assert log(encode_campaign(b"e", b"A2", a))["revision"] == 6
    assert log(encode_campaign(b"e", b"B2", b))["revision"] == 6  # in line: no change
    assert log(encode_resign(b"e", a)) == {"ok": True, "revision": 8}
    assert log(encode_leader(b"e")) == {"ok": True, "value": b"B2", "lease": b, "revision": 8}


# -- the log itself -----------------------------------------------------------------------------


def test_reads_skip_the_log_and_writes_cannot(log: Log) -> None:
    log(encode_put(b"k", b"v"))
    assert log.coord.read(encode_get(b"k"))["value"] == b"v"
    assert log.coord.read(encode_leader(b"e"))["revision"] == 0
    assert error(log.coord.read(encode_put(b"k", b"w"))) == Error.NOT_A_READ
    assert error(log.coord.read(b"\xc1")) == Error.BAD_COMMAND
    assert log.coord.applied == 1 and log.coord.read(encode_get(b"k"))["value"] == b"v"


def test_an_index_applied_already_is_refused(log: Log) -> None:
    log(encode_put(b"k", b"v"))
    for index in (1, 0, -3, True):
        assert error(log.coord.apply(index, encode_put(b"k", b"w"))) == Error.STALE_INDEX
    assert log.coord.apply(5, encode_put(b"k", b"w")) == {"ok": True, "revision": 5}  # a gap
    assert log.coord.applied == 5


def test_a_snapshot_restores_exactly(log: Log) -> None:
    log(encode_grant(1000, 7))
    log(encode_put(b"k", b"v", 1))
    log(encode_lock(b"L", 1))
    log(encode_campaign(b"e", b"A", 1))
    copy = Coordination()
    copy.restore(log.coord.snapshot())
    assert copy.snapshot() == log.coord.snapshot() and copy.applied == 4
    assert copy.apply(5, encode_revoke(1)) == log(encode_revoke(1))
    assert copy.image() == log.coord.image()
    with pytest.raises(ValueError):
        copy.restore(msgpack.packb({"version": 99}))


# -- generated: snapshots, garbage, invariants --------------------------------------------------

names = st.sampled_from([b"a", b"b", b""])
values = st.sampled_from([b"", b"x", b"y"])
slots = st.integers(0, 9)  # which lease a command names: see Run.lease
maybe = st.none() | values


@dataclass
class Run:
    """What a generated command may refer to: the leases granted so far (an id is the
    index of its GRANT), the leader's clock, the index the command will get."""

    granted: list[int]
    now: int
    index: int

    def lease(self, slot: int) -> int:
        """0: none; 1: one never granted; else one of the last three granted (the likeliest
        to be alive)."""
        if slot <= 1 or not self.granted:
            return 99 * slot
        return self.granted[-1 - slot % min(3, len(self.granted))]

    def revision(self, back: int) -> int:
        return max(0, self.index - back)


Template = Callable[[Run], bytes]

# Built once: one strategy per kind of command, each drawing a function of the run so far.
templates: st.SearchStrategy[Template] = st.one_of(
    st.builds(lambda k, v, s: lambda r: encode_put(k, v, r.lease(s)), names, values, slots),
    st.builds(lambda k: lambda r: encode_get(k), names),
    st.builds(lambda k: lambda r: encode_delete(k), names),
    st.builds(lambda k, b, n, s: lambda r: encode_cas(k, n, revision=r.revision(b),
                                                      lease=r.lease(s)),
              names, st.integers(1, 8), maybe, slots),
    st.builds(lambda k, v, n, s: lambda r: encode_cas(k, n, value=v, lease=r.lease(s)),
              names, values, maybe, slots),
    st.builds(lambda ttl: lambda r: encode_grant(ttl, r.now), st.integers(1, 3000)),
    st.builds(lambda s: lambda r: encode_keepalive(r.lease(s), r.now), slots),
    st.builds(lambda s: lambda r: encode_revoke(r.lease(s)), slots),
    st.builds(lambda s: lambda r: encode_lease_info(r.lease(s)), slots),
    st.just(lambda r: encode_tick(r.now)),
    st.just(lambda r: encode_promote(r.now)),
    st.builds(lambda k, s: lambda r: encode_lock(k, r.lease(s)), names, slots),
    st.builds(lambda k, s: lambda r: encode_unlock(k, r.lease(s)), names, slots),
    st.builds(lambda k, v, s: lambda r: encode_campaign(k, v, r.lease(s)), names, values, slots),
    st.builds(lambda k: lambda r: encode_leader(k), names),
    st.builds(lambda k, s: lambda r: encode_resign(k, r.lease(s)), names, slots),
)


@st.composite
def runs(draw: st.DrawFn, max_size: int = 40) -> list[bytes]:
    """Commands in log order, mostly naming leases granted earlier in the run (most runs
    start with a few), on a clock that mostly moves forward."""
    run = Run(list(range(1, draw(st.integers(0, 3)) + 1)), 0, 0)
    entries = [encode_grant(draw(st.integers(1, 3000)), 0) for _ in run.granted]
    size = draw(st.integers(0, max_size))  # st.lists alone would make most runs short
    steps = draw(st.lists(st.tuples(templates, st.integers(-50, 200)), min_size=size,
                          max_size=size))
    for template, elapsed in steps:
        run.now, run.index = max(0, run.now + elapsed), len(entries) + 1
        entries.append(template(run))
        if msgpack.unpackb(entries[-1])[0] == "grant":
            run.granted.append(run.index)
    return entries


def assert_invariants(coord: Coordination) -> None:
    """What names a lease names an entry of `leases`, and each lease knows it; revisions
    are indexes applied."""
    held: dict[int, tuple[set, set, set]] = {i: (set(), set(), set()) for i in coord.leases}
    for key, entry in coord.keys.items():
        assert 0 < entry.revision <= coord.applied
        if entry.lease:
            held[entry.lease][0].add(key)
    for name, lock_ in coord.locks.items():
        held[lock_.lease][1].add(name)
    for name, election in coord.elections.items():
        candidates = [c[0] for c in election.candidates]
        assert candidates and len(set(candidates)) == len(candidates)
        assert 0 < election.revision <= coord.applied
        for lease in candidates:
            held[lease][2].add(name)
    for i, lease in coord.leases.items():
        assert held[i] == (lease.keys, lease.locks, lease.elections)
    assert coord.used == coord.recount()  # the quota's measure never drifts


@settings(max_examples=200, deadline=None)
@given(runs(), st.data())
def test_restoring_a_snapshot_then_replaying_equals_applying_all(
        entries: list[bytes], data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(entries)))
    straight, results = Log(), []
    for command in entries:
        results.append(straight(command))
        assert_invariants(straight.coord)
        if straight.index == at:
            snapshot = straight.coord.snapshot()
    restored = Coordination()
    if at:
        restored.restore(snapshot)
    replayed = [restored.apply(i, c) for i, c in straight.entries[at:]]
    assert replayed == results[at:]
    assert restored.used == straight.coord.used
    assert restored.snapshot() == straight.coord.snapshot()


@settings(max_examples=200, deadline=None)
@given(runs())
def test_fencing_tokens_increase_and_a_lock_never_has_two_holders(entries: list[bytes]) -> None:
    log, last = Log(), 0
    for command in entries:
        before = {n: (x.lease, x.token) for n, x in log.coord.locks.items()}
        result = log(command)
        if "token" in result and result["ok"]:
            name, lease = msgpack.unpackb(command)[1:]
            if name in before:  # only its holder's retry succeeds, with the same token
                assert before[name] == (lease, result["token"])
            else:
                assert result["token"] == log.index > last
                last = result["token"]


garbage = st.one_of(
    st.binary(max_size=30),
    st.builds(lambda v: msgpack.packb(v, use_bin_type=True), st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
        | st.text(max_size=8) | st.binary(max_size=8) | st.sampled_from(["put", "lock", "tick"]),
        lambda inner: st.lists(inner, max_size=5), max_leaves=10)),
    templates.map(lambda t: t(Run([], 0, 1))[:-1]),  # cut short
    st.builds(lambda op, args: msgpack.packb([op, *args]), st.sampled_from(
        ["put", "cas.rev", "grant", "lock", "campaign", "tick"]),
        st.lists(st.integers(-1, 2**63) | st.booleans() | st.text(max_size=2), max_size=4)),
)


@settings(max_examples=300, deadline=None)
@given(runs(max_size=15), garbage)
def test_garbage_never_raises_and_never_changes_anything(entries: list[bytes],
                                                         junk: bytes) -> None:
    log = Log()
    for command in entries:
        log(command)
    before = log.coord.image()
    result = log(junk)
    if result["ok"]:  # some garbage is a command after all: then it ran as one
        return
    assert isinstance(result["message"], str)
    assert log.coord.image() == before and log.coord.applied == log.index


# -- through the log, judged by the linearizability checker -------------------------------------


def interval(data: st.DataObject, step: int) -> tuple[int, int]:
    """An op applied at time 10*step, called and answered some time around it."""
    return 10 * step - data.draw(st.integers(0, 25)), 10 * step + data.draw(st.integers(0, 25))


@settings(max_examples=100, deadline=None)
@given(st.data(), st.lists(st.tuples(st.sampled_from(["lock", "unlock", "tick", "grant",
                                                      "keepalive"]), st.integers(0, 2)),
                           max_size=30))
def test_locks_through_the_log_are_linearizable(data: st.DataObject, steps: list) -> None:
    log, now = Log(), 0
    owners = [log(encode_grant(60, 0))["lease"] for _ in range(3)]
    history: list[Op] = []
    for step, (what, who) in enumerate(steps):
        call, ret = interval(data, step)
        lease = owners[who]
        if what == "lock":
            result: Any = log(encode_lock(b"L", lease))
            if result["ok"] or result["error"] == Error.LOCKED:
                token = result["token"] if result["ok"] else None  # LOCKED: not ours
                history.append(Op(who, call, ret, "lock", ("L", lease), token))
        elif what == "unlock":
            result = log(encode_unlock(b"L", lease))
            history.append(Op(who, call, ret, "unlock", ("L", lease), result["ok"]))
        elif what == "tick":  # a lease's end releases its lock: an unlock by the lease
            holder = log.coord.locks.get(b"L")
            now += 25
            if holder and holder.lease in log(encode_tick(now))["expired"]:
                history.append(Op("tick", call, ret, "unlock", ("L", holder.lease), True))
        elif what == "grant":
            owners[who] = log(encode_grant(60, now))["lease"]
        else:
            log(encode_keepalive(lease, now))
    verdict = check(history, lock)
    assert verdict, verdict.explain()


@settings(max_examples=100, deadline=None)
@given(st.data(), st.lists(st.tuples(st.sampled_from(["get", "put", "del", "cas"]),
                                     st.sampled_from([b"x", b"y"]), st.sampled_from(b"123"),
                                     st.sampled_from([None, *b"123"])), max_size=30))
def test_keys_through_the_log_are_linearizable(data: st.DataObject, steps: list) -> None:
    log, history = Log(), []
    for step, (what, key, value, expected) in enumerate(steps):
        call, ret = interval(data, step)
        if what == "get":
            history.append(Op(step, call, ret, "read", (key,), log(encode_get(key))["value"]))
        elif what == "put":
            log(encode_put(key, bytes([value])))
            history.append(Op(step, call, ret, "write", (key, bytes([value]))))
        elif what == "del":
            log(encode_delete(key))
            history.append(Op(step, call, ret, "delete", (key,)))
        else:
            old = None if expected is None else bytes([expected])
            compare = {"revision": 0} if old is None else {"value": old}
            ok = log(encode_cas(key, bytes([value]), **compare))["ok"]  # type: ignore[arg-type]
            history.append(Op(step, call, ret, "cas", (key, old, bytes([value])), ok))
    verdict = check(history, register)
    assert verdict, verdict.explain()


# -- limits -------------------------------------------------------------------------------------


def test_oversize_names_and_values_are_refused_and_change_nothing(log: Log) -> None:
    from kvd.state.coordlimits import MAX_KEY, MAX_VALUE

    lease = log(encode_grant(60_000, 0))["lease"]
    before = (log.coord.image(), log.coord.used)
    assert error(log(encode_put(b"k" * (MAX_KEY + 1), b"v"))) == "TOO_LARGE"
    assert error(log(encode_put(b"k", b"v" * (MAX_VALUE + 1)))) == "TOO_LARGE"
    assert error(log(encode_cas(b"k", b"v" * (MAX_VALUE + 1), revision=0))) == "TOO_LARGE"
    assert error(log(encode_lock(b"n" * (MAX_KEY + 1), lease))) == "TOO_LARGE"
    assert error(log(encode_campaign(b"e", b"v" * (MAX_VALUE + 1), lease))) == "TOO_LARGE"
    assert (log.coord.image(), log.coord.used) == before
    assert log(encode_put(b"k" * MAX_KEY, b"v" * MAX_VALUE))["ok"]


def test_a_full_namespace_refuses_writes_until_space_is_freed(log: Log) -> None:
    from kvd.state.coordlimits import MAX_VALUE, QUOTA

    value = b"x" * MAX_VALUE
    lease = log(encode_grant(60_000, 0))["lease"]
    n = 0
    while (result := log(encode_put(b"k%d" % n, value, lease if n % 2 else 0)))["ok"]:
        n += 1
    assert result["error"] == "NO_SPACE" and n == QUOTA // (MAX_VALUE + 2)
    assert error(log(encode_campaign(b"e", value, lease))) == "NO_SPACE"
    assert log(encode_put(b"k0", b"y" * MAX_VALUE))["ok"]  # a same-size rewrite still fits
    assert log(encode_delete(b"k0"))["deleted"] == 1
    assert log(encode_put(b"k%d" % n, value))["ok"]  # room again
    log(encode_revoke(lease))  # its keys go, and their bytes with them
    assert log.coord.used == log.coord.recount() < QUOTA // 2 + MAX_VALUE
    assert log(encode_campaign(b"e", value, log(encode_grant(60_000, 0))["lease"]))["ok"]


def test_leases_are_bounded_in_number(log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    import kvd.raft.coord as coord_mod

    monkeypatch.setattr(coord_mod, "MAX_LEASES", 3)
    ids = [log(encode_grant(60_000, 0))["lease"] for _ in range(3)]
    assert error(log(encode_grant(60_000, 0))) == "NO_SPACE"
    log(encode_revoke(ids[0]))
    assert log(encode_grant(60_000, 0))["ok"]
