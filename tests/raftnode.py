"""One simulated Raft node, and the checker of Raft's invariants that watches every node.

A `Node` is what a daemon would be: a `Raft`, storage that survives crashes (MemoryStorage, or
FileStorage over tests/fakefiles.FakeFiles), and a state machine (a hash chain over the applied
entries, so two nodes that applied different entries at one index can never agree again). It
drives the core exactly as the Ready contract says: persist, send, restore a snapshot, apply,
advance. A crash drops the Raft object and the state machine; a restart rebuilds both from
storage alone.

`Checker` raises `Violation` the moment an invariant breaks: election safety (one leader per
term), log matching (an (index, term) names one entry and one predecessor term), leader
completeness (a leader holds everything committed in earlier terms), state machine safety (one
entry and one state per applied index), no double vote in a term and no acknowledged entry
missing from storage (what crashes would expose), and ReadIndex reads never older than what
was committed when they were asked.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from kvd.raft.config import Config
from kvd.raft.core import Options, Raft
from kvd.raft.filestore import FileStorage
from kvd.raft.messages import AppendResponse, Entry, EntryKind, Message, Snapshot, VoteResponse
from kvd.raft.ready import ReadState
from kvd.raft.storage import HardState, MemoryStorage
from tests.fakefiles import Crash, FakeFiles


class Violation(AssertionError):
    """A Raft invariant broke."""


class StateMachine:
    """The applied log as a hash chain: (index, digest after applying it)."""

    def __init__(self) -> None:
        self.index = 0
        self.digest = b""

    def apply(self, e: Entry) -> None:
        if e.index != self.index + 1:
            raise Violation(f"applied {e.index} after {self.index}")
        head = struct.pack(">QQB", e.index, e.term, e.kind)
        self.digest = hashlib.blake2b(self.digest + head + e.data, digest_size=8).digest()
        self.index = e.index

    def snapshot(self) -> bytes:
        return struct.pack(">Q", self.index) + self.digest

    def restore(self, snap: Snapshot) -> None:
        if snap.data:  # empty: a founding snapshot, nothing applied yet
            (index,), self.digest = struct.unpack(">Q", snap.data[:8]), snap.data[8:]
            if index != snap.index:
                raise Violation(f"snapshot at {snap.index} holds state at {index}")
        else:
            self.digest = b""
        self.index = snap.index


class Node:
    """One daemon. With `files`, its storage is a FileStorage over FakeFiles: a restart
    re-opens it (recovery runs), and a crash can land inside a save (a torn write)."""

    def __init__(self, name: str, seed: int, opts: Options, files: bool = False,
                 machine: Callable[[], StateMachine] = StateMachine) -> None:
        """`machine` makes the state machine, anew at every start (a subclass may run a real
        one beside the hash chain: tests/coordsim.py)."""
        self.name = name
        self.machine = machine
        self.rng = random.Random(seed)
        self.files = FakeFiles(random.Random(seed + 1)) if files else None
        self.storage: MemoryStorage | FileStorage = (
            FileStorage(name, self.files) if self.files is not None else MemoryStorage())
        self.opts = opts
        self.raft: Raft | None = None
        self.sm = machine()
        self.read_states: list[ReadState] = []
        self.starts = 0

    @property
    def up(self) -> bool:
        return self.raft is not None

    def start(self, checker: Checker) -> None:
        if self.files is not None and self.starts:
            self.files.crash()  # what was not synced is gone, or torn
            self.storage = FileStorage(self.name, self.files)
        restored = self.storage.load()
        self.raft = Raft(self.name, restored, self.rng, self.opts)
        self.sm = self.machine()
        self.sm.restore(restored.snapshot)
        checker.restored(self)
        self.starts += 1

    def crash(self) -> None:
        self.raft = None  # and the state machine with it: only storage survives

    def handle(self, checker: Checker, crash_after_persist: bool = False,
               crash_in_save: bool = False) -> list[Message]:
        """Work off every Ready; the messages to send."""
        out: list[Message] = []
        raft = self.raft
        while raft is not None and raft.has_ready():
            rd = raft.ready()
            checker.persisting(self, rd.entries)
            if rd.send_first:  # a leader's replication leaves before its own save
                checker.sending(self, rd.messages)
                out.extend(rd.messages)
            if not self._save(rd.hard_state, rd.entries, rd.snapshot, crash_in_save):
                break
            if crash_after_persist:
                self.crash()
                break
            if not rd.send_first:
                checker.sending(self, rd.messages)
                out.extend(rd.messages)
            if rd.snapshot is not None:
                self.sm.restore(rd.snapshot)
                checker.restored(self)
            for e in rd.committed:
                self.sm.apply(e)
                checker.applied(self, e)
            self.read_states.extend(rd.read_states)
            checker.reads_done(rd.read_states)
            raft.advance()
        return out

    def _save(self, hs: HardState | None, entries: list[Entry], snap: Snapshot | None,
              crash: bool) -> bool:
        """Persist; False if the node crashed doing it."""
        if crash and self.files is not None:
            self.files.crash_in = self.rng.randint(0, 3)
        try:
            self.storage.save(hs, entries, snap)
        except Crash:
            self.crash()
            return False
        finally:
            if self.files is not None:
                self.files.crash_in = None
        return True

    def compact(self) -> Snapshot | None:
        """Snapshot the state machine where it stands (if that is past the last snapshot)."""
        raft = self.raft
        if raft is None or self.sm.index <= raft.log.snapshot.index:
            return None
        snap = raft.snapshot(self.sm.index, self.sm.snapshot())
        self.storage.compact(snap)
        return snap


@dataclass
class Checker:
    leaders: dict[int, str] = field(default_factory=dict)  # term -> its leader
    entries: dict[tuple[int, int], tuple] = field(default_factory=dict)  # (index, term) ->
    committed: dict[int, int] = field(default_factory=dict)  # index -> term
    states: dict[int, bytes] = field(default_factory=dict)  # index -> state machine digest
    commit_by_term: dict[int, int] = field(default_factory=dict)  # leader term -> its commit
    verified: dict[tuple[str, int], int] = field(default_factory=dict)  # (leader, term) -> index
    granted: dict[tuple[str, int], str] = field(default_factory=dict)  # (voter, term) -> whom
    reads: dict[bytes, int] = field(default_factory=dict)  # ctx -> committed when asked
    applied_data: set[bytes] = field(default_factory=set)
    max_committed: int = 0

    def persisting(self, node: Node, batch: list[Entry]) -> None:
        """Log matching, checked on every entry as it becomes durable anywhere."""
        if not batch:
            return
        assert node.raft is not None
        prev = node.raft.log.term(batch[0].index - 1)
        for e in batch:
            if prev is None or e.term < prev:
                raise Violation(f"{node.name}: entry {e.index} term {e.term} after term {prev}")
            seen = self.entries.setdefault((e.index, e.term), (e.kind, e.data, prev))
            if seen != (e.kind, e.data, prev):
                raise Violation(f"log matching: {node.name} holds another entry at "
                                f"({e.index}, {e.term}): {seen} vs {(e.kind, e.data, prev)}")
            prev = e.term

    def sending(self, node: Node, msgs: list[Message]) -> None:
        """What a message promises must already be in storage."""
        st = node.storage
        for m in msgs:
            if isinstance(m, VoteResponse) and m.granted and not m.pre:
                whom = self.granted.setdefault((node.name, m.term), m.dst)
                if whom != m.dst or st.hard_state.vote != m.dst or st.hard_state.term != m.term:
                    raise Violation(f"{node.name} voted {whom} and {m.dst} in term {m.term} "
                                    f"(stored: {st.hard_state})")
            elif (isinstance(m, AppendResponse) and not m.reject
                  and st.snapshot.index + len(st.entries) < m.index):
                raise Violation(f"{node.name} acknowledged {m.index} without storing it")

    def applied(self, node: Node, e: Entry) -> None:
        self._committed(e.index, e.term, node.name)
        state = self.states.setdefault(e.index, node.sm.digest)
        if state != node.sm.digest:
            raise Violation(f"state machine safety: {node.name} differs after {e.index}")
        if e.kind is EntryKind.NORMAL:
            self.applied_data.add(e.data)

    def restored(self, node: Node) -> None:
        sm = node.sm
        if sm.index and sm.digest:
            state = self.states.setdefault(sm.index, sm.digest)
            if state != sm.digest:
                raise Violation(f"{node.name} restored a snapshot unlike the state at {sm.index}")
        raft = node.raft
        if raft is not None:  # nothing it stored as committed contradicts the cluster
            for i in range(raft.log.first_index, raft.log.committed + 1):
                self._committed(i, raft.log.term(i), node.name)  # type: ignore[arg-type]

    def _committed(self, index: int, term: int, who: str) -> None:
        known = self.committed.setdefault(index, term)
        if known != term:
            raise Violation(f"{who}: entry {index} committed with term {term} and {known}")
        self.max_committed = max(self.max_committed, index)

    def read_asked(self, ctx: bytes) -> None:
        self.reads[ctx] = self.max_committed

    def reads_done(self, states: list[ReadState]) -> None:
        for rs in states:
            asked = self.reads.pop(rs.ctx, None)
            if asked is not None and rs.index < asked:
                raise Violation(f"stale read {rs.ctx!r}: index {rs.index} < {asked} committed "
                                f"when it was asked")

    def observe(self, nodes: list[Node]) -> None:
        """After every event on `nodes`: election safety, and leader completeness."""
        for n in nodes:
            raft = n.raft
            if raft is None or raft.leading is None:
                continue
            term, log = raft.term, raft.log
            holder = self.leaders.setdefault(term, n.name)
            if holder != n.name:
                raise Violation(f"election safety: {holder} and {n.name} both lead term {term}")
            if log.committed > self.commit_by_term.get(term, 0):
                self.commit_by_term[term] = log.committed
                for i in range(max(log.first_index, self.max_committed + 1), log.committed + 1):
                    self._committed(i, log.term(i), n.name)  # type: ignore[arg-type]
            need = max((c for t, c in self.commit_by_term.items() if t < term), default=0)
            done = self.verified.get((n.name, term), 0)
            if need > done:
                for i in range(max(done + 1, log.first_index), need + 1):
                    if log.term(i) != self.committed.get(i, log.term(i)) or i > log.last_index:
                        raise Violation(f"leader completeness: {n.name} (term {term}) lacks "
                                        f"committed entry {i}")
                self.verified[(n.name, term)] = need


def check_log(raft: Raft) -> None:
    """The RaftLog's own invariants (kvd.raft.log), in full: for the end of a run."""
    log = raft.log
    for k, e in enumerate(log.entries):
        if e.index != log.snapshot.index + 1 + k:
            raise Violation(f"{raft.me}: entry {e.index} at position {k}")
    terms = [log.snapshot.term] + [e.term for e in log.entries]
    if terms != sorted(terms):
        raise Violation(f"{raft.me}: terms go down")
    if not log.snapshot.index <= log.applied <= log.committed <= log.last_index:
        raise Violation(f"{raft.me}: snapshot/applied/committed/last out of order")


def make_nodes(names: list[str], founders: list[str], seed: int, opts: Options,
               learners: list[str] | tuple[str, ...] = (), files: bool = False,
               machine: Callable[[], StateMachine] = StateMachine) -> dict[str, Node]:
    nodes = {}
    for k, name in enumerate(names):
        node = Node(name, seed * 1009 + k, opts, files, machine)
        if name in founders or name in learners:
            node.storage.bootstrap(Config.of(founders, learners))
        nodes[name] = node
    return nodes
