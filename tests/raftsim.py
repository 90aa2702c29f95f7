"""Raft cores in an in-memory network (tests/raftnode.py has the nodes and the checker).

Two drivers:

- `Net`: synchronous delivery, for unit tests (etcd's raft_test network): deliver until
  quiet, with isolated nodes, cut links and a `drop` predicate for finer surgery.
- `Sim`: time in ms, a tick every TICK_MS per node, messages through the real codec with
  seeded loss, duplication, delay (hence reordering) and directed cuts (so partitions can be
  symmetric or not). `chaos(seed)` runs a random schedule of partitions, crashes, restarts,
  leader transfers, membership changes, snapshots, client writes and ReadIndex reads, then
  heals everything and checks that a leader is elected and a write commits in bounded time.

The checker looks after every event (election safety, log matching, leader completeness,
state machine safety, durability of votes and acknowledgements, fresh reads).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from kvd.raft.config import ConfChange, ConfOp
from kvd.raft.core import Options, Raft, Role
from kvd.raft.errors import ConfigRefused, NotLeader, ProposalDropped
from kvd.raft.messages import Message, decode, encode
from kvd.raft.storage import Restored
from tests.raftnode import Checker, Node, StateMachine, Violation, check_log, make_nodes

__all__ = ["Faults", "Net", "Sim", "Violation", "chaos", "draw", "nemesis"]

TICK_MS = 10


# -- synchronous network, for unit tests ----------------------------------------------------


class Net:
    def __init__(self, names: list[str], voters: list[str] | None = None,
                 learners: tuple[str, ...] = (), opts: Options | None = None,
                 seed: int = 0, states: dict[str, Restored] | None = None) -> None:
        """`states` replaces what named nodes start from (crafted logs for a scenario)."""
        self.opts = opts or Options()
        self.checker = Checker()
        self.nodes = make_nodes(names, voters or names, seed, self.opts, learners)
        for name, state in (states or {}).items():
            st = self.nodes[name].storage
            st.hard_state, st.snapshot, st.entries = state.hard_state, state.snapshot, \
                list(state.entries)
        self.queue: list[Message] = []
        self.cut: set[tuple[str, str]] = set()  # (src, dst): dropped
        self.drop: Callable[[Message], bool] = lambda m: False  # more selective than `cut`
        self.dropped: list[Message] = []
        self.delivered: list[Message] = []
        for node in self.nodes.values():
            node.start(self.checker)

    def raft(self, name: str) -> Raft:
        raft = self.nodes[name].raft
        assert raft is not None, f"{name} is down"
        return raft

    def flush(self, name: str) -> None:
        self.queue.extend(self.nodes[name].handle(self.checker))
        self.checker.observe(list(self.nodes.values()))

    def tick(self, name: str, n: int = 1) -> None:
        for _ in range(n):
            self.raft(name).tick()
            self.flush(name)

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for name, node in self.nodes.items():
                if node.up:
                    self.tick(name)
            self.deliver()

    def deliver(self, limit: int = 100_000) -> None:
        """Deliver until no message is left (through the codec, as on the wire)."""
        for _ in range(limit):
            if not self.queue:
                return
            m = self.queue.pop(0)
            node = self.nodes.get(m.dst)
            if (m.src, m.dst) in self.cut or node is None or not node.up or self.drop(m):
                self.dropped.append(m)
                continue
            self.delivered.append(m)
            self.raft(m.dst).step(decode(encode(m)))
            self.flush(m.dst)
        raise AssertionError("messages never stopped")

    def isolate(self, name: str) -> None:
        for other in self.nodes:
            if other != name:
                self.cut |= {(name, other), (other, name)}

    def heal(self) -> None:
        self.cut.clear()

    def elect(self, name: str) -> Raft:
        self.raft(name).campaign()
        self.flush(name)
        self.deliver()
        raft = self.raft(name)
        assert raft.role is Role.LEADER, f"{name} is {raft.role}"
        return raft

    def leader(self) -> str | None:
        leaders = [(n.raft.term, name) for name, n in self.nodes.items()
                   if n.raft is not None and n.raft.role is Role.LEADER]
        return max(leaders)[1] if leaders else None

    def propose(self, name: str, data: bytes) -> int:
        index = self.raft(name).propose(data)
        self.flush(name)
        self.deliver()
        return index

    def crash(self, name: str) -> None:
        self.nodes[name].crash()

    def restart(self, name: str) -> None:
        self.nodes[name].start(self.checker)
        self.flush(name)


# -- time-based chaos -----------------------------------------------------------------------


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    delay_ms: tuple[int, int] = (1, 5)  # uniform; a spread wider than a tick reorders
    cut: set[tuple[str, str]] = field(default_factory=set)  # (src, dst) that cannot deliver
    crash_mid_ready: float = 0.0  # chance per Ready of a crash between persist and send
    crash_in_save: float = 0.0  # chance per Ready of a crash inside the save (file storage)


class Sim:
    def __init__(self, seed: int, voters: int = 3, spares: int = 0,
                 opts: Options | None = None, faults: Faults | None = None,
                 files: bool = False,
                 machine: Callable[[], StateMachine] = StateMachine) -> None:
        self.rng = random.Random(seed)
        self.opts = opts or Options()
        self.faults = faults or Faults()
        self.checker = Checker()
        names = [f"n{k}" for k in range(1, voters + spares + 1)]
        self.nodes = make_nodes(names, names[:voters], seed, self.opts, files=files,
                                machine=machine)
        self.now = 0
        self.queue: list[tuple[int, int, str, str, bytes]] = []
        self._n = itertools.count()
        self.stats: Counter[str] = Counter()
        self.hint: str | None = None  # the clients' idea of who leads
        self.proposed: list[bytes] = []
        self.reboots: list[tuple[int, str]] = []  # (at ms, node): crashed, coming back
        for node in self.nodes.values():
            node.start(self.checker)

    # -- the wire ---------------------------------------------------------------------------

    def _send(self, msgs: list[Message]) -> None:
        f, rng = self.faults, self.rng
        for m in msgs:
            if (m.src, m.dst) in f.cut or rng.random() < f.drop:
                self.stats["dropped"] += 1
                continue
            frame = encode(m)
            for _ in range(2 if rng.random() < f.duplicate else 1):
                at = self.now + rng.randint(*f.delay_ms)
                heapq.heappush(self.queue, (at, next(self._n), m.src, m.dst, frame))

    def _handle(self, node: Node) -> None:
        crash = self.rng.random() < self.faults.crash_mid_ready
        torn = self.rng.random() < self.faults.crash_in_save
        self._send(node.handle(self.checker, crash_after_persist=crash, crash_in_save=torn))
        if (crash or torn) and not node.up:
            self.stats["crashes in a save" if torn else "crashes mid-ready"] += 1
            self.reboot_later(node.name)
        self.checker.observe([node])  # only its state changed (all are looked at every tick)

    def _deliver(self, src: str, dst: str, frame: bytes) -> None:
        node = self.nodes[dst]
        if node.raft is None or (src, dst) in self.faults.cut:
            self.stats["dropped"] += 1
            return
        self.stats["delivered"] += 1
        node.raft.step(decode(frame))
        self._handle(node)

    # -- time -------------------------------------------------------------------------------

    def tick(self) -> None:
        end = self.now + TICK_MS
        while self.queue and self.queue[0][0] < end:
            at, _, src, dst, frame = heapq.heappop(self.queue)
            self.now = max(self.now, at)
            self._deliver(src, dst, frame)
        self.now = end
        while self.reboots and self.reboots[0][0] <= self.now:
            self.restart(heapq.heappop(self.reboots)[1])
        for node in self.nodes.values():
            if node.raft is not None:
                node.raft.tick()
                self._handle(node)
        self.checker.observe(list(self.nodes.values()))
        self.stats["ticks"] += 1

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick()

    # -- what clients and operators do -------------------------------------------------------

    def leader(self) -> Node | None:
        leaders = [n for n in self.nodes.values() if n.raft is not None and n.raft.leading]
        return max(leaders, key=lambda n: n.raft.term) if leaders else None  # type: ignore

    def propose(self, data: bytes) -> bool:
        """A client write, sent where it believes the leader is; False if refused there."""
        name = self.hint or self.rng.choice(sorted(self.nodes))
        if self.nodes[name].raft is None:
            self.hint = None
            return False
        try:
            self.propose_at(name, data)
        except NotLeader as e:
            self.hint = e.leader
            return False
        except ProposalDropped:
            return False
        return True

    def propose_at(self, name: str, data: bytes) -> tuple[int, int]:
        """Propose at one node (up); its (index, term), or NotLeader/ProposalDropped."""
        raft = self.nodes[name].raft
        assert raft is not None, f"{name} is down"
        index = raft.propose(data)
        self.proposed.append(data)
        self.stats["proposals"] += 1
        self._handle(self.nodes[name])
        return index, raft.term

    def read(self) -> None:
        node = self.leader()
        if node is None or node.raft is None:
            return
        ctx = b"read-%d" % next(self._n)
        self.checker.read_asked(ctx)
        node.raft.read_index(ctx)
        self.stats["reads asked"] += 1
        self._handle(node)

    def crash(self, name: str) -> None:
        self.reboots = [(at, n) for at, n in self.reboots if n != name]  # a crash supersedes
        heapq.heapify(self.reboots)
        if self.nodes[name].up:
            self.nodes[name].crash()
            self.stats["crashes"] += 1

    def reboot_later(self, name: str) -> None:
        """Crashed: back within a few ticks, often still in the middle of what it was doing
        (a vote, a replication round), which is where lost writes and double votes hide."""
        self.crash(name)
        heapq.heappush(self.reboots, (self.now + TICK_MS * self.rng.randint(0, 6), name))

    def restart(self, name: str) -> None:
        node = self.nodes[name]
        if not node.up:
            node.start(self.checker)
            self.stats["restarts"] += 1
            self._handle(node)

    def partition(self, *groups: set[str]) -> None:
        """Symmetric: no message crosses between groups."""
        for a, b in itertools.permutations(range(len(groups)), 2):
            self.faults.cut |= {(x, y) for x in groups[a] for y in groups[b]}
        self.stats["partitions"] += 1

    def cut_one_way(self, src: str, dst: str) -> None:
        self.faults.cut.add((src, dst))
        self.stats["one-way cuts"] += 1

    def change(self, change: ConfChange) -> bool:
        node = self.leader()
        if node is None or node.raft is None:
            return False
        try:
            node.raft.propose_config(change)
        except (ConfigRefused, ProposalDropped):
            return False
        self.stats[f"config {change.op.name.lower()}"] += 1
        self._handle(node)
        return True

    def transfer(self, to: str) -> None:
        node = self.leader()
        if node is None or node.raft is None or to not in node.raft.config.voters:
            return
        node.raft.transfer_leadership(to)
        self.stats["transfers"] += 1
        self._handle(node)

    def compact(self, name: str) -> None:
        if self.nodes[name].compact() is not None:
            self.stats["snapshots"] += 1

    def heal(self) -> None:
        self.faults = Faults()
        self.reboots.clear()
        for name in self.nodes:
            self.restart(name)

    # -- checks -----------------------------------------------------------------------------

    def wait_for(self, done: object, ticks: int) -> int | None:
        """Ticks until `done()` holds, or None if it did not within `ticks`."""
        for k in range(ticks + 1):
            if done():  # type: ignore[operator]
                return k
            self.tick()
        return None

    def members(self) -> list[Node] | None:
        """The members in the leader's configuration (None while there is no leader)."""
        node = self.leader()
        if node is None or node.raft is None:
            return None
        return [self.nodes[n] for n in sorted(node.raft.config.members)]

    def settle(self, bound: int) -> tuple[int, int]:
        """After heal: a leader within `bound` ticks, then a write applied by every member
        within `bound` more. Returns both tick counts."""
        elected = self.wait_for(lambda: self.leader() is not None, bound)
        if elected is None:
            raise Violation(f"no leader {bound} ticks after healing")
        marker = b"marker-%d" % next(self._n)
        sent_at: list[int] = []

        def committed() -> bool:
            # a client that retries: the write may be lost with a leader that steps down
            retry = not sent_at or self.now - sent_at[-1] >= 2 * self.opts.election_ticks * TICK_MS
            leader = self.leader()
            if marker not in self.checker.applied_data and retry and leader is not None:
                self.hint = leader.name
                if self.propose(marker):
                    sent_at.append(self.now)
            members = self.members()
            return members is not None and marker in self.checker.applied_data and all(
                n.up and n.sm.index >= self.checker.max_committed for n in members)

        took = self.wait_for(committed, bound)
        if took is None:
            raise Violation(f"a write did not commit {bound} ticks after a leader was elected")
        for n in self.nodes.values():
            if n.raft is not None:
                check_log(n.raft)
        return elected, took


