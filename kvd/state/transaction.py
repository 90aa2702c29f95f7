"""MULTI / EXEC / DISCARD on the node: a client's queued commands, run back to back.

After MULTI, a client's commands are checked (name, arguments, sizes, and on a node with users
its permissions) and queued instead of run; EXEC runs the queue in one go and replies one
result per command, an error among them where that command failed (as Redis: the others still
run, nothing is rolled back). The loop runs one turn at a time, so nothing else touches the
node between a transaction's commands: atomic on this node. Its writes replicate as writes,
each with its own stamp, so a peer's concurrent write to the same key may still win by last
writer wins; the README says so.

A command refused while queueing spoils the transaction: EXEC then runs nothing and answers
EXECABORT, as Redis does. Commands that cannot be part of one are refused that way: WATCH (a
stream), the coordination commands (they go through the Raft group, which cannot be made
atomic with this node's keyspace) and AUTH / USER (they change who is asking).

The queue belongs to the client (the native door's connection identity). The Redis door keeps
its own (kvd.doors.respsession), since its EXEC also answers Redis's WATCH; HTTP has no
connection state to hold one. Bounds, since a client can open a transaction and vanish without
a word: `MAX_OPEN` transactions (past it the longest-open one is dropped, and its EXEC says
so), `MAX_QUEUED` commands and `MAX_QUEUED_BYTES` bytes in one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import ExecAbort, KvError, TooLarge, TransactionError

MAX_OPEN = 10_000
MAX_QUEUED = 100_000
MAX_QUEUED_BYTES = 64 * 1024 * 1024
# Not queued inside MULTI: they act on the transaction itself.
CONTROL = frozenset({"MULTI", "EXEC", "DISCARD"})
# Refused inside MULTI (and the transaction spoiled): see the module's docstring.
NOT_IN_MULTI = frozenset({"WATCH", "AUTH", "USER", "OBSERVE", "RAFT", "CGET", "CSET", "CDEL",
                          "CAS", "LEASE", "LOCK", "UNLOCK", "CAMPAIGN", "LEADER", "RESIGN"})


@dataclass(slots=True)
class Transaction:
    queued: list[list[bytes]] = field(default_factory=list)
    size: int = 0  # bytes queued
    refused: KvError | None = None  # the first command refused while queueing


class Transactions:
    """The open transactions, by client, oldest first."""

    def __init__(self) -> None:
        self.open: dict[bytes, Transaction] = {}
        self.dropped = 0  # transactions dropped at MAX_OPEN

    def __len__(self) -> int:
        return len(self.open)

    def begin(self, client: bytes) -> None:
        if not client:
            raise TransactionError("MULTI needs a connection that keeps its state: use kvsh, "
                                   "the Python client or the Redis door")
        if client in self.open:
            raise TransactionError("MULTI inside MULTI: send EXEC or DISCARD first",
                                   redis="ERR MULTI calls can not be nested")
        if len(self.open) >= MAX_OPEN:  # the longest-open one: most likely abandoned
            del self.open[next(iter(self.open))]
            self.dropped += 1
        self.open[client] = Transaction()

    def queue(self, client: bytes, argv: list[bytes], name: str) -> str:
        """Queue a checked command; "QUEUED". Raises (and spoils the transaction) if it
        cannot be queued."""
        t = self.open[client]
        try:
            if name in NOT_IN_MULTI:
                raise TransactionError(f"{name} cannot run inside MULTI — send it before MULTI "
                                       "or after EXEC",
                                       redis="ERR Command not allowed inside a transaction")
            size = sum(map(len, argv))
            if len(t.queued) >= MAX_QUEUED or t.size + size > MAX_QUEUED_BYTES:
                raise TooLarge(f"a transaction holds at most {MAX_QUEUED} commands and "
                               f"{MAX_QUEUED_BYTES >> 20} MiB — EXEC this one and start another")
        except KvError as exc:
            self.spoil(client, exc)
            raise
        t.queued.append(argv)
        t.size += size
        return "QUEUED"

    def spoil(self, client: bytes, exc: KvError) -> None:
        t = self.open.get(client)
        if t is not None and t.refused is None:
            t.refused = exc

    def take(self, client: bytes) -> list[list[bytes]]:
        """EXEC: the queue to run, closing the transaction; raises if there is none to run."""
        t = self.open.pop(client, None)
        if t is None:
            raise TransactionError("EXEC without MULTI — start a transaction with MULTI "
                                   "(one left open too long may have been dropped)",
                                   redis="ERR EXEC without MULTI")
        if t.refused is not None:
            raise ExecAbort(f"nothing ran: a command was refused while queueing "
                            f"({t.refused.code}) — start again with MULTI",
                            redis="EXECABORT Transaction discarded because of previous errors.")
        return t.queued

    def discard(self, client: bytes) -> None:
        if self.open.pop(client, None) is None:
            raise TransactionError("DISCARD without MULTI", redis="ERR DISCARD without MULTI")

