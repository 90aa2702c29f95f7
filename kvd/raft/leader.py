"""The leader's side of Raft: replication, commitment, heartbeats, ReadIndex, transfer.

A `Leader` exists only while its node leads, for exactly one term (a new term means a new
leader or none), so leader-only state cannot leak into other roles. It writes messages and
confirmed reads to the node's Outbox and never decides the node's role: `tick` returns True
when the node must step down (check-quorum), and the core acts on it.

Rules:
- Commit by counting only entries of the leader's own term (Raft paper, Figure 8): an entry
  of an earlier term on a majority can still be overwritten; it is committed indirectly by
  the no-op the leader appends when elected.
- Proposals and commit updates are sent once per Ready (`flush`), so one fsync and one message
  per follower carry everything a turn produced.
- ReadIndex: a read is confirmed when a majority of voters answer a heartbeat sent after it
  was asked: then no other leader with a later commit existed when it was asked. Until the
  leader commits an entry of its term it does not know the commit index is current, so reads
  wait for that (the no-op).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from kvd.raft.config import quorum, quorum_index
from kvd.raft.log import RaftLog
from kvd.raft.messages import (
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
)
from kvd.raft.progress import Progress, ProgressState
from kvd.raft.ready import Outbox, ReadState


@dataclass(frozen=True)
class Options:
    election_ticks: int = 10  # followers campaign after [T, 2T) ticks without a leader
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 256
    # and at most this many bytes of entry data (at least one entry goes, whatever its size):
    # a message must stay under the receiver's frame limit (etcd's MaxSizePerMsg)
    max_bytes_per_msg: int = 1024 * 1024
    max_inflight: int = 64
    max_voters: int = 5


@dataclass(slots=True)
class _Read:
    index: int
    acks: set[str] = field(default_factory=set)


class Leader:
    def __init__(self, me: str, term: int, log: RaftLog, opts: Options, out: Outbox) -> None:
        self.me, self.term, self.log, self.opts, self.out = me, term, log, opts, out
        self.progress: dict[str, Progress] = {}
        self.heartbeat_elapsed = 0
        self.quorum_elapsed = 0  # ticks into the current check-quorum window
        self.transferee: str | None = None
        self.transfer_elapsed = 0
        self.bcast_pending = False  # something to send every follower at the next flush
        self.read_round = False  # reads asked since the last flush: one heartbeat confirms all
        self.reads: dict[bytes, _Read] = {}
        self.read_order: deque[bytes] = deque()
        self.deferred_reads: list[bytes] = []  # asked before the first commit of the term
        self.sync_members(initial=True)

    # -- members ----------------------------------------------------------------------------

    def sync_members(self, initial: bool = False) -> None:
        """Track exactly the configuration's members. A member added while leading counts as
        recently active: it has had no chance to answer and must not trip check-quorum."""
        members = self.log.config.members
        last = self.log.last_index
        for node in sorted(members - self.progress.keys()):
            pr = Progress(next=last + 1, recent_active=not initial)
            if node == self.me:
                pr.match = last
            self.progress[node] = pr
        for node in list(self.progress.keys() - members):
            del self.progress[node]
            if self.transferee == node:
                self.transferee = None

    def peers(self) -> list[str]:
        return sorted(n for n in self.progress if n != self.me)

    # -- proposals and commitment -----------------------------------------------------------

    def append(self, kind: EntryKind, data: bytes) -> int:
        entry = Entry(self.term, self.log.last_index + 1, kind, data)
        self.log.append([entry])
        if kind is EntryKind.CONFIG:
            self.sync_members()
        own = self.progress.get(self.me)
        if own is not None:
            own.maybe_update(entry.index)
        self.bcast_pending = True
        self.maybe_commit()
        return entry.index

    def maybe_commit(self) -> bool:
        progress = self.progress
        index = quorum_index(self.log.config.voters,
                             lambda v: progress[v].match if v in progress else 0)
        if index <= self.log.committed or self.log.term(index) != self.term:
            return False  # Figure 8: never by counting an earlier term's entry
        self.log.commit_to(index)
        self.bcast_pending = True
        deferred, self.deferred_reads = self.deferred_reads, []
        for ctx in deferred:
            self.read_index(ctx)
        return True

    def flush(self) -> None:
        """Send what this turn produced: new entries (as far as each follower's window
        goes), or at least the new commit index; and one heartbeat round for all the reads
        asked this turn (its context is the newest read, and confirming it confirms the
        ones before — a pipelined client's 64 reads cost one round, not 64)."""
        if self.read_round:
            self.read_round = False
            if self.read_order:
                self.heartbeat()
        if self.bcast_pending:
            self.bcast_pending = False
            for node in self.peers():
                if self.send_append(node, allow_empty=True):
                    while self.send_append(node):
                        pass

    # -- sending ----------------------------------------------------------------------------

    def send_append(self, to: str, allow_empty: bool = False) -> bool:
        pr = self.progress[to]
        if pr.is_paused(self.opts.max_inflight):
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:  # compacted away: only a snapshot can catch it up
            self.out.messages.append(InstallSnapshot(self.me, to, self.term, self.log.snapshot))
            pr.become_snapshot(self.log.snapshot.index)
            return True
        hi = min(self.log.last_index + 1, pr.next + self.opts.max_entries_per_msg)
        entries = _within(self.log.slice(pr.next, hi), self.opts.max_bytes_per_msg)
        if not entries and not allow_empty:
            return False
        self.out.messages.append(AppendEntries(self.me, to, self.term, prev, prev_term,
                                               entries, self.log.committed))
        pr.sent(entries[-1].index if entries else prev)
        return bool(entries)

    def heartbeat(self) -> None:
        ctx = self.read_order[-1] if self.read_order else b""
        for node in self.peers():
            # never a commit index past what the follower is known to hold: its log may still
            # have a conflicting entry there
            commit = min(self.progress[node].match, self.log.committed)
            self.out.messages.append(Heartbeat(self.me, node, self.term, commit, ctx))

    # -- answers ----------------------------------------------------------------------------

    def on_append_response(self, m: AppendResponse) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            hint = m.hint_index
            if m.hint_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(m.src, allow_empty=True)
            return
        was_paused = pr.is_paused(self.opts.max_inflight)
        confirms_probe = pr.match == m.index and pr.state is ProgressState.PROBE
        if not pr.maybe_update(m.index) and not confirms_probe:
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        else:
            pr.free_to(m.index)
        if not self.maybe_commit() and was_paused:
            self.send_append(m.src, allow_empty=True)
        while self.send_append(m.src):
            pass
        if m.src == self.transferee and pr.match == self.log.last_index:
            self.out.messages.append(TimeoutNow(self.me, m.src, self.term))

    def on_heartbeat_response(self, m: HeartbeatResponse) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.inflight and \
                len(pr.inflight) >= self.opts.max_inflight:
            pr.inflight.popleft()  # a full window that stays full has lost a message
        if pr.match < self.log.last_index:
            self.send_append(m.src, allow_empty=True)
        if m.ctx:
            self._ack_read(m.src, m.ctx)

    # -- time -------------------------------------------------------------------------------

    def tick(self) -> bool:
        """One tick; True when the leader must step down (it lost touch with a quorum)."""
        for pr in self.progress.values():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= self.opts.election_ticks:
                    pr.become_probe()
        if self.transferee is not None:
            self.transfer_elapsed += 1
            if self.transfer_elapsed >= self.opts.election_ticks:
                self.transferee = None  # the target did not take over in time: lead on
        self.quorum_elapsed += 1
        if self.quorum_elapsed >= self.opts.election_ticks:
            self.quorum_elapsed = 0
            if self.opts.check_quorum and not self.quorum_active():
                return True
            for node, pr in self.progress.items():
                pr.recent_active = node == self.me
        self.heartbeat_elapsed += 1
        if self.heartbeat_elapsed >= self.opts.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self.heartbeat()
        return False

    def quorum_active(self) -> bool:
        voters = self.log.config.voters
        active = sum(1 for v in voters if v == self.me
                     or (v in self.progress and self.progress[v].recent_active))
        return active >= quorum(voters)

    # -- leadership transfer ----------------------------------------------------------------

    def transfer(self, to: str) -> None:
        self.transferee, self.transfer_elapsed = to, 0
        if self.progress[to].match == self.log.last_index:
            self.out.messages.append(TimeoutNow(self.me, to, self.term))
        else:
            self.send_append(to, allow_empty=True)

    # -- ReadIndex --------------------------------------------------------------------------

    def read_index(self, ctx: bytes) -> None:
        if self.log.term(self.log.committed) != self.term:
            self.deferred_reads.append(ctx)
            return
        if ctx in self.reads:
            return
        self.reads[ctx] = _Read(self.log.committed, {self.me})
        self.read_order.append(ctx)
        if not self._release():
            self.read_round = True

    def _ack_read(self, node: str, ctx: bytes) -> None:
        read = self.reads.get(ctx)
        if read is not None:
            read.acks.add(node)
            self._release()

    def _release(self) -> bool:
        """Hand out every read up to the newest one a quorum has confirmed: a confirmation of
        a later round confirms the earlier ones too."""
        voters = self.log.config.voters
        confirmed = None
        for k, ctx in enumerate(self.read_order):
            if len(self.reads[ctx].acks & voters) >= quorum(voters):
                confirmed = k
        if confirmed is None:
            return False
        for _ in range(confirmed + 1):
            ctx = self.read_order.popleft()
            self.out.read_states.append(ReadState(ctx, self.reads.pop(ctx).index))
        return True


def _within(entries: list[Entry], budget: int) -> list[Entry]:
    """The longest prefix of `entries` whose data fits in `budget` bytes (one at least)."""
    total = 0
    for i, entry in enumerate(entries):
        total += len(entry.data)
        if total > budget and i:
            return entries[:i]
    return entries
