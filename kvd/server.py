"""The socket layer of kvd: the only module of the daemon that imports zmq.

One thread owns everything. Each turn of the loop drains every message already queued on the
ROUTER (up to MAX_DRAIN), runs them through the node, commits the turn's writes to the log in
one go (one fsync covers the whole turn under `--fsync always`: group commit), and only then
sends the replies. Draining before replying is what makes pipelined load cheap: one poll, one
log flush, one fsync per turn instead of per request.

Bad input never stops the loop: a frame that does not decode gets an error reply (request id 0)
and is counted; a peer that fails the ZeroMQ handshake (garbage bytes on the port) is counted
from the socket monitor.

The cluster (kvd.peers, when attached) rides the same loop: requests from other nodes arrive on
the ROUTER next to client requests, gossip and replies on the peers' sockets; what they apply is
committed to the log in the same turn as local writes, and our own writes of the turn are
published as one gossip message after the commit.
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import zmq
from zmq.utils.monitor import parse_monitor_message

from kvd.hlc import wall_ms
from kvd.node import Change, Context, Node
from kvd.peers import Peers
from shared import codec
from shared.errors import KvError, ProtocolError, StorageError

log = logging.getLogger("kvd.server")

MAX_DRAIN = 4096  # messages per turn: bounds the latency one busy client can add to others
TICK_S = 0.1  # housekeeping period (expiry reclaim, everysec fsync)
EXPIRE_PER_TICK = 10_000
GC_THRESHOLD = 20_000  # allocations between young collections (CPython's default is 700)

# Plain ints, not pyzmq's Flag enums: combining or passing an enum costs more than the
# syscall-free send it decorates, and these run once per message.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
HEARTBEAT_S = 1.0  # WATCH heartbeats: a watcher that hears none for a few seconds resubscribes


class Log(Protocol):
    """What the server needs from durability (kvd.wal provides the real one)."""

    def append(self, changes: list[Change]) -> None: ...
    def commit(self) -> None: ...
    def tick(self, now: float) -> None: ...
    def close(self) -> None: ...
    def info(self) -> dict: ...


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


@dataclass(slots=True)
class Pending:
    """A reply already encoded whose writes are not yet in the log."""

    index: int  # in the turn's outgoing list
    batch: bool
    replies: list[tuple[int, object]]  # (request id, value)
    wrote: list[int]  # positions in `replies` of the requests that wrote


class BindError(KvError):
    code = "BIND"


class Server:
    def __init__(self, node: Node, bind: str, port: int, log_: Log | None = None,
                 max_message: int | None = None) -> None:
        self.node = node
        self.log = log_ or NullLog()
        self.peers: Peers | None = None
        self.counters: Counter[str] = Counter()
        self._stopping = False
        self._lone: list[list] = []  # this turn's one-request messages: [request id, argv]
        self._lone_clients: list[bytes] = []  # ... and who sent each
        self._next_heartbeat = 0.0
        self._ctx = zmq.Context.instance()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 1000)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router.setsockopt(zmq.SNDHWM, 100_000)
        self._router.setsockopt(zmq.RCVHWM, 100_000)
        # A hostile client cannot make us buffer more than one maximal request.
        self._router.setsockopt(zmq.MAXMSGSIZE, max_message or node.max_value + 1024 * 1024)
        self._monitor = self._router.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_ACCEPTED
        )
        try:
            self._router.bind(f"tcp://{bind}:{port}")
        except zmq.ZMQError as exc:
            self.close()
            if exc.errno == zmq.EADDRINUSE:
                raise BindError(
                    f"port {port} on {bind} is in use — stop what holds it or pick --port"
                ) from None
            raise BindError(f"cannot listen on {bind}:{port}: {exc.strerror}") from None
        node.info_sources.append(self._info)
        self.poller = zmq.Poller()
        self.poller.register(self._router, zmq.POLLIN)
        self.poller.register(self._monitor, zmq.POLLIN)

    def attach(self, peers: Peers) -> None:
        """Join the loop to a cluster: its sockets are polled and its messages handled here."""
        self.peers = peers

    def _info(self) -> dict:
        info = {
            "bad_frames": self.counters["bad_frames"],
            "bad_handshakes": self.counters["bad_handshakes"],
            "connections_accepted": self.counters["accepted"],
            "dropped_replies": self.counters["dropped_replies"],
        }
        info.update(self.log.info())
        return info

    def stop(self, *_: object) -> None:
        self._stopping = True

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
        next_tick = time.monotonic()
        while not self._stopping:
            timeout = max(0.0, next_tick - time.monotonic())
            ready = dict(self.poller.poll(timeout * 1000))
            if self._router in ready or (self.peers and len(ready) > (self._monitor in ready)):
                self._turn(ready)
            if self._monitor in ready:
                self._drain_monitor()
            if time.monotonic() >= next_tick:
                self._housekeeping()
                next_tick = time.monotonic() + TICK_S
        log.info("stopping: flushing the log")
        if self.peers is not None:
            self.peers.leave(wall_ms())

    def _turn(self, ready: dict) -> None:
        node, router = self.node, self._router
        ctx = Context(now=wall_ms())
        out: list[list[bytes]] = []
        pending: list[Pending] = []  # replies that depend on this turn's log commit
        for i in range(MAX_DRAIN if self._router in ready else 0):
            # After the first message, one EVENTS query (a poll(2)) says whether a second is
            # queued: cheaper than the zmq.Again a lone request (a sequential client) would
            # otherwise end the turn on. Busier turns then drain until Again.
            if i == 1 and not router.get(_EVENTS) & _POLLIN:
                break
            frames = self._recv(router)
            if frames is None:
                break
            self._handle(frames, ctx, out, pending)
        if self._lone:
            self._run_lone(ctx, out, pending)
        if self.peers is not None:
            self.peers.drain(ready, ctx.now)
        changes = node.take_changes()
        if changes and self._commit(changes, out, pending) and self.peers is not None:
            self.peers.route(self.peers.cluster.committed(changes, ctx.now))
        for client, rid, event in ctx.events:
            out.append([client, codec.encode_event(rid, event)])
        for frames in out:
            self._send(frames)

    @staticmethod
    def _recv(router: zmq.Socket) -> list[bytes] | None:
        """One queued message, or None when the queue is empty.

        Two plain recv calls read the [client, body] every ROUTER message starts with; that
        is cheaper than recv_multipart's two RCVMORE queries plus its enum flags. The end of
        the queue is found by zmq.Again, not by asking EVENTS before each message: EVENTS
        costs a poll(2) inside libzmq on every call, the exception costs once per turn.
        """
        try:
            frames = [router.recv(_NOBLOCK), router.recv(_NOBLOCK)]
        except zmq.Again:
            return None
        while router.get(_RCVMORE):  # a malformed message: read it whole, _handle rejects it
            frames.append(router.recv(_NOBLOCK))
        return frames

    def _handle(self, frames: list[bytes], ctx: Context, out: list, pending: list) -> None:
        client = frames[0]
        if len(frames) != 2:
            self.counters["bad_frames"] += 1
            err = ProtocolError(f"expected one body frame, got {len(frames) - 1}")
            out.append([client, codec.encode_reply(0, err)])
            return
        try:
            msg = codec.decode(frames[1])
        except KvError as exc:
            self.counters["bad_frames"] += 1
            out.append([client, codec.encode_reply(0, exc)])
            return
        if type(msg) is codec.Request:
            # Collected, and run together with the turn's other one-request messages when the
            # drain ends (or before any other kind of message, to keep each client's order).
            self._lone.append([msg.request_id, msg.argv])
            self._lone_clients.append(client)
            return
        if self._lone:
            self._run_lone(ctx, out, pending)
        ctx.client = client
        if type(msg) is codec.Batch:
            replies, wrote = self.node.execute_batch(msg.requests, ctx)
            out.append([client, codec.encode_batch_reply(replies)])
            if wrote:
                pending.append(Pending(len(out) - 1, True, replies, wrote))
        elif isinstance(msg, codec.Cancel):
            self.node.watches.cancel(client, msg.request_id)
        elif isinstance(msg, codec.Peer) and self.peers is not None:
            self.peers.on_request(msg, ctx.now, lambda frame: out.append([client, frame]))
        else:
            self.counters["bad_frames"] += 1
            err = ProtocolError("clients send REQUEST, BATCH or CANCEL messages")
            out.append([client, codec.encode_reply(0, err)])

    def _run_lone(self, ctx: Context, out: list, pending: list) -> None:
        """The one-request messages collected this turn, through the node's batch path (one
        loop for a pipelining client's many small messages, as for a BATCH), each answered by
        its own REPLY."""
        requests, clients = self._lone, self._lone_clients
        self._lone, self._lone_clients = [], []
        if len(requests) == 1:  # a sequential client's turn: the batch loop's set-up costs more
            (rid, argv), = requests
            ctx.client, ctx.request_id = clients[0], rid
            before = len(self.node.changes)
            value = self.node.execute(argv, ctx)
            out.append([clients[0], codec.encode_reply(rid, value)])
            if len(self.node.changes) != before:
                pending.append(Pending(len(out) - 1, False, [(rid, value)], [0]))
            return
        replies, wrote = self.node.execute_batch(requests, ctx, clients)
        base = len(out)
        encode = codec.encode_reply
        out.extend([[client, encode(rid, value)]
                    for (rid, value), client in zip(replies, clients, strict=True)])
        for i in wrote:
            pending.append(Pending(base + i, False, [replies[i]], [0]))

    def _commit(self, changes: list[Change], out: list, pending: list) -> bool:
        """Log the turn's writes; if the log refuses, undo them and fail those replies."""
        try:
            self.log.append(changes)
            self.log.commit()
        except StorageError as exc:
            log.error("%s", exc)
            self.node.undo(changes)
            for p in pending:
                failed = list(p.replies)
                for i in p.wrote:
                    failed[i] = (failed[i][0], exc)
                out[p.index][1] = (
                    codec.encode_batch_reply(failed) if p.batch
                    else codec.encode_reply(*failed[0])
                )
            return False
        for client, rid, event in self.node.watches.record_all(changes):
            out.append([client, codec.encode_event(rid, event)])
        return True

    def _send(self, frames: list[bytes]) -> None:
        try:
            # Every reply is [client, body]; two sends beat send_multipart's generic loop.
            self._router.send(frames[0], _SNDMORE_NOBLOCK)
            self._router.send(frames[1], _NOBLOCK)
        except zmq.Again:
            self.counters["dropped_replies"] += 1
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.counters["dropped_replies"] += 1
            self.node.watches.drop_client(frames[0])  # the client went away

    def _drain_monitor(self) -> None:
        while True:
            try:
                event = parse_monitor_message(self._monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.counters["accepted"] += 1
            else:
                self.counters["bad_handshakes"] += 1

    def _watch_heartbeats(self) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_S
            for client, rid, event in self.node.watches.heartbeats():
                self._send([client, codec.encode_event(rid, event)])

    def _housekeeping(self) -> None:
        self._watch_heartbeats()
        self.node.store.expire_due(wall_ms(), EXPIRE_PER_TICK)
        self.log.tick(time.monotonic())
        if self.peers is not None:
            self.peers.tick(wall_ms())

    def close(self) -> None:
        if self.peers is not None:
            self.peers.close()
        self.log.close()
        self._router.disable_monitor()
        self._monitor.close(linger=0)
        self._router.close()

