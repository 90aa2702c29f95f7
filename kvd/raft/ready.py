"""What the core hands its caller: the Ready, and the small types in it.

The contract, for whoever drives a `Raft` (the loop, or the simulator):

    rd = raft.ready()            # only when raft.has_ready()
    1. storage.save(rd.hard_state, rd.entries, rd.snapshot)   -- durable (fsync) on return
    2. send rd.messages          -- any order, any may be lost; before 1 when rd.send_first
    3. if rd.snapshot: restore the state machine from rd.snapshot.data
    4. apply rd.committed in order (NORMAL: the caller's data; CONFIG: a ConfChange the core
       has already taken into account, whose `context` may tell the caller an address; NOOP:
       nothing)
    5. serve each of rd.read_states once the state machine has applied its `index`
    6. raft.advance()

Between ready() and advance() the core takes no other input (it raises): that keeps "what was
persisted" and "what was handed out" one and the same. Why persist before sending: a vote,
an acknowledgement of entries, a term in a message are promises about durable state; sent
before the fsync, a crash could make a node vote twice in a term or forget an entry a leader
counted toward commitment.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from kvd.raft.messages import Entry, Message, Snapshot
from kvd.raft.storage import HardState


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile, for the caller's routing: who leads (None: unknown) and what this node is."""

    leader: str | None
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex request confirmed: reads for `ctx` see every write committed before it was
    asked once the state machine has applied `index`."""

    ctx: bytes
    index: int


@dataclass(slots=True)
class Outbox:
    """What the core produced since the last Ready (the leader's helper writes here too)."""

    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def clear(self) -> None:
        """Start new lists (the old ones went out in a Ready)."""
        self.messages, self.read_states = [], []


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None  # None: unchanged since the last Ready
    snapshot: Snapshot | None  # from the leader: it replaces the whole stored log
    entries: list[Entry]  # to append; a first index at or below the stored last truncates there
    messages: list[Message]
    committed: list[Entry]
    read_states: list[ReadState]
    soft_state: SoftState | None  # None: unchanged
    # The messages may go before the save (the one exception to "save, then send"): a
    # leader's replication messages in a Ready that changes neither term nor vote. They
    # promise nothing about the leader's storage, and the leader counts its own new entries
    # toward commitment only when a follower's acknowledgement arrives — input the core takes
    # only after advance(), so after the save (Ongaro's thesis, 10.2.1: the leader writes its
    # log in parallel with replicating it). Saves one fsync on a write's critical path.
    send_first: bool = False
