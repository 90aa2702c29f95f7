"""The Raft core: a deterministic state machine driven by ticks, messages and proposals.

No I/O, no clock: `tick()` is one logical tick, `step(msg)` one received message, and
everything the node must do in return comes out of `ready()` (see kvd.raft.ready for the
contract: persist, then send, then apply, then `advance()`). Randomness (the election timeout,
uniform in [T, 2T) ticks) comes from the injected `random.Random`.

What it implements, after Ongaro's thesis and etcd's raft library:

- Elections with pre-vote (a candidate first asks whether it *could* win, without raising
  anyone's term, so a node cut off from the others cannot inflate the term and depose a
  healthy leader when it returns) and check-quorum (a leader that has not heard from a
  majority within an election timeout steps down). With check-quorum, a node that heard from
  a leader within an election timeout ignores vote requests (leader stickiness), unless the
  campaign is a leadership transfer.
- Log replication with etcd's reject hint: one round trip per mismatching term, not per entry.
- Commitment by counting current-term entries only; a no-op on election (Figure 8).
- Membership one server at a time, learners (see kvd.raft.config).
- Leader transfer (`transfer_leadership`): catch the target up, send TimeoutNow, take no
  proposals meanwhile; given up after an election timeout.
- ReadIndex reads rather than leader leases: a lease needs bounded clock drift between nodes
  (a deposed leader must know its lease has run out before anyone else may lead), and a
  paused process or a jumping clock breaks that silently. ReadIndex assumes nothing about
  clocks: it costs one heartbeat round per batch of reads.
- Snapshots: the caller snapshots its state machine at an applied index (`snapshot`), the log
  before it is dropped; followers too far behind get the snapshot instead of entries.

The core never forwards: a follower raises NotLeader (with its leader hint) for proposals and
reads, and the caller routes them.
"""

from __future__ import annotations

import random

