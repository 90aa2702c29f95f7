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
(through the leader: a follower forwards them as {"p": ...}) and answered by the node the
client asked, once it has applied them. Reads (CGET, LEADER, LEASE TTL) take no log entry:
they are ReadIndex reads (why ReadIndex rather than a leader lease: kvd.raft.core). The
leader confirms it still leads — one heartbeat round for all the reads of a turn — and names
its commit index; a follower asks the leader for it ({"q": [origin, ctx]} out, {"qi": [ctx,
index]} back). The read is served from the node's own state machine once it has applied that
index: it sees every write that committed before it was asked, and costs no fsync anywhere.
kvd.raft.requests keeps the books of both until they are answered. OBSERVE's waiters
(kvd.raft.observers) are woken after every Ready's entries are applied, on every node.
"""

from __future__ import annotations

import contextlib
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
from kvd.raft.requests import MAX_READS, Requests
from kvd.state.context import Deferred
from shared.errors import KvError, MembershipRefused, NoQuorum, TryAgain

log = logging.getLogger("kvd.consensus")

MAX_VOTERS = 5
RECONCILE_TICKS = 10  # the leader looks at the membership once a second
ERROR_LOG_TICKS = 100  # a failing raft storage is logged at most every 10 s
ANSWER_TICKS = 50  # a coordination command unanswered after 5 s gets TRYAGAIN
LEASE_TICKS = 5  # the leader proposes TICK (lease expiry) every 0.5 s, while leases exist
SNAPSHOT_EVERY = 10_000  # applied entries between snapshots: the raft log stays bounded


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
        # This node's clients' commands until answered (kvd.raft.requests): each proposal
        # carries its origin and tag, every node applies it, and the origin answers then.
        self.requests = Requests(os.urandom(8), ANSWER_TICKS)
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
        self.requests.tick()
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
        leader = self.raft.leader
        if self.raft.role is not Role.LEADER and (leader is None or leader == self.me):
            answer.resolve(NoQuorum("no leader is known: the consensus group has no quorum "
                                    "reachable from this node — retry once it has one"))
            return answer
        leader = leader or self.me
        if command and command[0] in READS:
            return self._read(answer, packed, leader)
        requests = self.requests
        tag = requests.write(answer, leader)
        payload = msgpack.packb([self.me, requests.run, tag, packed], use_bin_type=True)
        if self.raft.role is Role.LEADER:
            self._propose(payload)
        elif not self.send(leader, {"p": payload}):
            requests.forget_write(tag)
            answer.resolve(NoQuorum(f"the leader {leader} is not reachable from this node"))
        return answer

    def _read(self, answer: Deferred, command: bytes, leader: str) -> Deferred:
        """A read: confirmed by the leader (ReadIndex), then served here once applied."""
        ctx = self.requests.read(answer, command, leader)
        if ctx is None:
            answer.resolve(TryAgain(f"{MAX_READS} reads already await the consensus group "
                                    "on this node — retry shortly"))
        elif self.raft.role is Role.LEADER:
            with contextlib.suppress(NotLeader):  # unconfirmed: TRYAGAIN at the deadline
                self.raft.read_index(ctx)
        elif not self.send(leader, {"q": [self.me, ctx]}):
            self.requests.forget_read(ctx)
            answer.resolve(NoQuorum(f"the leader {leader} is not reachable from this node"))
        return answer

    def _read_message(self, body: dict) -> None:
        """A follower's read for us to confirm as the leader ({"q": [origin, ctx]}), or the
        leader's confirmation of one of ours ({"qi": [ctx, index]})."""
        asked, told = body.get("q"), body.get("qi")
        if isinstance(asked, list) and len(asked) == 2 and isinstance(asked[0], str) \
                and isinstance(asked[1], bytes) and len(asked[1]) <= 64:
            if self.raft.role is not Role.LEADER or self._held is not None \
                    or not self.requests.asked(asked[1], asked[0]):
                self.counters["raft_messages_dropped"] += 1  # the asker times out: TRYAGAIN
                return
            with contextlib.suppress(NotLeader):
                self.raft.read_index(asked[1])
        elif isinstance(told, list) and len(told) == 2 and isinstance(told[0], bytes) \
                and type(told[1]) is int and told[0] in self.requests.reads:
            self.requests.confirm(told[0], told[1])
        else:
            self.counters["raft_messages_dropped"] += 1

    def _internal(self, command: tuple) -> bytes:
        return msgpack.packb(["", b"", 0, msgpack.packb(command, use_bin_type=True)],
                             use_bin_type=True)

    def _propose(self, payload: bytes) -> None:
        if self._held is not None:
            return
        # Refused (not the leader any more): the origin's pending answer times out (TRYAGAIN).
        with contextlib.suppress(NotLeader, ProposalDropped):
            self.raft.propose(payload)

    def _apply(self, index: int, data: bytes) -> None:
        try:
            origin, run, tag, command = msgpack.unpackb(data, raw=False)
        except Exception:  # noqa: BLE001 - an entry we cannot read still uses its index
            return
        if not isinstance(command, bytes):
            return
        mine = origin == self.me and self.requests.applying(run, index, self.coord.read)
        result = self.coord.apply(index, command)
        if mine:
            self.requests.applied(tag, result)

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
        if self.requests.confirmed:
            self.requests.serve(self.raft.log.applied, self.coord.read)

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
            origin = self.requests.confirm(state.ctx, state.index)
            if origin is not None:
                self.send(origin, {"qi": [state.ctx, state.index]})
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
                self.requests.leader_changed(rd.soft_state.leader,
                                             rd.soft_state.role is Role.LEADER)
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
