"""Membership and failure detection: who is in the cluster and whether they answer.

Sans-IO, time as a parameter. The rules, SWIM-style (Das et al. 2002, with Lifeguard's
shrinking suspicion timeout):

- Every member has an `incarnation`; a claim about a member is (incarnation, status). A claim
  with a higher incarnation wins; at equal incarnation the more severe status wins
  (PRECEDENCE). So a suspicion cannot be undone by an old "alive", only by the member itself.
- A node refutes a claim that it is suspect or dead by bumping its own incarnation above it.
  A node starts with incarnation = its start time in ms, so a restart always outranks what the
  cluster remembers of its previous life (and `left` is not final across restarts).
- Heard directly (a heartbeat from the member itself) means alive at the incarnation it states.
  Silence past `suspect_after_ms` makes it SUSPECT; a suspect not refuted within the suspicion
  timeout becomes DEAD. Dead members are kept (and reconnected to): they may come back.
- LEFT is said only by the member itself, on a graceful stop.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field


class Status(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


# At equal incarnation, a claim overrides a weaker one: the order of severity.
PRECEDENCE = {Status.ALIVE: 0, Status.SUSPECT: 1, Status.DEAD: 2, Status.LEFT: 3}


@dataclass(frozen=True)
class Timers:
    heartbeat_ms: int = 200
    suspect_after_ms: int = 1500  # silence before suspicion
    suspicion_min_ms: int = 1000  # suspect -> dead when many members confirm
    suspicion_max_ms: int = 4000  # suspect -> dead when we are alone in suspecting
    confirmations_k: int = 3  # confirmations that bring the timeout down to the minimum


def suspicion_timeout(confirmations: int, t: Timers) -> int:
    """Lifeguard: the timeout shrinks with the log of independent confirmations."""
    if t.confirmations_k < 1 or confirmations <= 0:
        return t.suspicion_max_ms
    frac = math.log(confirmations + 1) / math.log(t.confirmations_k + 1)
    timeout = t.suspicion_max_ms - frac * (t.suspicion_max_ms - t.suspicion_min_ms)
    return max(t.suspicion_min_ms, int(timeout))


def next_status(status: Status, silent_ms: int, suspect_for_ms: int, confirmations: int,
                t: Timers) -> Status:
    """What local silence does to a member's status (a pure function of the clock)."""
    if status is Status.ALIVE and silent_ms > t.suspect_after_ms:
        return Status.SUSPECT
    if status is Status.SUSPECT and suspect_for_ms > suspicion_timeout(confirmations, t):
        return Status.DEAD
    return status


def supersedes(inc: int, status: Status, cur_inc: int, cur_status: Status) -> bool:
    """Does the claim (inc, status) override the current (cur_inc, cur_status)?"""
    if inc != cur_inc:
        return inc > cur_inc
    return PRECEDENCE[status] > PRECEDENCE[cur_status]


@dataclass
class Member:
    name: str
    address: str  # host:port of its client ROUTER (where peer requests go)
    gossip: str  # host:port of its PUB socket
    incarnation: int = 0
    status: Status = Status.ALIVE
    last_seen: int = 0  # ms, when we last heard from it directly
    status_since: int = 0  # ms, when the status last changed
    suspectors: set[str] = field(default_factory=set)

    def wire(self) -> list:
        return [self.name, self.address, self.gossip, self.incarnation, self.status.value]


class Membership:
    def __init__(self, name: str, address: str, gossip: str, now: int,
                 timers: Timers | None = None) -> None:
        self.timers = timers or Timers()
        self.me = Member(name, address, gossip, incarnation=now, last_seen=now,
                         status_since=now)
        self.members: dict[str, Member] = {name: self.me}
        self.changed = False  # the set of members (not their status) changed: persist it

    def others(self) -> list[Member]:
        return [m for m in self.members.values() if m is not self.me]

    def get(self, name: str) -> Member | None:
        return self.members.get(name)

    def is_member(self, name: str) -> bool:
        return name in self.members

    def add(self, name: str, address: str, gossip: str, incarnation: int, now: int) -> Member:
        member = self.members.get(name)
        if member is None:
            member = Member(name, address, gossip, incarnation, Status.ALIVE, now, now)
            self.members[name] = member
            self.changed = True
        elif (member.address, member.gossip) != (address, gossip):
            member.address, member.gossip = address, gossip
            self.changed = True
        return member

    def heard_from(self, name: str, incarnation: int, now: int) -> None:
        """A message from the member itself: it is alive at the incarnation it states."""
        member = self.members.get(name)
        if member is None or member is self.me:
            return
        member.last_seen = now
        if member.status is Status.LEFT and incarnation <= member.incarnation:
            return  # a straggler sent before it left
        if incarnation > member.incarnation:
            self._set(member, incarnation, Status.ALIVE, now)
        # At equal incarnation a suspicion stands until the member refutes it (it learns of
        # it from our heartbeats and bumps its incarnation): one heartbeat round.

    def claim(self, by: str, name: str, incarnation: int, status: Status, now: int) -> None:
        """A claim about a member relayed in another member's heartbeat."""
        if name == self.me.name:
            self._refute(incarnation, status)
            return
        member = self.members.get(name)
        if member is None:
            return
        if status is Status.SUSPECT and incarnation == member.incarnation:
            member.suspectors.add(by)
        if supersedes(incarnation, status, member.incarnation, member.status):
            self._set(member, incarnation, status, now)

    def _refute(self, incarnation: int, status: Status) -> None:
        if status is not Status.ALIVE and incarnation >= self.me.incarnation \
                and self.me.status is not Status.LEFT:
            self.me.incarnation = incarnation + 1

    def _set(self, member: Member, incarnation: int, status: Status, now: int) -> None:
        if status is not member.status:
            member.status_since = now
        if status is Status.ALIVE or incarnation != member.incarnation:
            member.suspectors.clear()
        member.incarnation, member.status = incarnation, status

    def tick(self, now: int) -> list[Member]:
        """Apply the timers; returns the members whose status changed."""
        changed = []
        for m in self.others():
            if m.status in (Status.LEFT, Status.DEAD):
                continue
            new = next_status(m.status, now - m.last_seen, now - m.status_since,
                              len(m.suspectors), self.timers)
            if new is not m.status:
                self._set(m, m.incarnation, new, now)
                changed.append(m)
        return changed

    def leave(self) -> None:
        self.me.status = Status.LEFT

    def left(self, name: str, incarnation: int, now: int) -> None:
        member = self.members.get(name)
        if member is not None and member is not self.me and incarnation >= member.incarnation:
            self._set(member, incarnation, Status.LEFT, now)

    def live(self) -> list[Member]:
        """Members we expect to hear from (alive or suspect), ourselves included."""
        return [m for m in self.members.values() if m.status in (Status.ALIVE, Status.SUSPECT)]

    def counts(self) -> dict[str, int]:
        counts = {f"members_{s.value}": 0 for s in Status}
        for m in self.members.values():
            counts[f"members_{m.status.value}"] += 1
        return counts
