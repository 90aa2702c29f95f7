"""OBSERVE: long polls on an application election's leader, answered by the node they are on
once it has applied a change (Consul's blocking queries, etcd's Election.Observe).

An observer sends the revision it last saw (AFTER). It is answered at once when this node's
view of the election is newer; otherwise it waits until the leader changes (a new leader, a
new value, or none left) or its wait runs out, and then gets the unchanged state, as Consul's
blocking queries do. Nothing here goes through the Raft log: the state is this node's
applied state, which every node, followers too, reaches through the same entries in the
same order. The consensus driver (kvd.consensus) calls `wake` after each Ready's entries are
applied and `tick` every tick.

Revisions only go up, so `revision > AFTER` reads "newer than what the client saw", and a
node that lags behind the client's view waits instead of answering with an older state:
- a leader's revision is LEADER's: the index at which it took over or last changed its
  value, which is also its fencing token;
- an election with no leader (nobody ever campaigned, or the last candidate resigned or lost
  its lease) is reported as value nil, lease 0 and the index at which it lost its last
  candidate — exact when this node applied that change while running, else the index this
  node had applied when first asked (later than the change, never earlier; remembered, so
  later answers agree). LEADER reports such an election as revision 0.

Bounds: at most MAX_OBSERVERS waiting per node (BUSY beyond), each for as long as OBSERVE's TIMEOUT
(kvd.state.coordcmds bounds it).
A waiter is dropped once answered; ZeroMQ does not say when a client goes away, so the
deadline is what frees the waiter of a client that left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kvd.raft.coord import Coordination
from kvd.state.context import Deferred
from shared.errors import Busy, NoQuorum

TICK_MS = 100  # the consensus driver's tick (kvd.loop.TICK_S)
MAX_OBSERVERS = 1024
EMPTIED_KEPT = 4096  # leaderless elections whose revision is remembered (oldest go first)


@dataclass(slots=True, eq=False)  # a waiter is itself: two may ask alike
class Waiter:
    after: int
    deadline: int  # in ticks
    answer: Deferred


class Observers:
    def __init__(self, coord: Coordination, has_leader: Callable[[], bool],
                 cap: int = MAX_OBSERVERS) -> None:
        """`has_leader()`: whether this node knows a leader of the group (without one, an
        immediate answer could be arbitrarily old: NO_QUORUM instead)."""
        self.coord = coord
        coord.changed = {}
        self.has_leader = has_leader
        self.cap = cap
        self.waiting: dict[bytes, list[Waiter]] = {}
        self.count = 0
        self.ticks = 0
        self.emptied: dict[bytes, int] = {}

    def observe(self, name: bytes, after: int | None, wait_ms: int) -> object:
        """The election's state now, or a Deferred answered when it is newer than `after`."""
        if not self.has_leader():
            raise NoQuorum("no leader is known: the consensus group has no quorum reachable "
                           "from this node — retry once it has one, or on another node")
        state = self.state(name)
        if after is None or state["revision"] > after:
            return state
        if self.count >= self.cap:
            raise Busy(f"this node already has {self.cap} OBSERVE waiting — retry later, or "
                       "observe on another node")
        answer = Deferred()
        ticks = max(1, -(-wait_ms // TICK_MS))
        self.waiting.setdefault(name, []).append(Waiter(after, self.ticks + ticks, answer))
        self.count += 1
        return answer

    def state(self, name: bytes) -> dict:
        election = self.coord.elections.get(name)
        if election is not None:
            lease, value = election.candidates[0]
            return {"value": value, "lease": lease, "revision": election.revision}
        revision = self.emptied.get(name)
        if revision is None:
            revision = self._remember(name, self.coord.applied)
        return {"value": None, "lease": 0, "revision": revision}

    def wake(self) -> None:
        """After entries were applied: answer the waiters of the elections that changed."""
        changed = self.coord.changed
        if not changed:
            return
        self.coord.changed = {}
        for name, index in changed.items():
            if name in self.coord.elections:
                self.emptied.pop(name, None)
            else:
                self._remember(name, index)
            waiters = self.waiting.get(name)
            if waiters:
                state = self.state(name)
                self._answer(name, [w for w in waiters if state["revision"] > w.after], state)

    def tick(self) -> None:
        """Waiters past their deadline get the unchanged state."""
        self.ticks += 1
        for name, waiters in list(self.waiting.items()):
            late = [w for w in waiters if w.deadline <= self.ticks]
            if late:
                self._answer(name, late, self.state(name))

    def _answer(self, name: bytes, done: list[Waiter], state: dict) -> None:
        if not done:
            return
        gone = {id(w) for w in done}
        left = [w for w in self.waiting[name] if id(w) not in gone]
        if left:
            self.waiting[name] = left
        else:
            del self.waiting[name]
        self.count -= len(done)
        for waiter in done:
            waiter.answer.resolve(dict(state))

    def _remember(self, name: bytes, revision: int) -> int:
        self.emptied.pop(name, None)
        self.emptied[name] = revision
        if len(self.emptied) > EMPTIED_KEPT:
            del self.emptied[next(iter(self.emptied))]
        return revision