def chaos(seed: int, voters: int = 3, spares: int = 1, ticks: int = 300,
          settle_bound: int = 400, files: bool = False) -> Sim:
    """One random schedule: faults for `ticks` ticks, then heal and check liveness. With
    `files`, nodes keep their state in FileStorage over FakeFiles and may crash mid-save."""
    rng = random.Random(seed)
    faults, opts = draw(rng, files)
    sim = Sim(seed, voters, spares, opts=opts, faults=faults, files=files)
    names = sorted(sim.nodes)
    rate = rng.uniform(0.02, 0.2)  # chance per tick of an operator/nemesis action
    for k in range(ticks):
        if rng.random() < 0.5:
            sim.propose(b"w-%d-%d" % (seed, k))
        if rng.random() < 0.05:
            sim.read()
        if rng.random() < rate:
            nemesis(sim, rng, names)
        sim.tick()
    sim.heal()
    sim.stats["settle ticks"] = sum(sim.settle(settle_bound))
    return sim


def draw(rng: random.Random, files: bool = False) -> tuple[Faults, Options]:
    """A schedule's fault mix and core options, drawn from its random stream."""
    faults = Faults(drop=rng.choice([0.0, 0.02, 0.1, 0.25]),
                    duplicate=rng.choice([0.0, 0.05, 0.2]),
                    delay_ms=(1, rng.choice([3, 10, 30, 60])),
                    crash_mid_ready=rng.choice([0.0, 0.003, 0.01]),
                    crash_in_save=rng.choice([0.003, 0.01]) if files else 0.0)
    # Small messages and windows split what one AppendEntries would carry, which is where
    # counting an earlier term's entry (Figure 8) or a stale acknowledgement would show.
    opts = Options(max_entries_per_msg=rng.choice([1, 2, 256]),
                   max_inflight=rng.choice([1, 4, 64]),
                   heartbeat_ticks=rng.choice([1, 1, 3]),
                   pre_vote=rng.random() < 0.8, check_quorum=rng.random() < 0.8)
    return faults, opts


