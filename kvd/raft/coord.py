"""The coordination namespace: the state machine the Raft group replicates on every node.

It owns keys with a revision each, compare-and-set, leases, locks with fencing tokens and
elections for applications (etcd v3's and Consul's vocabulary). Raft hands it each committed
entry, `apply(index, command)`, in log order; every node then holds the same state, so nothing
here reads a clock, draws a random number or iterates a container in an order that differs
between processes. Time enters only inside commands: the leader stamps its `now_ms` into
GRANT, KEEPALIVE, TICK and PROMOTE when it proposes them.

Invariants (tests/test_coord.py holds them):
- A key's revision is the index of the write that gave it its current value; 0 = absent.
- Every lease a key, a lock or a candidate names is in `leases`: a lease's end (TICK past its
  deadline, or REVOKE) deletes its keys and releases its locks and candidacies in that same
  entry. A lease is *live* while the machine's clock is before its deadline; only a live
  lease can take a key, a lock or a candidacy, or be kept alive.
- A lock has at most one holder. Its fencing token is the index of the acquisition: indexes
  never repeat, even across leaders, so tokens strictly increase cluster-wide and over time.
- An election's leader is its first candidate in campaign order; its revision is the index at
  which the leader or the leader's value last changed (0 = no candidate), so an observer sees
  every change as a new revision.
- `apply` never raises on a command. An entry it rejects (garbage, wrong types, unknown op,
  a failed precondition) changes nothing but `applied`: it still used up its index.

Time and drift. The clock is the largest `now_ms` applied, so it never runs backwards when a
leader with a slower clock takes over. A deadline is `now + ttl` on the proposing leader's
clock, and a lease ends at the first TICK at or past it (ticks come every tick interval, so
expiry is late, never early, by the leader's clock). A new leader first proposes PROMOTE,
which gives every lease a full ttl from its own clock (etcd's lessor does the same): no lease
then dies because the new leader's clock runs ahead of the old one. What remains is the rate
drift of the clocks: a client that sent KEEPALIVE at its local t0 and got OK may count on
the lease until t0 + ttl * (1 - rho), rho being the largest clock rate error (say 1%); past
that it must stop acting as holder. A holder stalled beyond that is what fencing tokens are
for (Kleppmann, "How to do distributed locking"): the guarded resource refuses a token lower
than one it has seen.

Locks are try-locks: LOCK answers at once, acquired (with the token) or LOCKED (with the
holder's lease and token). A client that wants to wait watches the lock and retries when it
is released; the order of waiters is not fair. Waiting in line is what an election is for:
CAMPAIGN queues candidates in order and hands over on RESIGN or the leader's lease's end.
Locks, elections and keys are separate namespaces, so a CSET cannot clobber a lock.

Proposed commands, for the one command table (shared/commands.py) when the doors take these:

    CGET key                              -> value, revision, lease (nil: no key)
    CSET key value [LEASE id]             -> revision
    CDEL key [REV n | VALUE v]            -> deleted (0/1); conditional like CAS
    CAS key REV n|VALUE v newvalue [LEASE id]   -> revision, or COMPARE_FAILED with current
    LEASE GRANT ms | KEEPALIVE id | REVOKE id | TTL id   -> id, ttl, deadline
    LOCK name LEASE id                    -> fencing token, or LOCKED holder token
    UNLOCK name LEASE id
    CAMPAIGN election value LEASE id      -> leader, or queued at a position
    LEADER election                       -> value, lease, revision
    OBSERVE election [AFTER rev]          -> the same, once it changes (kvd.raft.observers)
    RESIGN election LEASE id

Why these: GET/SET/DEL are Redis's last-writer-wins commands with Redis's exact replies, so
the linearizable ones need their own names; a C prefix (CGET, CSET, CDEL) reads as the same
verbs in the consistent namespace, and CAS needs none. `LEASE sub ...` is a container
command like Redis's `CLIENT`/`ACL`; `LEASE id`, `REV n` and `VALUE v` are keyword options
like SET's `EX seconds`. LOCK/UNLOCK and CAMPAIGN/LEADER/RESIGN are the words of etcd's
`concurrency` package and etcdctl. TICK and PROMOTE are the leader's, never a client's.

Commands are built by the `encode_*` helpers of kvd.raft.coordcodec, which also holds the
results' shape: plain dicts with `ok` and, on failure, `error` and `message`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from kvd.raft.coordcodec import Error, Result, decode, failure
from kvd.state.coordlimits import MAX_KEY, MAX_LEASES, MAX_VALUE, QUOTA

SNAPSHOT_VERSION = 1


@dataclass(slots=True)
class Key:
    value: bytes
    revision: int
    lease: int


@dataclass(slots=True)
class Lease:
    """`keys`, `locks` and `elections` say what the lease takes with it; they are derived
    (rebuilt by `restore`), never part of a snapshot."""

    ttl: int
    deadline: int
    keys: set[bytes] = field(default_factory=set)
    locks: set[bytes] = field(default_factory=set)
    elections: set[bytes] = field(default_factory=set)


@dataclass(slots=True)
class Lock:
    lease: int
    token: int


@dataclass(slots=True)
class Election:
    """Candidates as [lease, value] in campaign order: the first one leads."""

    candidates: list[list]
    revision: int


class Coordination:
    def __init__(self) -> None:
        self.applied = 0  # the last index applied (rejected entries included)
        self.clock = 0  # the largest now_ms applied
        self.keys: dict[bytes, Key] = {}
        self.leases: dict[int, Lease] = {}
        self.locks: dict[bytes, Lock] = {}
        self.elections: dict[bytes, Election] = {}
        # Bytes held (keys and values, lock and election names, candidates' values), kept up
        # to date by every change: the quota's measure (`recount` says it from scratch).
        self.used = 0
        # Elections whose leader changed (a new one, a new value, none left), by the index of
        # the change: what OBSERVE's waiters wait on (kvd.raft.observers, which drains it after
        # each Ready). Not state: None, and nothing is recorded, until a consumer sets it.
        self.changed: dict[bytes, int] | None = None

    def apply(self, index: int, command: bytes) -> Result:
        """Apply the committed entry at `index`; indexes must grow (gaps are fine: Raft's own
        entries, such as a new leader's no-op, never reach this machine)."""
        if isinstance(index, bool) or not isinstance(index, int) or index <= self.applied:
            return failure(Error.STALE_INDEX, f"index {index!r} is not after {self.applied}")
        self.applied = index
        decoded = decode(command)
        if isinstance(decoded, dict):
            return decoded
        spec, args = decoded
        return getattr(self, spec.method)(index, *args)

    def read(self, command: bytes) -> Result:
        """Answer a read (CGET, LEADER, LEASE TTL) off the log, for ReadIndex or lease reads:
        the caller has made sure this node has applied everything committed before it."""
        decoded = decode(command)
        if isinstance(decoded, dict):
            return decoded
        spec, args = decoded
        if spec.writes:
            return failure(Error.NOT_A_READ, "only reads may skip the log")
        return getattr(self, spec.method)(self.applied, *args)

    # -- keys ------------------------------------------------------------------------------

    def _put(self, index: int, key: bytes, value: bytes, lease: int) -> Result:
        """Set the key; it belongs to `lease` now (0: to none, so a write without a lease
        frees a key from the one it had, as in etcd)."""
        if lease and not self._live(lease):
            return _no_lease(lease)
        refused = self._room(key, value, self._held_by(key))
        if refused:
            return refused
        self._set(index, key, value, lease)
        return {"ok": True, "revision": index}

    def _get(self, index: int, key: bytes) -> Result:
        entry = self.keys.get(key)
        if entry is None:
            return {"ok": True, "value": None, "revision": 0, "lease": 0}
        return {"ok": True, "value": entry.value, "revision": entry.revision, "lease": entry.lease}

    def _delete(self, index: int, key: bytes) -> Result:
        return {"ok": True, "deleted": self._unset(key)}

    def _cas_revision(self, index: int, key: bytes, revision: int, new: bytes | None,
                      lease: int) -> Result:
        entry = self.keys.get(key)
        return self._swap(index, key, (entry.revision if entry else 0) == revision, new, lease)

    def _cas_value(self, index: int, key: bytes, value: bytes, new: bytes | None,
                   lease: int) -> Result:
        entry = self.keys.get(key)  # an absent key equals no value
        return self._swap(index, key, entry is not None and entry.value == value, new, lease)

    def _swap(self, index: int, key: bytes, same: bool, new: bytes | None, lease: int) -> Result:
        """CAS's second half: `new` None deletes (compare-and-delete)."""
        if lease and not self._live(lease):
            return _no_lease(lease)
        if not same:
            current = self._get(index, key)
            return failure(Error.COMPARE_FAILED, "the key is not as expected",
                           revision=current["revision"], value=current["value"])
        if new is None:
            return {"ok": True, "deleted": self._unset(key), "revision": index}
        refused = self._room(key, new, self._held_by(key))
        if refused:
            return refused
        self._set(index, key, new, lease)
        return {"ok": True, "revision": index}

    def _set(self, index: int, key: bytes, value: bytes, lease: int) -> None:
        self._unset(key)
        self.keys[key] = Key(value, index, lease)
        self.used += len(key) + len(value)
        if lease:
            self.leases[lease].keys.add(key)

    def _unset(self, key: bytes) -> int:
        entry = self.keys.pop(key, None)
        if entry is None:
            return 0
        self.used -= len(key) + len(entry.value)
        if entry.lease:
            self.leases[entry.lease].keys.discard(key)
        return 1

    def _held_by(self, key: bytes) -> int:
        entry = self.keys.get(key)
        return 0 if entry is None else len(key) + len(entry.value)

    def _room(self, name: bytes, value: bytes, freed: int = 0) -> Result | None:
        """Why `name` and `value` may not be stored (over a limit, or the quota full once
        `freed` bytes go), or None."""
        if len(name) > MAX_KEY:
            return failure(Error.TOO_LARGE, f"a name is at most {MAX_KEY} bytes, this one "
                           f"{len(name)}")
        if len(value) > MAX_VALUE:
            return failure(Error.TOO_LARGE, f"a coordination value is at most {MAX_VALUE} "
                           f"bytes, this one {len(value)}")
        if self.used - freed + len(name) + len(value) > QUOTA:
            return failure(Error.NO_SPACE, f"the coordination namespace is full ({QUOTA} "
                           "bytes): delete keys or end leases first")
        return None

    def recount(self) -> int:
        """`used`, counted from scratch (what a restore does, and what tests compare)."""
        return (sum(len(k) + len(e.value) for k, e in self.keys.items())
                + sum(len(n) for n in self.locks)
                + sum(len(n) + len(c[1]) for n, e in self.elections.items()
                      for c in e.candidates))

    # -- leases ----------------------------------------------------------------------------

    def _grant(self, index: int, ttl: int, now: int) -> Result:
        if ttl == 0:
            return failure(Error.BAD_COMMAND, "a lease's ttl must be at least 1 ms")
        if len(self.leases) >= MAX_LEASES:
            return failure(Error.NO_SPACE, f"{MAX_LEASES} leases exist already: revoke "
                           "leases no longer used (or let them expire) first")
        now = self._advance(now)
        self.leases[index] = Lease(ttl, now + ttl)  # the id is the index: unique, deterministic
        return {"ok": True, "lease": index, "ttl": ttl, "deadline": now + ttl}

    def _keepalive(self, index: int, lease_id: int, now: int) -> Result:
        lease = self.leases.get(lease_id)
        if lease is None or lease.deadline <= max(now, self.clock):
            return _no_lease(lease_id)  # past its deadline: only the next TICK is left
        now = self._advance(now)
        lease.deadline = now + lease.ttl
        return {"ok": True, "lease": lease_id, "ttl": lease.ttl, "deadline": lease.deadline}

    def _revoke(self, index: int, lease_id: int) -> Result:
        if lease_id not in self.leases:
            return _no_lease(lease_id)
        self._end([lease_id], index)
        return {"ok": True, "revoked": lease_id}

    def _lease_info(self, index: int, lease_id: int) -> Result:
        lease = self.leases.get(lease_id)
        if lease is None:
            return _no_lease(lease_id)
        return {"ok": True, "lease": lease_id, "ttl": lease.ttl, "deadline": lease.deadline,
                "remaining": max(0, lease.deadline - self.clock), "keys": sorted(lease.keys)}

    def _tick(self, index: int, now: int) -> Result:
        now = self._advance(now)
        expired = [i for i, lease in sorted(self.leases.items()) if lease.deadline <= now]
        self._end(expired, index)
        return {"ok": True, "expired": expired}

    def _promote(self, index: int, now: int) -> Result:
        """A new leader's first command: a full ttl for every lease on its own clock."""
        now = self._advance(now)
        for lease in self.leases.values():
            lease.deadline = max(lease.deadline, now + lease.ttl)
        return {"ok": True, "leases": len(self.leases)}

    def _advance(self, now: int) -> int:
        self.clock = max(self.clock, now)
        return self.clock

    def _live(self, lease_id: int) -> bool:
        lease = self.leases.get(lease_id)
        return lease is not None and self.clock < lease.deadline

    def _end(self, lease_ids: list[int], index: int) -> None:
        """End leases: their keys go, their locks and candidacies are released. Sorted
        iteration: sets of bytes iterate in a per-process hash order."""
        for lease_id in lease_ids:
            lease = self.leases.pop(lease_id)
            for key in sorted(lease.keys):
                self.used -= len(key) + len(self.keys.pop(key).value)
            for name in sorted(lease.locks):
                del self.locks[name]
                self.used -= len(name)
            for name in sorted(lease.elections):
                self._withdraw(name, lease_id, index)

    # -- locks -----------------------------------------------------------------------------

    def _lock(self, index: int, name: bytes, lease: int) -> Result:
        if not self._live(lease):
            return _no_lease(lease)
        held = self.locks.get(name)
        if held is None:
            refused = self._room(name, b"")
            if refused:
                return refused
            self.locks[name] = Lock(lease, index)
            self.used += len(name)
            self.leases[lease].locks.add(name)
            return {"ok": True, "token": index}
        if held.lease == lease:  # a retry after a lost reply: the same answer
            return {"ok": True, "token": held.token}
        return failure(Error.LOCKED, f"held by lease {held.lease}",
                       holder=held.lease, token=held.token)

    def _unlock(self, index: int, name: bytes, lease: int) -> Result:
        held = self.locks.get(name)
        if held is None or held.lease != lease:
            return failure(Error.NOT_HOLDER, f"lease {lease} does not hold this lock")
        del self.locks[name]
        self.used -= len(name)
        self.leases[lease].locks.discard(name)
        return {"ok": True}

    # -- elections -------------------------------------------------------------------------

    def _campaign(self, index: int, name: bytes, value: bytes, lease: int) -> Result:
        """Join the line (or, already in it, change the value offered); answers where the
        lease stands and who leads."""
        if not self._live(lease):
            return _no_lease(lease)
        election = self.elections.get(name)
        position = None if election is None else next(
            (i for i, c in enumerate(election.candidates) if c[0] == lease), None)
        offered = 0 if position is None else len(name) + len(election.candidates[position][1])
        refused = self._room(name, value, offered)
        if refused:
            return refused
        election = self.elections.setdefault(name, Election([], index))
        self.used += len(name) + len(value) - offered
        if position is None:
            position = len(election.candidates)
            election.candidates.append([lease, value])
            self.leases[lease].elections.add(name)
            if position == 0:
                self._changed(name, index)
        elif election.candidates[position][1] != value:  # campaigning again proclaims
            election.candidates[position][1] = value
            if position == 0:
                election.revision = index
                self._changed(name, index)
        return {**self._leader(index, name), "leader": position == 0, "position": position}

    def _leader(self, index: int, name: bytes) -> Result:
        election = self.elections.get(name)
        if election is None:
            return {"ok": True, "value": None, "lease": 0, "revision": 0}
        lease, value = election.candidates[0]
        return {"ok": True, "value": value, "lease": lease, "revision": election.revision}

    def _resign(self, index: int, name: bytes, lease: int) -> Result:
        election = self.elections.get(name)
        if election is None or all(c[0] != lease for c in election.candidates):
            return failure(Error.NOT_CANDIDATE, f"lease {lease} is not a candidate")
        self.leases[lease].elections.discard(name)
        self._withdraw(name, lease, index)
        return {"ok": True, "revision": self._leader(index, name)["revision"]}

    def _withdraw(self, name: bytes, lease: int, index: int) -> None:
        election = self.elections[name]
        was_leading = election.candidates[0][0] == lease
        self.used -= sum(len(name) + len(c[1]) for c in election.candidates if c[0] == lease)
        election.candidates = [c for c in election.candidates if c[0] != lease]
        if not election.candidates:
            del self.elections[name]  # no candidate left: revision 0 again, nothing kept
        elif was_leading:
            election.revision = index  # the next in line leads from this entry on
        if was_leading:
            self._changed(name, index)

    def _changed(self, name: bytes, index: int) -> None:
        if self.changed is not None:
            self.changed[name] = index

    # -- snapshots -------------------------------------------------------------------------

    def image(self) -> dict:
        """The state as plain data in a canonical order: two machines hold the same state
        exactly when their images are equal (`applied` is the log's, not the state's)."""
        return {
            "clock": self.clock,
            "keys": [[k, e.value, e.revision, e.lease] for k, e in sorted(self.keys.items())],
            "leases": [[i, x.ttl, x.deadline] for i, x in sorted(self.leases.items())],
            "locks": [[n, x.lease, x.token] for n, x in sorted(self.locks.items())],
            "elections": [[n, e.revision, [list(c) for c in e.candidates]]
                          for n, e in sorted(self.elections.items())],
        }

    def snapshot(self) -> bytes:
        state = {"version": SNAPSHOT_VERSION, "applied": self.applied, **self.image()}
        return msgpack.packb(state, use_bin_type=True)

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's (Raft's InstallSnapshot, or a restart); the
        leases' attachments are rebuilt from the keys, locks and candidates that name them."""
        state = msgpack.unpackb(data, raw=False)
        if not isinstance(state, dict) or state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"not a coordination snapshot of version {SNAPSHOT_VERSION}")
        before = list(self.elections)
        self.applied, self.clock = state["applied"], state["clock"]
        self.keys, self.locks, self.elections = {}, {}, {}
        self.leases = {i: Lease(ttl, deadline) for i, ttl, deadline in state["leases"]}
        for key, value, revision, lease in state["keys"]:
            self._set(revision, key, value, lease)
        for name, lease, token in state["locks"]:
            self.locks[name] = Lock(lease, token)
            self.leases[lease].locks.add(name)
        for name, revision, candidates in state["elections"]:
            self.elections[name] = Election(candidates, revision)
            for lease, _ in candidates:
                self.leases[lease].elections.add(name)
        for name in [*before, *self.elections]:  # any of them may have changed: look again
            self._changed(name, self.applied)
        self.used = self.recount()


def _no_lease(lease: int) -> Result:
    return failure(Error.NO_LEASE, f"no live lease {lease}: grant a new one", lease=lease)


