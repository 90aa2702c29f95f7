"""The one loop of kvd: the only place that polls sockets and the only thread that touches the
node.

Each turn drains every door's queued requests through the node, lets the cluster's peer layer
apply what its sockets brought, commits the turn's writes to the log in one go (one fsync
covers the whole turn under `--fsync always`: group commit), and only then has the doors send
their replies. Draining before replying is what makes pipelined load cheap: one poll, one log
flush, one fsync per turn instead of per request. A write the log refuses is undone and its
replies turn into the error.

The cluster (kvd.cluster.peers, when attached) rides the same loop: requests from other nodes
arrive through the native door next to client requests, gossip and replies on the peers' own
sockets; what they apply is committed in the same turn as local writes, and our own writes of
the turn are published as gossip after the commit.

With CURVE on, the ZAP handler (kvd.doors.zap) is one more socket of this loop: a handshake
asks it, the loop answers before the turn, and no thread ever runs beside the loop.
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from bisect import bisect_left
from time import perf_counter
from typing import Protocol

import zmq

from kvd.cluster.peers import Peers
from kvd.consensus import Consensus
from kvd.doors.native import NativeDoor
from kvd.doors.zap import Gatekeeper
from kvd.state.context import Context
from kvd.state.hlc import wall_ms
from kvd.state.node import Change, Node
from shared.errors import StorageError

log = logging.getLogger("kvd.loop")

TICK_S = 0.1  # housekeeping period (expiry reclaim, everysec fsync)
EXPIRE_PER_TICK = 10_000
GC_THRESHOLD = 20_000  # allocations between young collections (CPython's default is 700)
HEARTBEAT_S = 1.0  # WATCH heartbeats: a watcher that hears none for a few seconds resubscribes
# After SIGTERM the loop serves this long more, /health saying 503 "shutting down": a load
# balancer polling it sees the node go before its port closes, and requests in flight are
# answered. A second signal ends the grace at once.
SHUTDOWN_GRACE_S = 0.5


class Log(Protocol):
    """What the loop needs from durability (kvd.log.wal provides the real one)."""

    def append(self, changes: list[Change]) -> None: ...
    def commit(self) -> None: ...
    def tick(self, now: float) -> None: ...
    def close(self) -> None: ...
    def info(self) -> dict: ...


class Door(Protocol):
    """A protocol adapter besides the native door (kvd.doors.resp): it polls its own sockets
    through the loop's poller and answers only after the turn's commit."""

    due: bool  # requests it has already read wait for a turn: run one without waiting

    def attach(self, poller: zmq.Poller) -> None: ...
    def read(self, ready: dict, ctx: Context) -> None: ...
    def fail(self, exc: StorageError) -> None: ...
    def committed(self, changes: list[Change]) -> None: ...
    def expired(self, keys: list[bytes]) -> None: ...
    def flush(self) -> None: ...
    def tick(self, now: float) -> None: ...
    def close(self) -> None: ...


class NullLog:
    """No durability: for tests of the loop and for `--fsync` benchmarks' baseline."""

    def append(self, changes: list[Change]) -> None:
        pass

    def commit(self) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def close(self) -> None:
        pass

    def info(self) -> dict:
        return {"fsync": "off"}


class TurnTimes:
    """A histogram of turn durations for /metrics: fixed bounds, one bisect and one increment
    a turn (about a fifth of a microsecond)."""

    bounds = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
              0.25, 1.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last: over every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds


