"""Operators' changes to the consensus group (RAFT REMOVE, RAFT INIT): the rules they are
checked by, and the removals waiting for their config change to commit.

A removal is for a member gone for good: its gossip status must not be `alive` (one that is
alive is stopped with `kvd stop` instead, and a member that leaves is removed anyway). The
leader's reconciler (kvd.consensus) only adds and promotes members that are alive, so a
removed member that stays dead stays out; if it ever comes back alive, it is added again as
any member that joins — membership follows gossip. (etcd refuses a removed member's ID for
ever; here a name is not an identity that could be retired, and a node that returns with its
data dir is a member again.)

The node an operator asks checks the rules, forwards the removal to the leader when it is
not the leader, and answers once a committed configuration without the member has reached
it, or after ANSWER_TICKS with TRYAGAIN (the change may still commit).
"""

from __future__ import annotations

from kvd.raft.config import Config
from kvd.state.context import Deferred
from shared.errors import TryAgain


def removal_refusal(config: Config, leader: str | None, name: str,
                    status: str | None) -> str | None:
    """Why `name` may not be removed (None: it may); `status` is its gossip status (None:
    gossip does not know it)."""
    if name not in config.members:
        members = ", ".join(sorted(config.members)) or "none"
        return f"{name} is not a member of the consensus group (members: {members}) — " \
               "check the name with kvd raft status"
    if status == "alive":
        return f"{name} is alive: stop it (kvd stop on its host; a member that leaves is " \
               "removed), or remove it once it is dead for good"
    if name == leader:
        return f"{name} leads the consensus group: wait until another member leads"
    if config.voters == {name}:
        return f"{name} is the last voter: the group cannot do without it"
    return None


def init_refusal(config: Config, term: int, leader: str | None) -> str | None:
    """Why this node may not found a group (RAFT INIT): it must have no Raft state at all."""
    if config.members or term or leader is not None:
        voters = ", ".join(sorted(config.voters)) or "none yet"
        return f"this node already takes part in a consensus group (term {term}, voters " \
               f"{voters}, leader {leader or 'unknown'}) — nothing to init"
    return None


class Removals:
    """Removals this node's clients asked for, by member name."""

    def __init__(self) -> None:
        self.pending: dict[str, list[tuple[Deferred, int]]] = {}

    def wait(self, name: str, deadline: int) -> Deferred:
        answer = Deferred()
        self.pending.setdefault(name, []).append((answer, deadline))
        return answer

    def settled(self, config: Config) -> None:
        """A configuration committed: answer the removals it carries out."""
        for name in [n for n in self.pending if n not in config.members]:
            for answer, _ in self.pending.pop(name):
                answer.resolve({"removed": name, "voters": sorted(config.voters),
                                "learners": sorted(config.learners)})

    def expire(self, ticks: int) -> None:
        for name, waiting in list(self.pending.items()):
            late = [a for a, deadline in waiting if deadline <= ticks]
            if not late:
                continue
            left = [(a, d) for a, d in waiting if d > ticks]
            if left:
                self.pending[name] = left
            else:
                del self.pending[name]
            for answer in late:
                answer.resolve(TryAgain(
                    f"the removal of {name} has not committed yet: a majority of the current "
                    "voters must be reachable to change them — check kvd raft status, then "
                    "retry (it may still commit)"))