def nemesis(sim: Sim, rng: random.Random, names: list[str]) -> None:
    action = rng.choice(["partition", "one-way", "heal-net", "crash", "restart", "reboot",
                         "reboot-leader", "transfer", "config", "compact", "compact"])
    if action == "partition":
        shuffled = rng.sample(names, len(names))
        cut = rng.randint(1, len(names) - 1)
        sim.faults.cut.clear()
        sim.partition(set(shuffled[:cut]), set(shuffled[cut:]))
    elif action == "one-way":
        src, dst = rng.sample(names, 2)
        sim.cut_one_way(src, dst)
    elif action == "heal-net":
        sim.faults.cut.clear()
    elif action == "crash":
        sim.crash(rng.choice(names))
    elif action == "restart":
        sim.restart(rng.choice(names))
    elif action == "reboot":
        sim.reboot_later(rng.choice(names))
    elif action == "reboot-leader":
        leader = sim.leader()
        if leader is not None:
            sim.reboot_later(leader.name)
    elif action == "transfer":
        sim.transfer(rng.choice(names))
    elif action == "compact":
        sim.compact(rng.choice(names))
    else:
        _config_change(sim, rng, names)


def _config_change(sim: Sim, rng: random.Random, names: list[str]) -> None:
    leader = sim.leader()
    if leader is None or leader.raft is None:
        return
    config = leader.raft.config
    outside = [n for n in names if n not in config.members]
    options = [ConfChange(ConfOp.ADD_LEARNER, n) for n in outside]
    options += [ConfChange(ConfOp.PROMOTE, n) for n in sorted(config.learners)]
    options += [ConfChange(ConfOp.ADD_VOTER, n) for n in outside]
    if len(config.voters) > 2:
        options += [ConfChange(ConfOp.REMOVE, n) for n in sorted(config.voters)]
    options += [ConfChange(ConfOp.REMOVE, n) for n in sorted(config.learners)]
    if options:
        sim.change(rng.choice(options))
