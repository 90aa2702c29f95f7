"""Clients of the coordination namespace (kvd.raft.coord) over the Raft simulator, recorded
for the linearizability checker.

Every node of a `Sim` (tests/raftsim.py) runs a real `Coordination` beside the hash chain
(`CoordMachine`), fed by its own committed entries. Clients propose commands to the node they
believe leads (NotLeader: try its hint, or another node), and hear back when that very node,
in that same incarnation, applies the entry at the (index, term) it was given: that is the
reply a daemon would send. A command whose fate the client cannot know — the node crashed,
the entry was overwritten, no reply within `TIMEOUT_TICKS` — is recorded as never returned
(`ret` None). Call and return times are simulated ms.

Register clients CAS keys by value and by revision, PUT, DEL and GET them; a revision is
turned into the value it names (values are unique per write, so a revision and its value
are interchangeable, and the pairs the clients see must never disagree). Lock clients take a
lease (with a ttl no run outlives: a lease's expiry would release locks behind the model's
back), then LOCK and UNLOCK a few names with it; the owner in the lock model is the lease, so
a client that lost a reply keeps going with the same lease.

Checked: both histories (register model per key, lock model per name); every node's
Coordination snapshot equal at every index it reached; tokens of acquisitions ordered in
real time strictly increase. `broken_reads` answers GETs from a random node's local state
without the log: the negative control, which the checker must catch.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvd.raft.coord import Coordination
from kvd.raft.coordcodec import (
    Error,
    Result,
    encode_cas,
    encode_delete,
    encode_get,
    encode_grant,
    encode_lock,
    encode_put,
    encode_unlock,
)
from kvd.raft.errors import NotLeader, ProposalDropped
from kvd.raft.messages import Entry, EntryKind, Snapshot
from tests.linearizability import Op, Verdict, check, lock, register
from tests.raftnode import StateMachine, Violation
from tests.raftsim import TICK_MS, Sim, draw, nemesis

KEYS = (b"k0", b"k1", b"k2")
LOCKS = (b"L0", b"L1")
TIMEOUT_TICKS = 30  # three election timeouts without a reply: the client gives up
FOREVER_MS = 10**15  # a lease ttl no run outlives
HEAD = 16  # the hash chain's snapshot: index and digest (tests/raftnode.py)


class CoordMachine(StateMachine):
    """The hash chain and a real Coordination. `results` are this incarnation's answers by
    (index, term); `images` (shared by all nodes) holds the snapshot bytes at each index."""

    def __init__(self, images: dict[int, bytes]) -> None:
        super().__init__()
        self.coord = Coordination()
        self.images = images
        self.results: dict[tuple[int, int], Result] = {}

    def apply(self, e: Entry) -> None:
        super().apply(e)
        if e.kind is EntryKind.NORMAL:
            self.results[(e.index, e.term)] = self.coord.apply(e.index, e.data)
        self._agree()

    def snapshot(self) -> bytes:
        return super().snapshot() + self.coord.snapshot()

    def restore(self, snap: Snapshot) -> None:
        super().restore(dataclasses.replace(snap, data=snap.data[:HEAD]))
        self.coord = Coordination()
        if snap.data[HEAD:]:
            self.coord.restore(snap.data[HEAD:])
        self._agree()

    def _agree(self) -> None:
        """State machine safety, on the real machine: one state per index."""
        image = self.coord.snapshot()
        if self.images.setdefault(self.index, image) != image:
            raise Violation(f"coordination states differ at index {self.index}")


@dataclass
class Waiting:
    """A command in flight: where it went, and how its reply becomes the model's result."""

    client: Client
    op: Op  # ret and result still unset
    node: str
    machine: StateMachine
    index: int
    term: int
    finish: Callable[[Result], Any]
    history: list[Op] | None  # None: not an op of a model (a lease grant)


@dataclass
class Client:
    name: str
    locker: bool
    hint: str | None = None
    lease: int | None = None  # lock clients: the lease they lock with
    known: dict[bytes, tuple[bytes | None, int]] = dataclasses.field(default_factory=dict)
    busy: bool = False