from kvd.raft import follower
from kvd.raft.config import ConfChange, Config, VoteResult, refusal, vote_result
from kvd.raft.errors import ConfigRefused, NotLeader, ProposalDropped
from kvd.raft.leader import Leader, Options
from kvd.raft.log import RaftLog
from kvd.raft.messages import (
    AppendEntries,
    AppendResponse,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    Snapshot,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from kvd.raft.ready import Outbox, Ready, Role, SoftState
from kvd.raft.storage import HardState, Restored

__all__ = ["Options", "Raft", "Role"]

# what a leader sends that promises nothing about its own storage (see Ready.send_first)
_REPLICATION = (AppendEntries, Heartbeat, InstallSnapshot)


class Raft:
    """One node's Raft. Driving it (see kvd.raft.ready for the Ready contract):

        raft = Raft(me, storage.load(), random.Random(seed))
        every tick:         raft.tick()
        every message:      raft.step(decode(frame))
        client requests:    raft.propose(data) / raft.read_index(ctx) / raft.propose_config(c)
        after any of those: while raft.has_ready(): handle(raft.ready()); raft.advance()
    """

    def __init__(self, me: str, restored: Restored, rng: random.Random,
                 options: Options | None = None) -> None:
        """Start (or restart) from what storage holds. The caller restores its state machine
        from `restored.snapshot.data`; committed entries after the snapshot come out of
        ready() again, to apply on top of it."""
        self.me = me
        self.opts = options or Options()
        self.rng = rng
        hs = restored.hard_state
        snap = restored.snapshot
        self.log = RaftLog(snap, restored.entries, max(hs.commit, snap.index))
        self.term = hs.term
        self.vote = hs.vote
        self.role = Role.FOLLOWER
        self.lead: str | None = None
        self.leading: Leader | None = None
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.timeout = self._random_timeout()
        self.out = Outbox()
        self._persisted = HardState(hs.term, hs.vote, self.log.committed)
        self._reported = SoftState(None, Role.FOLLOWER)
        self._incoming_snapshot: Snapshot | None = None
        self._handed_out: Ready | None = None

    # -- what the caller may look at --------------------------------------------------------

    @property
    def leader(self) -> str | None:
        return self.lead

    @property
    def config(self) -> Config:
        return self.log.config

    @property
    def promotable(self) -> bool:
        return self.me in self.log.config.voters

    # -- inputs -----------------------------------------------------------------------------

    def tick(self) -> None:
        self._idle()
        if self.leading is not None:
            if self.leading.tick():
                self._become_follower(self.term, None)
            return
        self.election_elapsed += 1
        if self.promotable and self.election_elapsed >= self.timeout:
            self.election_elapsed = 0
            self._campaign(transfer=False)

    def campaign(self) -> None:
        """Start an election now rather than at the next timeout."""
        self._idle()
        self._campaign(transfer=False)

    def propose(self, data: bytes) -> int:
        """Append `data` to the log; returns its index. It is committed when an entry of this
        index *and of today's term* (`raft.term` now) comes out in Ready.committed; another
        term there means the proposal was lost to a change of leader."""
        self._writable()
        assert self.leading is not None
        return self.leading.append(EntryKind.NORMAL, data)

    def propose_config(self, change: ConfChange) -> int:
        """Propose one membership change; returns its index. It takes effect on each node as
        soon as it is in its log (the leader counts quorums by it at once). Refused while the
        previous change is uncommitted, before this leader committed an entry of its term, or
        when it breaks the rules in kvd.raft.config (max_voters voters at most)."""
        self._writable()
        leading = self.leading
        assert leading is not None
        if self.log.term(self.log.committed) != self.term:
            raise ConfigRefused("the new leader has not committed an entry of its term yet: "
                                "retry shortly")
        if self.log.last_config_index > self.log.committed:
            raise ConfigRefused("another membership change is not committed yet: retry later")
        why = refusal(self.log.config, change, self.opts.max_voters)
        if why:
            raise ConfigRefused(why)
        return leading.append(EntryKind.CONFIG, change.encode())

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read named `ctx` (unique per pending read): a ReadState for
        it comes out of a later Ready once a majority answered a heartbeat sent after it was
        asked; serve the read once the state machine has applied ReadState.index. ReadIndex,
        not a leader lease, because a lease is only as safe as the bound on clock drift and
        pauses between nodes, and nothing here assumes one. A read asked of a leader that
        loses leadership first is never confirmed: time it out and retry."""
        self._idle()
        if self.leading is None:
            raise NotLeader(self.lead)
        self.leading.read_index(ctx)

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter `to` (e.g. before stopping this node)."""
        self._idle()
        if self.leading is None:
            raise NotLeader(self.lead)
        if to == self.me:
            return
        if to not in self.log.config.voters:
            raise ConfigRefused(f"{to} is not a voter: it cannot lead")
        self.leading.transfer(to)

    def snapshot(self, index: int, data: bytes) -> Snapshot:
        """The state machine's snapshot at applied `index`: the log up to it is dropped here;
        persist the result with `storage.compact(snapshot)`."""
        self._idle()
        return self.log.compact(index, data)

    def step(self, msg: Message) -> None:
        self._idle()
        if msg.dst != self.me:
            return
        if msg.term > self.term:
            if not self._accept_higher_term(msg):
                return
        elif msg.term < self.term:
            self._answer_stale(msg)
            return
        if isinstance(msg, VoteRequest):
            self._on_vote_request(msg)
        elif isinstance(msg, VoteResponse):
            self._on_vote_response(msg)
        elif isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot):
            self._from_leader(msg)
        elif isinstance(msg, TimeoutNow):
            if self.promotable:
                self._campaign(transfer=True)
        elif self.leading is not None:
            if isinstance(msg, AppendResponse):
                self.leading.on_append_response(msg)
            else:
                self.leading.on_heartbeat_response(msg)
            self._step_down_if_removed()

    # -- Ready ------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        # called every turn of the caller's loop: compares fields rather than building states
        log, hs, soft = self.log, self._persisted, self._reported
        return bool(self.out.messages or self.out.read_states
                    or log.stable < log.last_index or log.applied < log.committed
                    or self._incoming_snapshot is not None
                    or self.term != hs.term or self.vote != hs.vote or log.committed != hs.commit
                    or self.lead != soft.leader or self.role is not soft.role
                    or (self.leading is not None
                        and (self.leading.bcast_pending or self.leading.read_round)))

    def ready(self) -> Ready:
        self._idle()
        if self.leading is not None:
            self.leading.flush()
        hs, soft = self._hard_state(), self._soft_state()
        persisted = self._persisted
        messages = self.out.messages
        rd = Ready(
            hard_state=hs if hs != persisted else None,
            snapshot=self._incoming_snapshot,
            entries=self.log.unstable(),
            messages=messages,
            committed=self.log.to_apply(),
            read_states=self.out.read_states,
            soft_state=soft if soft != self._reported else None,
            send_first=(self.leading is not None and self._incoming_snapshot is None
                        and hs.term == persisted.term and hs.vote == persisted.vote
                        and all(type(m) in _REPLICATION for m in messages)),
        )
        self.out.clear()
        self._handed_out = rd
        return rd

    def advance(self) -> None:
        rd = self._handed_out
        if rd is None:
            raise RuntimeError("advance() without a ready()")
        self.log.stable = self.log.last_index
        if rd.committed:
            self.log.applied = rd.committed[-1].index
        if rd.hard_state is not None:
            self._persisted = rd.hard_state
        if rd.soft_state is not None:
            self._reported = rd.soft_state
        self._incoming_snapshot = None
        self._handed_out = None

    # -- roles ------------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term, self.vote = term, None
        self.lead = None
        self.leading = None
        self.votes = {}
        self.election_elapsed = 0
        self.timeout = self._random_timeout()

    def _become_follower(self, term: int, lead: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead

    def _campaign(self, transfer: bool) -> None:
        if self.leading is not None or not self.promotable:
            return
        self._elect(pre=self.opts.pre_vote and not transfer, transfer=transfer)

    def _elect(self, pre: bool, transfer: bool) -> None:
        if pre:
            self.role = Role.PRE_CANDIDATE
            self.lead, self.votes = None, {}
            self.election_elapsed, self.timeout = 0, self._random_timeout()
            term = self.term + 1  # the term it would campaign in; its own stays
        else:
            self._reset(self.term + 1)
            self.role = Role.CANDIDATE
            self.vote = self.me
            term = self.term
        self.votes[self.me] = True
        if self._tally():
            return
        for node in sorted(self.log.config.voters - {self.me}):
            self.out.messages.append(VoteRequest(self.me, node, term, self.log.last_index,
                                                 self.log.last_term, pre, transfer))

    def _tally(self) -> bool:
        """Act on the votes so far; True once the campaign is decided."""
        result = vote_result(self.log.config.voters, self.votes)
        if result is VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self._elect(pre=False, transfer=False)  # won the straw poll: now for real
            else:
                self._become_leader()
        elif result is VoteResult.LOST:
            self._become_follower(self.term, None)
        return result is not VoteResult.PENDING

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.lead = self.me
        self.leading = Leader(self.me, self.term, self.log, self.opts, self.out)
        self.leading.append(EntryKind.NOOP, b"")

    def _step_down_if_removed(self) -> None:
        """A leader removed from the voters leads until that change commits (thesis 4.2.2),
        then steps down: it is no longer part of any majority."""
        if (self.leading is not None and not self.promotable
                and self.log.last_config_index <= self.log.committed):
            self._become_follower(self.term, None)

    # -- terms ------------------------------------------------------------------------------

    def _accept_higher_term(self, msg: Message) -> bool:
        """Adopt msg's higher term, or not; False when the message is to be ignored."""
        if isinstance(msg, VoteRequest):
            in_lease = (self.opts.check_quorum and self.lead is not None
                        and self.election_elapsed < self.opts.election_ticks)
            if in_lease and not msg.transfer:
                return False  # leader stickiness: a leader is alive, do not disrupt it
            if msg.pre:
                return True  # a pre-vote changes no one's term
        if isinstance(msg, VoteResponse) and msg.pre and msg.granted:
            return True  # granted in the term we would campaign in: not a newer term
        from_leader = isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot)
        elapsed = self.election_elapsed
        self._become_follower(msg.term, msg.src if from_leader else None)
        if isinstance(msg, VoteRequest):
            # Only a leader or a granted vote restarts the election timer (Raft, Figure 2): a
            # candidate with a stale log, timing out first again and again, must not keep
            # the node that could win from ever timing out.
            self.election_elapsed = elapsed
        return True

    def _answer_stale(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries | Heartbeat):
            # A deposed leader: stickiness makes us ignore its votes and it ignores ours, so
            # tell it the term, or it might never step down. A rejection of index 0 reads as
            # stale to any leader of our term that gets it late.
            self.out.messages.append(AppendResponse(self.me, msg.src, self.term, 0, True))
        elif isinstance(msg, VoteRequest) and msg.pre:
            self.out.messages.append(VoteResponse(self.me, msg.src, self.term, False, True))

    # -- votes ------------------------------------------------------------------------------

    def _on_vote_request(self, m: VoteRequest) -> None:
        # Learners answer too: a learner may already be a voter in a configuration it has
        # not received yet, and its answer counts only where its sender lists it as a voter.
        can_vote = (self.vote == m.src or (self.vote is None and self.lead is None)
                    or (m.pre and m.term > self.term))
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            self.out.messages.append(VoteResponse(self.me, m.src, m.term, True, m.pre))
            if not m.pre:
                self.vote = m.src
                self.election_elapsed = 0
        else:
            self.out.messages.append(VoteResponse(self.me, m.src, self.term, False, m.pre))

    def _on_vote_response(self, m: VoteResponse) -> None:
        campaigning = Role.PRE_CANDIDATE if m.pre else Role.CANDIDATE
        if self.role is not campaigning:
            return  # late: that campaign is over
        self.votes.setdefault(m.src, m.granted)
        self._tally()

    # -- following --------------------------------------------------------------------------

    def _from_leader(self, m: AppendEntries | Heartbeat | InstallSnapshot) -> None:
        if self.leading is not None:
            return  # another leader in our term cannot exist; nothing sane to do with it
        if self.role is not Role.FOLLOWER:
            self._become_follower(self.term, m.src)
        self.lead = m.src
        self.election_elapsed = 0
        if isinstance(m, AppendEntries):
            self.out.messages.append(follower.on_append(self.log, m))
        elif isinstance(m, Heartbeat):
            self.log.commit_to(m.commit)
            self.out.messages.append(HeartbeatResponse(self.me, m.src, self.term, m.ctx))
        else:
            reply, restored = follower.on_snapshot(self.log, m)
            self.out.messages.append(reply)
            if restored:
                self._incoming_snapshot = m.snapshot

    # -- small helpers ----------------------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def _random_timeout(self) -> int:
        t = self.opts.election_ticks
        return t + self.rng.randrange(t)

    def _idle(self) -> None:
        if self._handed_out is not None:
            raise RuntimeError("a Ready is out: persist, send, apply, then advance() first")

    def _writable(self) -> None:
        self._idle()
        if self.leading is None:
            raise NotLeader(self.lead)
        if self.leading.transferee is not None:
            raise ProposalDropped("leadership is being transferred: retry on the new leader")