class Loop:
    def __init__(self, node: Node, door: NativeDoor, log_: Log | None = None,
                 doors: tuple[Door, ...] = (), gate: Gatekeeper | None = None,
                 grace_s: float = 0.0) -> None:
        """`grace_s`: how long to serve on after `stop` (SHUTDOWN_GRACE_S with an HTTP door:
        no other door has a health check to act on it)."""
        self.node = node
        self.door = door
        self.doors = doors
        self.log = log_ or NullLog()
        self.peers: Peers | None = None
        self.consensus: Consensus | None = None
        self.gate = gate  # the ZAP handler, when CURVE is on; started by whoever made it
        self._stopping = False
        self.grace_s = grace_s
        self._stop_by = 0.0  # monotonic: the end of the shutdown grace
        self.turns = TurnTimes()
        self._next_heartbeat = 0.0
        node.info_sources.append(self._info)
        self.poller = zmq.Poller()
        self.poller.register(door.router, zmq.POLLIN)
        self.poller.register(door.monitor, zmq.POLLIN)
        for other in doors:
            other.attach(self.poller)
        if gate is not None:
            self.poller.register(gate.zap_socket, zmq.POLLIN)

    def attach(self, peers: Peers) -> None:
        """Join the loop to a cluster: its sockets are polled and its messages handled here."""
        self.peers = peers
        self.door.on_peer = peers.on_request

    def attach_consensus(self, consensus: Consensus) -> None:
        """The Raft group rides the loop too: ticked with the housekeeping, driven (persist,
        send, apply) after every turn; its messages come through the cluster."""
        self.consensus = consensus

    def _info(self) -> dict:
        info = self.door.info()
        if self.consensus is not None:
            info.update(self.consensus.info())
        info.update(self.log.info())
        if self.gate is not None:
            info.update(self.gate.info())
        return info

    def stop(self, *_: object) -> None:
        now = time.monotonic()
        # the first stop starts the grace; a second one (Ctrl-C twice) ends it
        self._stop_by = now if self._stopping else now + self.grace_s
        self._stopping = True

    def health(self) -> tuple[bool, str]:
        """Whether the node serves and can write (/health): load balancers act on it."""
        if self._stopping:
            return False, "shutting down"
        info = self.log.info()
        if not info.get("log_writable", True):
            return False, f"the log cannot be written: {info.get('log_error') or 'see the log'}"
        return True, ""

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        # Every write leaves long-lived objects (the entry) and short-lived ones (its change,
        # its reply): at the default threshold of 700 allocations the cyclic GC runs every
        # few requests under load and costs ~8% of a pipelined SET. The store holds no
        # cycles worth hunting often; refcounting frees the rest.
        gc.freeze()  # what exists now (a replayed store included) is never scanned again
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        router, monitor = self.door.router, self.door.monitor
        zap = self.gate.zap_socket if self.gate is not None else None
        next_tick = time.monotonic()
        doors = self.doors
        while not self._stopping or time.monotonic() < self._stop_by:
            due = any(other.due for other in doors)
            # A pump cut short by its budget goes on at once, between turns; so does a door's
            # work already read.
            timeout = 0.0 if self.door.pumping or due else max(0.0, next_tick - time.monotonic())
            ready = dict(self.poller.poll(timeout * 1000))
            idle = monitor in ready  # sockets ready that bring no work for a turn
            if zap is not None and zap in ready:  # a handshake waits: answer it first
                self.gate.answer()  # type: ignore[union-attr]
                idle += 1
            if router in ready or len(ready) > idle or due:
                started = perf_counter()
                self._turn(ready)
                self.turns.observe(perf_counter() - started)
            elif self.door.pumping:
                self.door.pump()
            if monitor in ready:
                self.door.drain_monitor()
            if time.monotonic() >= next_tick:
                self._housekeeping()
                next_tick = time.monotonic() + TICK_S
        log.info("stopping: flushing the log")
        if self.consensus is not None:
            self.consensus.stop()
        if self.peers is not None:
            self.peers.leave(wall_ms())

    def _turn(self, ready: dict) -> None:
        node, door, peers = self.node, self.door, self.peers
        wall = wall_ms()
        ctx = Context(now=node.clock.time_at(wall), wall=wall)
        if door.router in ready:
            door.read(ctx)
        for other in self.doors:
            other.read(ready, ctx)
        if peers is not None:
            peers.drain(ready, ctx.wall)
        changes = node.take_changes()
        if changes and self._commit(changes) and peers is not None:
            peers.route(peers.cluster.committed(changes, ctx.wall))
        if self.consensus is not None:
            self.consensus.drive()
        door.flush()
        if node.store.expired:
            self._announce_expired()
        for other in self.doors:
            other.flush()

    def _announce_expired(self) -> None:
        """Keys the store reclaimed as expired, told to the doors (keyspace notifications)."""
        keys, self.node.store.expired = self.node.store.expired, []
        for other in self.doors:
            other.expired(keys)

    def _commit(self, changes: list[Change]) -> bool:
        """Log the turn's writes; if the log refuses, undo them and fail those replies."""
        try:
            self.log.append(changes)
            self.log.commit()
        except StorageError as exc:
            log.error("%s", exc)
            self.node.undo(changes)
            self.door.fail(exc)
            for other in self.doors:
                other.fail(exc)
            return False
        visible = self.node.visible(changes)  # the users' records are nobody's to watch
        self.door.deliver(self.node.watches.record_all(visible))
        for other in self.doors:
            other.committed(visible)
        return True

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_S
            self.door.heartbeats()
        elif self.node.watches.backlog:
            self.door.pump()  # a watcher behind may have read its queue while we were idle
        self.door.check_accepts(now)
        self.node.store.expire_due(self.node.clock.time_ms(), EXPIRE_PER_TICK)
        if self.node.store.expired:
            self._announce_expired()
            for other in self.doors:
                other.flush()
        self.log.tick(now)
        for other in self.doors:
            other.tick(now)
        if self.peers is not None:
            self.peers.tick(wall_ms())
        if self.consensus is not None:
            self.consensus.tick(wall_ms())
            self.consensus.drive()
            self.door.flush()  # coordination answers that this tick's applies resolved
            for other in self.doors:
                other.flush()

    def close(self) -> None:
        if self.peers is not None:
            self.peers.close()
        self.log.close()
        for other in self.doors:
            other.close()
        self.door.close()
        if self.gate is not None:  # last: no CURVE socket is left to ask it
            self.poller.unregister(self.gate.zap_socket)
            self.gate.stop()