class Harness:
    def __init__(self, seed: int, voters: int = 3, spares: int = 1,
                 broken_reads: bool = False) -> None:
        self.rng = random.Random(seed)
        faults, opts = draw(self.rng)
        self.images: dict[int, bytes] = {}
        self.sim = Sim(seed, voters, spares, opts=opts, faults=faults,
                       machine=lambda: CoordMachine(self.images))
        self.broken_reads = broken_reads
        self.clients = [Client(f"r{k}", False) for k in range(4)]
        self.clients += [Client(f"l{k}", True) for k in range(3)]
        self.waiting: list[Waiting] = []
        self.registers: list[Op] = []
        self.locks: list[Op] = []
        self.revisions: dict[tuple[bytes, int], bytes | None] = {}  # what each revision holds
        self.fates: dict[int, tuple[int, int]] = {}  # id(op never returned) -> (index, term)
        self.stats: Counter[str] = Counter()
        self._seq = 0

    # -- a run -----------------------------------------------------------------------------

    def run(self, ticks: int, settle_bound: int = 300) -> Harness:
        """`settle_bound`: ticks after healing for a leader, then as many for a write applied
        on every member. A learner that joined late catches up the whole log, and with the
        smallest options drawn (one entry per message, one message in flight) that is about
        two entries a tick: 100 ticks were too few for a log of 250 (Harness(74), seen)."""
        names = sorted(self.sim.nodes)
        rate = self.rng.uniform(0.02, 0.2)
        for _ in range(ticks):
            for client in self.clients:
                if not client.busy and self.rng.random() < 0.4:
                    self._start(client)
            if self.rng.random() < rate:
                nemesis(self.sim, self.rng, names)
            self.sim.tick()
            self._poll()
        self.sim.heal()
        self.sim.settle(settle_bound)
        for _ in range(TIMEOUT_TICKS):
            if not self.waiting:
                break
            self.sim.tick()
            self._poll()
        for w in list(self.waiting):
            self._lose(w)
        self.stats.update(self.sim.stats)
        return self

    def verdicts(self) -> dict[str, Verdict]:
        return {"register": check(self._settled(self.registers), register),
                "lock": check(self._settled(self.locks), lock)}

    def check(self) -> None:
        """Everything this module promises; raises Violation with the story."""
        for what, verdict in self.verdicts().items():
            if not verdict:
                raise Violation(f"{what} history: {verdict.explain()}")
        self._fencing()
        self._same_state()

    # -- clients ---------------------------------------------------------------------------

    def _start(self, client: Client) -> None:
        if client.locker:
            self._start_lock(client)
        else:
            self._start_register(client)

    def _unique(self, client: Client) -> bytes:
        self._seq += 1
        return f"{client.name}.{self._seq}".encode()

    def _start_register(self, c: Client) -> None:
        key = self.rng.choice(KEYS)
        value, revision = c.known.get(key, (None, 0))
        new = None if self.rng.random() < 0.15 else self._unique(c)
        roll = self.rng.random()
        if roll < 0.3:
            if self.broken_reads:
                return self._stale_get(c, key)
            self._propose(c, "read", (key,), encode_get(key), self._got(c, key), self.registers)
        elif roll < 0.5 or new is None and roll < 0.55:
            value = self._unique(c)
            self._propose(c, "write", (key, value), encode_put(key, value),
                          self._wrote(c, key, value), self.registers)
        elif roll < 0.6:
            self._propose(c, "delete", (key,), encode_delete(key), self._deleted(c, key),
                          self.registers)
        elif roll < 0.8 or value is None:
            cmd = encode_cas(key, new, revision=revision)
            self._propose(c, "cas", (key, value, new), cmd, self._swapped(c, key, new),
                          self.registers)
        else:
            cmd = encode_cas(key, new, value=value)
            self._propose(c, "cas", (key, value, new), cmd, self._swapped(c, key, new),
                          self.registers)

    def _start_lock(self, c: Client) -> None:
        if c.lease is None:
            def granted(r: Result) -> None:
                c.lease = _expect(r, "grant")["lease"]
            self._propose(c, "grant", (), encode_grant(FOREVER_MS, self.sim.now), granted, None)
            return
        name = self.rng.choice(LOCKS)
        if self.rng.random() < 0.5:
            self._propose(c, "lock", (name, c.lease), encode_lock(name, c.lease),
                          _token, self.locks)
        else:
            self._propose(c, "unlock", (name, c.lease), encode_unlock(name, c.lease),
                          lambda r: _expect(r, "unlock", Error.NOT_HOLDER)["ok"], self.locks)

    def _got(self, c: Client, key: bytes) -> Callable[[Result], Any]:
        def finish(r: Result) -> Any:
            r = _expect(r, "get")
            self._learn(c, key, r["value"], r["revision"])
            return r["value"]
        return finish

    def _wrote(self, c: Client, key: bytes, value: bytes) -> Callable[[Result], Any]:
        def finish(r: Result) -> None:
            self._learn(c, key, value, _expect(r, "put")["revision"])
        return finish

    def _deleted(self, c: Client, key: bytes) -> Callable[[Result], Any]:
        def finish(r: Result) -> None:
            _expect(r, "del")
            self._learn(c, key, None, 0)
        return finish

    def _swapped(self, c: Client, key: bytes, new: bytes | None) -> Callable[[Result], Any]:
        def finish(r: Result) -> bool:
            r = _expect(r, "cas", Error.COMPARE_FAILED)
            if r["ok"]:
                self._learn(c, key, new, r["revision"] if new is not None else 0)
            else:
                self._learn(c, key, r["value"], r["revision"])
            return r["ok"]
        return finish

    def _learn(self, c: Client, key: bytes, value: bytes | None, revision: int) -> None:
        """A revision names one value, for good: the CAS-by-revision mapping relies on it."""
        seen = self.revisions.setdefault((key, revision), value)
        if seen != value or (revision == 0) != (value is None):
            raise Violation(f"{key!r} revision {revision} holds {seen!r} and {value!r}")
        c.known[key] = (value, revision)

    def _stale_get(self, c: Client, key: bytes) -> None:
        """The negative control: a GET answered by any node's own state, off the log."""
        up = [n for n in self.sim.nodes.values() if n.up]
        if not up:
            return
        machine = self.rng.choice(up).sm
        assert isinstance(machine, CoordMachine)
        value = machine.coord.read(encode_get(key))["value"]
        self.registers.append(Op(c.name, self.sim.now, self.sim.now, "read", (key,), value))

    # -- the wire to the cluster -------------------------------------------------------------

    def _propose(self, c: Client, name: str, args: tuple, command: bytes,
                 finish: Callable[[Result], Any], history: list[Op] | None) -> None:
        """Up to three nodes tried; a command no node took never took effect: no op."""
        sim = self.sim
        for _ in range(3):
            node = c.hint if c.hint in sim.nodes else self.rng.choice(sorted(sim.nodes))
            if sim.nodes[node].raft is None:
                c.hint = None
                continue
            try:
                index, term = sim.propose_at(node, command)
            except NotLeader as e:
                c.hint = e.leader if e.leader != node else None
                continue
            except ProposalDropped:
                c.hint = None
                continue
            c.hint, c.busy = node, True
            op = Op(c.name, sim.now, None, name, args)
            self.waiting.append(Waiting(c, op, node, sim.nodes[node].sm, index, term, finish,
                                        history))
            self.stats["proposed"] += 1
            return
        self.stats["refused everywhere"] += 1

    def _poll(self) -> None:
        for w in list(self.waiting):
            node = self.sim.nodes[w.node]
            assert isinstance(w.machine, CoordMachine)
            result = w.machine.results.pop((w.index, w.term), None)
            if node.raft is None or node.sm is not w.machine:
                self._lose(w)  # the connection died with the node
            elif result is not None:
                self._reply(w, result)
            elif (w.machine.index >= w.index
                  or self.sim.now - w.op.call >= TIMEOUT_TICKS * TICK_MS):
                self._lose(w)  # overwritten (or snapshotted past), or too slow

    def _reply(self, w: Waiting, result: Result) -> None:
        self.waiting.remove(w)
        w.client.busy = False
        value = w.finish(result)
        if w.history is not None:
            w.history.append(dataclasses.replace(w.op, ret=self.sim.now, result=value))
        self.stats[f"{w.op.name} returned"] += 1

    def _lose(self, w: Waiting) -> None:
        self.waiting.remove(w)
        w.client.busy = False
        w.client.hint = None
        if w.history is not None:
            w.history.append(w.op)
            self.fates[id(w.op)] = (w.index, w.term)
        self.stats["never returned"] += 1

    # -- checks ----------------------------------------------------------------------------

    def _settled(self, history: list[Op]) -> list[Op]:
        """Without the ops that never returned and provably never took effect (another entry
        was committed at their index): dropping them changes no verdict, and they would only
        widen the search."""
        committed = self.sim.checker.committed
        kept = []
        for op in history:
            fate = self.fates.get(id(op)) if op.pending else None
            if fate is not None and committed.get(fate[0]) != fate[1]:
                self.stats["dropped, never committed"] += 1
                continue
            kept.append(op)
        return kept

    def _fencing(self) -> None:
        """Per lock, a token seen before another LOCK was called is never above what that
        LOCK returns (the holder's retry gets its own token again); one token, one lease."""
        got = sorted((op for op in self.locks if op.name == "lock" and op.result is not None
                      and not op.pending), key=lambda op: op.call)
        owners: dict[int, Any] = {}
        for a in got:
            if owners.setdefault(a.result, a.args[1]) != a.args[1]:
                raise Violation(f"token {a.result} went to leases {owners[a.result]} and "
                                f"{a.args[1]}")
            for b in got:
                if a.args[0] == b.args[0] and a.ret < b.call and a.result > b.result:  # type: ignore[operator]
                    raise Violation(f"fencing: {a} then {b}")

    def _same_state(self) -> None:
        """After the settle, every node that reached an index holds that index's image."""
        for node in self.sim.nodes.values():
            sm = node.sm
            if node.up and isinstance(sm, CoordMachine) and \
                    self.images.get(sm.index) != sm.coord.snapshot():
                raise Violation(f"{node.name} at {sm.index} differs from the others")


def _token(r: Result) -> int | None:
    """LOCK's reply: the fencing token, or None when another lease holds the lock (the
    failure names the holder's token: not ours)."""
    return _expect(r, "lock", Error.LOCKED)["token"] if r["ok"] else None


def _expect(r: Result, what: str, *allowed: Error) -> Result:
    """A reply is a success or one of the failures the command may meet, nothing else."""
    if not r["ok"] and r["error"] not in allowed:
        raise Violation(f"{what} failed: {r}")
    return r
