"""The consensus group beside the gossip keyspace: drives the Raft core (kvd.raft) from the loop.

The loop calls `tick` every housekeeping tick (kvd.loop.TICK_S: one Raft tick, so elections
time out after 1-2 s and a leader heartbeats every 100 ms) and `drive` after every turn. Raft
messages travel as peer messages of type RAFT over the peer sockets the cluster already has
(to a member's client ROUTER, by its name's address in the membership); what arrives is
handed to `receive`. Durable state lives in its own checksummed files under
`<data dir>/raft` (kvd.raft.filestore), saved and fsynced before any message that depends on
it is sent — the contract of kvd.raft.ready.

Who votes follows the gossip membership: the leader adds every alive member as a learner,
then promotes learners to voters up to five (the rest stay learners), one change at a time,
and removes members that left. A member that is dead stays a voter until it comes back or an
operator removes it with RAFT REMOVE (a dead voter still counts toward the quorum size, as in
etcd; kvd.raft.removals). A node whose raft folder is empty founds a group of one when it was
started without --join; a node that joins waits to be added; a cluster that predates the
group gets one from an operator's RAFT INIT on one node.

The coordination state machine (kvd.raft.coord) applies what commits. Writes are proposed
(through the leader: a follower forwards them as {"p": ...}) and answered by the node the client
asked, once it has applied them. Reads (CGET, LEADER, LEASE TTL) take no log entry: they are
ReadIndex reads (why ReadIndex rather than a leader lease: kvd.raft.core). The leader asks the
group to confirm it still leads — one heartbeat round for all the reads of a turn — and
answers with its commit index; a follower asks the leader for that index ({"q": [origin,
ctx]} out, {"qi": [ctx, index]} back). Either way the read is served from the node's own state
machine once it has applied that index: it sees every write that committed before the read
was asked, and costs no fsync anywhere.
OBSERVE's waiters (kvd.raft.observers) are woken after every Ready's entries are applied, on
every node.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

import msgpack

from kvd.raft.config import ConfChange, Config, ConfOp
from kvd.raft.coord import Coordination
from kvd.raft.coordcodec import OPS
from kvd.raft.core import Raft
from kvd.raft.errors import ConfigRefused, NotLeader, ProposalDropped
from kvd.raft.filestore import FileStorage
from kvd.raft.leader import Options
from kvd.raft.messages import EntryKind, decode, encode
from kvd.raft.observers import Observers
from kvd.raft.ready import Ready, Role
from kvd.raft.removals import Removals, init_refusal, removal_refusal
from kvd.state.context import Deferred
from shared.errors import KvError, MembershipRefused, NoQuorum, TryAgain

log = logging.getLogger("kvd.consensus")

MAX_VOTERS = 5
RECONCILE_TICKS = 10  # the leader looks at the membership once a second
ERROR_LOG_TICKS = 100  # a failing raft storage is logged at most every 10 s
ANSWER_TICKS = 50  # a coordination command unanswered after 5 s gets TRYAGAIN
LEASE_TICKS = 5  # the leader proposes TICK (lease expiry) every 0.5 s, while leases exist
SNAPSHOT_EVERY = 10_000  # applied entries between snapshots: the raft log stays bounded
MAX_READS = 10_000  # reads awaiting confirmation on one node (its clients' and forwarded)


class Consensus:
    def __init__(self, me: str, data_dir: Path, found: bool,
                 send: Callable[[str, dict], bool],
                 members: Callable[[], list[tuple[str, str]]],
                 rng: random.Random | None = None) -> None:
        """`send(name, body)`: a peer message body to a member (False when its address is
        not known): {"m": a Raft message} or {"p": a proposal for the leader};
        `members()`: the members as (name, status), us included."""
        self.me = me
        self.send = send
        self.members = members
        self.storage = FileStorage(data_dir / "raft")
        restored = self.storage.load()
        if found and not restored.hard_state.term and not restored.entries \
                and not restored.snapshot.index:
            self.storage.bootstrap(Config.of([me]))
            restored = self.storage.load()
            log.info("founded a consensus group of one (%s); members join it as they come", me)
        self._rng = rng or random.Random()
        self.raft = Raft(me, restored, self._rng, Options(max_voters=MAX_VOTERS))
        self.coord = Coordination()
        if restored.snapshot.data:
            self.coord.restore(restored.snapshot.data)
        self.observers = Observers(self.coord, lambda: self.raft.leader is not None)
        self.removals = Removals()  # RAFT REMOVE asked here, answered once committed
        self.removing: set[str] = set()  # as the leader: removals to propose until done
        self.counters = {"raft_messages_in": 0, "raft_messages_out": 0,
                         "raft_messages_dropped": 0, "raft_config_changes": 0,
                         "raft_storage_errors": 0, "raft_snapshots": 0}
        self._ticks = 0
        # A Ready whose save failed (disk full, out of descriptors): nothing of it was sent or
        # applied, and the core takes no input until it is done, so it is saved again first,
        # every tick, while the node goes on serving its keyspace.
        self._held: Ready | None = None
        self.error = ""
        self._error_logged = -ERROR_LOG_TICKS
        # Commands this node's clients sent, by (this run, number): each proposal carries its
        # origin and tag, every node applies it, and the origin answers its client then.
        self._run = os.urandom(8)
        self._tags = itertools.count(1)
        self._last_write = 0  # the tag of the last write submitted here
        # Each with its deadline (in ticks) and the leader it went to.
        self.pending: dict[tuple[bytes, int], tuple[Deferred, int, str]] = {}
        # ReadIndex reads, by context (this run + number): this node's clients' reads awaiting
        # the leader's confirmation, then `confirmed` until this node has applied the index;
        # `remote`: the leader's reads asked by followers, by context, to tell the index back.
        # Each read also waits for the writes this node took before it (its barrier: the tag
        # of the last one), so a client that pipelines CSET then CGET reads its own write.
        self.reads: dict[bytes, tuple[Deferred, bytes, int, str, int]] = {}
        self.confirmed: list[tuple[int, bytes]] = []
        self.remote: dict[bytes, str] = {}
        self.now_ms = 0
        self._reported_role: Role | None = None
        self._reported_leader: str | None = None
        self.dirty = True  # the core may have a Ready: set by every input, cleared by drive

    # -- inputs -----------------------------------------------------------------------------

    def receive(self, body: dict) -> None:
        """A peer message body (the cluster checked the sender is a member): a Raft message,
        or a proposal forwarded to us as the leader."""
        self.dirty = True
        proposal = body.get("p")
        if isinstance(proposal, bytes):
            self._propose(proposal)
            return
        if isinstance(body.get("r"), str):  # RAFT REMOVE, forwarded to us as the leader
            self._remove_as_leader(body["r"])
            return
        if "q" in body or "qi" in body:
            self._read_message(body)
            return
        frame = body.get("m")
        if not isinstance(frame, bytes):
            self.counters["raft_messages_dropped"] += 1
            return
        try:
            msg = decode(frame)
        except KvError:
            self.counters["raft_messages_dropped"] += 1
            return
        if self._held is not None:  # cannot take it now; Raft copes with a lost message
            self.counters["raft_messages_dropped"] += 1
            return
        self.counters["raft_messages_in"] += 1
        self.raft.step(msg)

    def tick(self, now_ms: int = 0) -> None:
        self.now_ms = now_ms
        self.dirty = True
        self._ticks += 1
        self._expire_pending()
        self.observers.tick()
        self.removals.expire(self._ticks)
        if self._held is not None:
            return
        self.raft.tick()
        if self.raft.role is Role.LEADER:
            if self._ticks % RECONCILE_TICKS == 0:
                self._reconcile()
            if self._ticks % LEASE_TICKS == 0 and self.coord.leases:
                self._propose(self._internal(("tick", now_ms)))

    # -- coordination commands ----------------------------------------------------------------

    def submit(self, command: tuple) -> Deferred:
        """A client's coordination command: answered once committed and applied here."""
        answer = Deferred()
        self.dirty = True
        if self._held is not None:
            answer.resolve(TryAgain(f"this node cannot save its consensus state ({self.error})"
                                    " — retry on another node"))
            return answer
        packed = msgpack.packb(command, use_bin_type=True)
        if command and command[0] in READS:
            return self._read(packed)
        tag = self._last_write = next(self._tags)
        payload = msgpack.packb([self.me, self._run, tag, packed], use_bin_type=True)
        leader = self.raft.leader
        if self.raft.role is not Role.LEADER and (leader is None or leader == self.me):
            answer.resolve(NoQuorum("no leader is known: the consensus group has no quorum "
                                    "reachable from this node — retry once it has one"))
            return answer
        self.pending[(self._run, tag)] = (answer, self._ticks + ANSWER_TICKS, leader or self.me)
        if self.raft.role is Role.LEADER:
            self._propose(payload)
        elif not self.send(leader, {"p": payload}):  # type: ignore[arg-type]
            self.pending.pop((self._run, tag))
            answer.resolve(NoQuorum(f"the leader {leader} is not reachable from this node"))
        return answer

    def _read(self, command: bytes) -> Deferred:
        """A read: confirmed by the leader (ReadIndex), then served here once applied."""
        answer = Deferred()
        leader = self.raft.leader
        if self.raft.role is not Role.LEADER and (leader is None or leader == self.me):
            answer.resolve(NoQuorum("no leader is known: the consensus group has no quorum "
                                    "reachable from this node — retry once it has one"))
            return answer
        if len(self.reads) >= MAX_READS:
            answer.resolve(TryAgain(f"{MAX_READS} reads already await the consensus group "
                                    "on this node — retry shortly"))
            return answer
        ctx = self._run + next(self._tags).to_bytes(8, "big")
        self.reads[ctx] = (answer, command, self._ticks + ANSWER_TICKS, leader or self.me,
                           self._last_write)
        if self.raft.role is Role.LEADER:
            with contextlib.suppress(NotLeader):  # unconfirmed: TRYAGAIN at the timeout
                self.raft.read_index(ctx)
        elif not self.send(leader, {"q": [self.me, ctx]}):  # type: ignore[arg-type]
            self.reads.pop(ctx)
            answer.resolve(NoQuorum(f"the leader {leader} is not reachable from this node"))
        return answer

    def _read_message(self, body: dict) -> None:
        """A follower's read for us to confirm as the leader ({"q": [origin, ctx]}), or the
        leader's confirmation of one of ours ({"qi": [ctx, index]})."""
        asked, told = body.get("q"), body.get("qi")
        if isinstance(asked, list) and len(asked) == 2 and isinstance(asked[0], str) \
                and isinstance(asked[1], bytes) and len(asked[1]) <= 64:
            if self.raft.role is not Role.LEADER or len(self.remote) >= MAX_READS \
                    or self._held is not None:
                self.counters["raft_messages_dropped"] += 1  # the asker times out: TRYAGAIN
                return
            self.remote[asked[1]] = asked[0]
            with contextlib.suppress(NotLeader):
                self.raft.read_index(asked[1])
        elif isinstance(told, list) and len(told) == 2 and isinstance(told[0], bytes) \
                and type(told[1]) is int and told[0] in self.reads:
            self.confirmed.append((told[1], told[0]))
        else:
            self.counters["raft_messages_dropped"] += 1

    def _serve_reads(self, applied: int | None = None) -> None:
        """Answer the confirmed reads whose index this node has applied (`applied`: so far,
        in the middle of a Ready), once the writes submitted here before them are answered
        (applied, or given up on). Called before each of this node's own writes applies too,
        so a read sees exactly the writes its node took before it, none taken after: a
        pipeline or BATCH of CGET, CAS, CGET reads as if run one by one."""
        applied = self.raft.log.applied if applied is None else applied
        oldest = min((tag for _, tag in self.pending), default=0)
        waiting = []
        for index, ctx in self.confirmed:
            read = self.reads.get(ctx)
            if index > applied or (read is not None and oldest and oldest <= read[4]):
                waiting.append((index, ctx))
                continue
            found = self.reads.pop(ctx, None)
            if found is not None:
                found[0].resolve(_reply(self.coord.read(found[1])))
        self.confirmed = waiting

    def _internal(self, command: tuple) -> bytes:
        return msgpack.packb(["", b"", 0, msgpack.packb(command, use_bin_type=True)],
                             use_bin_type=True)

    def _propose(self, payload: bytes) -> None:
        if self._held is not None:
            return
        # Refused (not the leader any more): the origin's pending answer times out (TRYAGAIN).
        with contextlib.suppress(NotLeader, ProposalDropped):
            self.raft.propose(payload)

    def _leader_changed(self, leader: str | None) -> None:
        """What was in flight under an old leader may be lost (a forward to a leader that
        died is never answered): say so now rather than at the timeout. It may also still
        commit — which TRYAGAIN allows for — and is then applied, unanswered. What went to
        the new leader stays: the core learns of a leader from a message, and a command can
        be sent to it before this report of the change comes out of the next Ready."""
        gone = [key for key, (_, _, to) in self.pending.items() if to != leader]
        for key in gone:
            answer, _, _ = self.pending.pop(key)
            answer.resolve(TryAgain("the consensus group's leader changed while this command "
                                    "was in flight: it may or may not have applied — read, "
                                    "then retry"))
        if self.raft.role is not Role.LEADER:
            self.remote.clear()  # our reads' rounds are over: we will never confirm them
        confirmed = {ctx for _, ctx in self.confirmed}
        for ctx in [c for c, (_, _, _, to, _) in self.reads.items()
                    if to != leader and c not in confirmed]:
            self.reads.pop(ctx)[0].resolve(TryAgain(
                "the consensus group's leader changed before this read was confirmed — retry"))

    def _expire_pending(self) -> None:
        late = [k for k, (_, deadline, _) in self.pending.items() if deadline <= self._ticks]
        for key in late:
            answer, _, _ = self.pending.pop(key)
            answer.resolve(TryAgain("no answer from the consensus group within "
                                    f"{ANSWER_TICKS / 10:g} s (the leader may have changed): "
                                    "the command may or may not have applied — read, then "
                                    "retry"))
        for ctx in [c for c, (_, _, deadline, _, _) in self.reads.items()
                    if deadline <= self._ticks]:
            self.reads.pop(ctx)[0].resolve(TryAgain(
                f"the consensus group did not confirm this read within {ANSWER_TICKS / 10:g} s"
                " — retry"))
        if self.confirmed and len(self.confirmed) > len(self.reads):
            self.confirmed = [(i, c) for i, c in self.confirmed if c in self.reads]

    def _apply(self, index: int, data: bytes) -> None:
        try:
            origin, run, tag, command = msgpack.unpackb(data, raw=False)
        except Exception:  # noqa: BLE001 - an entry we cannot read still uses its index
            return
        if not isinstance(command, bytes):
            return
        mine = origin == self.me and run == self._run
        if mine and self.confirmed:  # reads asked before this write see the state before it
            self._serve_reads(index - 1)
        result = self.coord.apply(index, command)
        if mine:
            found = self.pending.pop((run, tag), None)
            if found is not None:
                found[0].resolve(_reply(result))

    def stop(self) -> None:
        """Graceful stop: a leader hands leadership to the most caught-up voter first."""
        self.dirty = True
        others = sorted(self.raft.config.voters - {self.me})
        if self.raft.role is Role.LEADER and others:
            try:
                self.raft.transfer_leadership(others[0])
            except (NotLeader, ConfigRefused):
                return
            self.drive()

    # -- the Ready loop ---------------------------------------------------------------------

    def drive(self) -> None:
        """Work the core's Readys off. Called after every turn of the loop: a turn that gave
        the group nothing (no Raft message, command or tick: `dirty` unset) costs one check."""
        if not self.dirty:
            return
        self.dirty = False
        raft = self.raft
        if self._held is not None:
            rd = self._held
            if not self._save(rd):
                return
            self._held = None
            self._finish(rd)
        while raft.has_ready():
            rd = raft.ready()
            if rd.send_first:  # a leader's replication: followers write while we do
                self._send(rd)
            if not self._save(rd):  # fsync, then send (unless send_first said otherwise)
                return
            self._finish(rd)
        if self.confirmed:
            self._serve_reads()

    def _save(self, rd: Ready) -> bool:
        try:
            self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        except OSError as exc:
            self._held = rd
            self.counters["raft_storage_errors"] += 1
            self.error = f"{exc.strerror or exc} ({getattr(exc, 'filename', '') or 'raft'})"
            if self._ticks - self._error_logged >= ERROR_LOG_TICKS:
                self._error_logged = self._ticks
                log.error("cannot save the consensus state: %s — this node takes no part in "
                          "the consensus group until it can (retried every tick); the "
                          "keyspace is served as usual", self.error)
            return False
        if self.error:
            log.info("the consensus state saves again")
            self.error = ""
        return True

    def _send(self, rd: Ready) -> None:
        for msg in rd.messages:
            if self.send(msg.dst, {"m": encode(msg)}):
                self.counters["raft_messages_out"] += 1
            else:
                self.counters["raft_messages_dropped"] += 1
        rd.messages = []  # a held Ready saved again later must not send them twice

    def _finish(self, rd: Ready) -> None:
        """Send, apply, advance: what follows a Ready's save."""
        raft = self.raft
        if not rd.send_first:
            self._send(rd)
        if rd.snapshot is not None and rd.snapshot.data:
            self.coord.restore(rd.snapshot.data)
        # confirmed reads first: one of ours may be due before a later write of ours applies
        for state in rd.read_states:
            origin = self.remote.pop(state.ctx, None)
            if origin is not None:
                self.send(origin, {"qi": [state.ctx, state.index]})
            elif state.ctx in self.reads:
                self.confirmed.append((state.index, state.ctx))
        for entry in rd.committed:
            if entry.kind is EntryKind.NORMAL and entry.data:
                self._apply(entry.index, entry.data)
            elif entry.kind is EntryKind.CONFIG:
                self.counters["raft_config_changes"] += 1
                log.info("consensus membership now: voters %s, learners %s",
                         sorted(raft.config.voters), sorted(raft.config.learners))
        self.observers.wake()  # OBSERVE waiters, answered once this node has applied
        if self.removals.pending:
            self.removals.settled(raft.config)
        became_leader = rd.soft_state is not None and rd.soft_state.role is Role.LEADER \
            and self._reported_role is not Role.LEADER
        if rd.soft_state is not None:
            self._reported_role = rd.soft_state.role
            if rd.soft_state.leader != self._reported_leader:
                self._reported_leader = rd.soft_state.leader
                self._leader_changed(rd.soft_state.leader)
        if rd.soft_state is not None:
            log.info("consensus: %s is %s in term %d (leader %s)", self.me,
                     rd.soft_state.role.value, raft.term, rd.soft_state.leader or "unknown")
        raft.advance()
        self._maybe_snapshot()
        if became_leader:  # leases get a full ttl on our clock first (kvd.raft.coord)
            self._propose(self._internal(("promote", self.now_ms)))

    def _maybe_snapshot(self) -> None:
        """Every SNAPSHOT_EVERY applied entries, the state machine's image replaces the log
        before it (memory and disk stay bounded; a far-behind follower gets the image)."""
        applied = self.raft.log.applied
        if applied - self.storage.snapshot.index < SNAPSHOT_EVERY:
            return
        snapshot = self.raft.snapshot(applied, self.coord.snapshot())
        try:
            self.storage.compact(snapshot)
        except OSError as exc:  # the old log is still whole: retried at the next entries
            log.error("cannot write the consensus snapshot: %s", exc)
            return
        self.counters["raft_snapshots"] += 1

    def _reconcile(self) -> None:
        """One membership change toward: every alive member in, voters up to MAX_VOTERS,
        members that left or that an operator removed out. Only members that are alive are
        added or promoted: a dead one would only count toward the quorum size, and one an
        operator removed stays out until it is alive again (kvd.raft.removals)."""
        config = self.raft.config
        statuses = dict(self.members())
        live = {name for name, status in statuses.items() if status == "alive"}
        left = {name for name, status in statuses.items() if status == "left"}
        self.removing &= config.members
        self.removing -= live
        change = None
        for name in sorted((config.members & left | self.removing) - {self.me}):
            change = ConfChange(ConfOp.REMOVE, name)
            break
        if change is None:
            for name in sorted(live - config.members):
                change = ConfChange(ConfOp.ADD_LEARNER, name)
                break
        if change is None and len(config.voters) < MAX_VOTERS:
            for name in sorted(config.learners & live):
                change = ConfChange(ConfOp.PROMOTE, name)
                break
        if change is None:
            return
        try:
            self.raft.propose_config(change)
        except (ConfigRefused, NotLeader) as exc:
            log.debug("membership change %s %s not proposed: %s", change.op.name, change.node,
                      exc)

    # -- operators (RAFT REMOVE, RAFT INIT) ---------------------------------------------------

    def operate(self, command: tuple) -> object:
        """An operator's command: ("remove", name) answers once the change commits (a
        Deferred); ("init",) founds a group of one on a node that has none."""
        self.dirty = True
        if command[0] == "init":
            return self._found()
        return self._remove(command[1])

    def _remove(self, name: str) -> object:
        raft = self.raft
        why = removal_refusal(raft.config, raft.leader, name, dict(self.members()).get(name))
        if why:
            raise MembershipRefused(why)
        if raft.role is not Role.LEADER and raft.leader in (None, self.me):
            raise NoQuorum("no leader is known: the consensus group has no quorum reachable "
                           "from this node — retry once it has one")
        if raft.role is Role.LEADER:
            self._remove_as_leader(name)
        elif not self.send(raft.leader, {"r": name}):  # type: ignore[arg-type]
            raise NoQuorum(f"the leader {raft.leader} is not reachable from this node")
        return self.removals.wait(name, self._ticks + ANSWER_TICKS)

    def _remove_as_leader(self, name: str) -> None:
        """Proposed now, and again by the reconciler until it commits (a change in flight
        makes the core refuse another one for a moment)."""
        raft = self.raft
        if raft.role is not Role.LEADER or removal_refusal(
                raft.config, raft.leader, name, dict(self.members()).get(name)):
            return
        self.removing.add(name)
        log.info("an operator removes %s from the consensus group", name)
        with contextlib.suppress(ConfigRefused, NotLeader, ProposalDropped):
            raft.propose_config(ConfChange(ConfOp.REMOVE, name))

    def _found(self) -> dict:
        """RAFT INIT: the upgrade path for a cluster that predates the group (its nodes know
        members, so none founded one at start). The operator checked that no member has a
        group (kvd raft init does); this node checks that it has no Raft state itself."""
        raft = self.raft
        why = init_refusal(raft.config, raft.term, raft.leader)
        if why or self.storage.snapshot.index or self.storage.entries:
            raise MembershipRefused(why or "this node has Raft state already — nothing to init")
        self.storage.bootstrap(Config.of([self.me]))
        self.raft = Raft(self.me, self.storage.load(), self._rng, Options(max_voters=MAX_VOTERS))
        log.info("founded a consensus group of one (%s) on an operator's RAFT INIT; the other "
                 "members join it as its leader adds them", self.me)
        return {"founded": self.me}

    @property
    def has_group(self) -> bool:
        """Whether this node has any Raft state (a configuration it belongs to)."""
        return bool(self.raft.config.members or self.raft.term)

    # -- what it shows ----------------------------------------------------------------------

    def role_of(self, name: str) -> str:
        config = self.raft.config
        if name == self.raft.leader:
            return "leader"
        return "voter" if name in config.voters else "learner" if name in config.learners \
            else ""

    def info(self) -> dict:
        raft = self.raft
        return {
            "raft_role": raft.role.value,
            "raft_term": raft.term,
            "raft_leader": raft.leader or "",
            "raft_commit": raft.log.committed,
            "raft_applied": raft.log.applied,
            "raft_voters": ",".join(sorted(raft.config.voters)),
            "raft_learners": ",".join(sorted(raft.config.learners)),
            "raft_error": self.error,
            **self.counters,
        }


READS = frozenset(op for op, spec in OPS.items() if not spec.writes)


def _reply(result: dict) -> object:
    """A state machine result as a reply: its fields, or an error with its code."""
    if result.get("ok"):
        return {k: v for k, v in result.items() if k != "ok"}
    code = str(result.get("error", "ERR"))
    details = ", ".join(f"{k} {v!r}" for k, v in result.items()
                        if k not in ("ok", "error", "message"))
    message = str(result.get("message", code)) + (f" ({details})" if details else "")
    error = KvError(message)
    error.code = code
    error.details = {k: v for k, v in result.items() if k not in ("ok", "error", "message")}
    return error
