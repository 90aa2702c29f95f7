"""The errors the Raft package raises: all KvErrors, so the edges turn them into replies."""

from __future__ import annotations

from shared.errors import KvError, ProtocolError


class RaftProtocolError(ProtocolError):
    """Bytes that do not decode as a Raft message (they may come from anyone on the port)."""


class NotLeader(KvError):
    """This node cannot take the request; `leader` is the node it believes leads, if any."""

    code = "NOT_LEADER"

    def __init__(self, leader: str | None) -> None:
        where = f"the leader is {leader}" if leader else "no leader is known yet: retry soon"
        super().__init__(f"not the leader: {where}")
        self.leader = leader


class ProposalDropped(KvError):
    """The leader is handing leadership over and takes no proposals until that ends."""

    code = "PROPOSAL_DROPPED"


class ConfigRefused(KvError):
    """A membership change that would break the one-at-a-time rule or the cluster's bounds."""

    code = "CONFIG_REFUSED"


class StorageCorrupt(KvError):
    """Raft state on disk is damaged somewhere other than a torn tail: an operator must look."""

    code = "RAFT_STORAGE_CORRUPT"

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: damaged at offset {offset} ({reason}); refusing to start")
        self.path = path
        self.offset = offset
