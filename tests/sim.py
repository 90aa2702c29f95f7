"""An in-memory network of kvd cluster cores with a fake clock (memberlist's MockNetwork).

Every message goes through the real codec (bytes on the "wire") and can be dropped,
duplicated, delayed (hence reordered) or cut by a partition. Time moves only when the test
says so; nothing sleeps. Each node may run its wall clock `skew_ms` off the network's time:
its core, its hybrid clock and its expiry all read its own clock, as a skewed host's would.
What the socket layer does in kvd.loop/kvd.cluster.peers, `SimNet` does here: deliver, commit
the node's changes, publish what the core returns.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field

from kvd.cluster.cluster import Cluster
from kvd.cluster.peerwire import Dest, Out
from kvd.cluster.settings import Settings
from kvd.state.context import Context
from kvd.state.hlc import HybridClock
from kvd.state.node import Node
from kvd.state.store import Entry
from shared import codec

START_MS = 1_700_000_000_000


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    delay_ms: tuple[int, int] = (1, 5)  # uniform; spread means reordering
    cut: set[frozenset[str]] = field(default_factory=set)  # pairs that cannot talk

    def blocks(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.cut


class SimNode:
    def __init__(self, net: SimNet, name: str, seeds: list[str], skew_ms: int,
                 settings: Settings, seq: int = 0) -> None:
        self.name = name
        self.net = net
        self.skew_ms = skew_ms
        self.node = Node(name, f"{name}:1", clock=HybridClock(self.wall),
                         monotonic=lambda: net.now / 1000)
        self.node.seq = seq
        self.cluster = Cluster(self.node, f"{name}:2", settings, self.wall(), seeds,
                               rng=random.Random(hash(name) & 0xFFFF))
        self.up = True

    def wall(self) -> int:
        """This node's wall clock: the network's time, off by its skew."""
        return self.net.now + self.skew_ms

    def time(self) -> int:
        """This node's time for expiry and TTL, as kvd.loop reads it."""
        return self.node.clock.time_ms()

    @property
    def address(self) -> str:
        return self.node.address


class SimNet:
    def __init__(self, seed: int = 0, settings: Settings | None = None,
                 faults: Faults | None = None) -> None:
        self.now = START_MS
        self.rng = random.Random(seed)
        self.settings = settings or Settings()
        self.faults = faults or Faults()
        self.nodes: dict[str, SimNode] = {}
        self._queue: list[tuple[int, int, str, str, bytes]] = []  # (at, n, src, dst, frame)
        self._n = itertools.count()
        self.delivered = 0

    # -- the cluster --------------------------------------------------------------------

    def add(self, name: str, join: list[str] | None = None, skew_ms: int = 0) -> SimNode:
        node = SimNode(self, name, join or [], skew_ms, self.settings)
        self.nodes[name] = node
        return node

    def form(self, *names: str) -> SimNet:
        """Start `names`, the first the seed the others join; run until all see each other."""
        self.add(names[0])
        for name in names[1:]:
            self.add(name, [f"{names[0]}:1"])
        assert self.run_until(lambda: all(len(x.cluster.ms.members) == len(names)
                                          for x in self.live()), 10_000), "no cluster formed"
        return self

    def restart(self, name: str, keep_data: bool = False) -> SimNode:
        """kill -9 and start again on the same name (no log: memory is lost unless kept)."""
        old = self.nodes[name]
        known = [m.wire() for m in old.cluster.ms.others()]
        new = SimNode(self, name, [], old.skew_ms, self.settings)
        new.cluster = Cluster(new.node, f"{name}:2", self.settings, new.wall(), [],
                              known=known, rng=random.Random(self.now))
        if keep_data:
            for key, e in old.node.store.items():
                new.node.store.merge(key, e)
        self.nodes[name] = new
        return new

    def by_address(self, address: str) -> SimNode | None:
        return next((n for n in self.nodes.values() if n.address == address), None)

    def write(self, name: str, key: bytes, value: bytes | None, expires_at: int = 0) -> Entry:
        node = self.nodes[name]
        entry = node.node.write(key, value, expires_at)
        self._commit(node)
        return entry

    def command(self, name: str, *argv: bytes, user: object = None,
                source: str = "127.0.0.1") -> object:
        """A client's request on node `name`, with the times kvd.loop gives a turn, as `user`
        (kvd.state.users.User) from `source`."""
        node = self.nodes[name]
        ctx = Context(now=node.time(), client=b"sim", request_id=1, wall=node.wall())
        ctx.user, ctx.source = user, source  # type: ignore[assignment]
        reply = node.node.execute(list(argv), ctx)
        self._commit(node)
        return reply

    # -- the wire ------------------------------------------------------------------------

    def _commit(self, node: SimNode) -> None:
        changes = node.node.take_changes()
        if changes:
            self._route(node, node.cluster.committed(changes, node.wall()), None)

    def _route(self, src: SimNode, outs: list[Out], requester: str | None) -> None:
        for out in outs:
            frame = codec.encode_peer(out.msg)
            if out.dest is Dest.PUBLISH:
                for dst in self.nodes.values():
                    if dst is not src and src.cluster.ms.me.gossip in \
                            dst.cluster.gossip_endpoints():
                        self._post(src.name, dst.name, frame)
            elif out.dest is Dest.REQUEST:
                dst = self.by_address(out.to)
                if dst is not None:
                    self._post(src.name, dst.name, frame)
            elif requester is not None:
                self._post(src.name, requester, frame)

    def _post(self, src: str, dst: str, frame: bytes) -> None:
        f = self.faults
        if f.blocks(src, dst) or self.rng.random() < f.drop:
            return
        copies = 2 if self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            at = self.now + self.rng.randint(*f.delay_ms)
            heapq.heappush(self._queue, (at, next(self._n), src, dst, frame))

    def _deliver(self, src: str, dst: str, frame: bytes) -> None:
        node = self.nodes.get(dst)
        if node is None or not node.up or self.faults.blocks(src, dst):
            return
        self.delivered += 1
        msg = codec.decode(frame)
        assert isinstance(msg, codec.Peer)
        self._route(node, node.cluster.receive(msg, node.wall()), src)
        self._commit(node)

    # -- time ----------------------------------------------------------------------------

    def run(self, ms: int, tick_ms: int = 20) -> None:
        """Advance the clock by `ms`, delivering messages and ticking every node."""
        end = self.now + ms
        while self.now < end:
            self.now = min(end, self.now + tick_ms)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, src, dst, frame = heapq.heappop(self._queue)
                self._deliver(src, dst, frame)
            for node in list(self.nodes.values()):
                if node.up:
                    node.node.store.expire_due(node.time())
                    self._route(node, node.cluster.tick(node.wall()), None)
                    self._commit(node)

    def run_until(self, predicate, limit_ms: int, tick_ms: int = 20) -> bool:
        """Run until `predicate()` holds, at most `limit_ms` of simulated time."""
        end = self.now + limit_ms
        while self.now < end:
            if predicate():
                return True
            self.run(tick_ms * 5, tick_ms)
        return bool(predicate())

    def heal(self) -> None:
        self.faults = Faults()

    # -- what tests look at --------------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up]

    def digests(self) -> set[int]:
        for n in self.live():
            n.node.store.expire_due(n.time())
        return {n.node.store.digest for n in self.live()}

    def converged(self) -> bool:
        return len(self.digests()) == 1

    def data(self, name: str) -> dict[bytes, tuple[bytes, int]]:
        node = self.nodes[name]
        now = node.time()
        return {k: (e.value, e.expires_at) for k, e in node.node.store.items()  # type: ignore[misc]
                if e.live(now)}
