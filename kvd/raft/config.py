"""Cluster membership as Raft sees it: voters and learners, changed one server at a time.

Rules (Ongaro's thesis, ch. 4, single-server changes):

- A node uses the newest configuration in its log, committed or not (`RaftLog.config`). A
  change therefore takes effect where it is appended and is undone if that entry is truncated.
- Two configurations that differ by one voter have overlapping majorities, so at most one
  leader per term holds across the change. Hence one change at a time: the leader refuses a
  new change while the previous one is uncommitted, and refuses any change before it has
  committed an entry of its own term (the fix for the bug Ongaro posted to raft-dev in 2015).
- Learners receive the log but are never counted: not for commitment, not for elections.
- At most `max_voters` voters (5 by default): the caller decides who votes; the core only
  refuses to go past the bound.

`apply_change` is total (a nonsensical change leaves the configuration as it is) because every
node must compute the same configuration from the same log; `refusal` is where the leader
checks a change before it enters the log.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgpack

MAX_VOTERS = 5


class ConfOp(enum.IntEnum):
    """ONLY APPEND: the numbers are in logs and on the wire."""

    ADD_VOTER = 1
    ADD_LEARNER = 2
    PROMOTE = 3  # a learner becomes a voter (add it as a learner first so it can catch up)
    REMOVE = 4  # a voter or a learner leaves


@dataclass(frozen=True, slots=True)
class Config:
    voters: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners

    @classmethod
    def of(cls, voters: Iterable[str], learners: Iterable[str] = ()) -> Config:
        return cls(frozenset(voters), frozenset(learners))


@dataclass(frozen=True, slots=True)
class ConfChange:
    op: ConfOp
    node: str
    context: bytes = b""  # opaque to Raft: e.g. the new node's address, for the caller

    def encode(self) -> bytes:
        return msgpack.packb([int(self.op), self.node, self.context], use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """The change in a CONFIG entry's data; ValueError if it is not one."""
        try:
            op, node, context = msgpack.unpackb(data, raw=False)
            change = cls(ConfOp(op), node, context)
        except Exception as exc:  # msgpack's many error types, and the unpacking above
            raise ValueError(f"not a config change ({type(exc).__name__})") from None
        if not isinstance(node, str) or not node or not isinstance(context, bytes):
            raise ValueError("not a config change (field types)")
        return change


def apply_change(config: Config, change: ConfChange) -> Config:
    voters, learners, node = set(config.voters), set(config.learners), change.node
    if change.op is ConfOp.ADD_VOTER:
        learners.discard(node)
        voters.add(node)
    elif change.op is ConfOp.ADD_LEARNER:
        if node not in voters:
            learners.add(node)
    elif change.op is ConfOp.PROMOTE:
        if node in learners:
            learners.discard(node)
            voters.add(node)
    else:
        voters.discard(node)
        learners.discard(node)
    return Config(frozenset(voters), frozenset(learners))


def refusal(config: Config, change: ConfChange, max_voters: int = MAX_VOTERS) -> str | None:
    """Why the leader must not propose `change` on top of `config` (None: it may)."""
    node, op = change.node, change.op
    grows = op is ConfOp.ADD_VOTER or op is ConfOp.PROMOTE
    if op is ConfOp.ADD_VOTER and node in config.members:
        return f"{node} is already a member (promote a learner with PROMOTE)"
    if op is ConfOp.ADD_LEARNER and node in config.members:
        return f"{node} is already a member"
    if op is ConfOp.PROMOTE and node not in config.learners:
        return f"{node} is not a learner"
    if op is ConfOp.REMOVE and node not in config.members:
        return f"{node} is not a member"
    if op is ConfOp.REMOVE and config.voters == {node}:
        return f"{node} is the last voter"
    if grows and len(config.voters) >= max_voters:
        return f"the cluster already has {len(config.voters)} voters (at most {max_voters})"
    return None


# -- quorums --------------------------------------------------------------------------------


def quorum(voters: frozenset[str]) -> int:
    return len(voters) // 2 + 1


def quorum_index(voters: frozenset[str], match: Callable[[str], int]) -> int:
    """The highest index that a majority of voters hold (0 with no voters)."""
    if not voters:
        return 0
    matched = sorted((match(v) for v in voters), reverse=True)
    return matched[quorum(voters) - 1]


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def vote_result(voters: frozenset[str], votes: dict[str, bool]) -> VoteResult:
    """Only voters' answers count: a learner's (or a stranger's) vote is ignored."""
    need = quorum(voters)
    granted = sum(1 for v in voters if votes.get(v) is True)
    if granted >= need:
        return VoteResult.WON
    rejected = sum(1 for v in voters if votes.get(v) is False)
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING
