"""The native door: kv's own protocol (PROTOCOL.md) on a ZeroMQ ROUTER socket.

A protocol adapter: frames in, the node's requests out; the node's replies in, frames out. The
loop (kvd.loop) owns the turn: it asks the door to `read` everything already queued, commits the
turn's writes to the log, then has the door `flush` its replies — so a reply never leaves
before the write it acknowledges is in the log, and one fsync covers a whole turn.

Bad input never stops the door: a message that does not decode gets an error reply (request id
0) and is counted; a peer that fails the ZeroMQ handshake (garbage bytes on the port) is counted
from the socket monitor. Running out of file descriptors, when no connection can be accepted,
is found by a check once a second, counted in INFO and logged (see ACCEPT_CHECK_S). Peers'
requests arrive here too (they are clients of our ROUTER); the door hands them to `on_peer`,
which the loop points at the cluster's peer layer.

With CURVE (`curve`: the cluster's current key pair, shared.keyring) the ROUTER is a CURVE
server and every connection is encrypted. The ZAP handler (kvd.doors.zap) marks connections
whose client key is a cluster key as peers (the frame's User-Id); a peer message from any
other connection is dropped and counted (`peer_messages_refused`): knowing the server's public
key makes a client, only the secret makes a peer. Reading User-Id needs the body frame as a
zmq.Frame (copy=False), which costs on every message, so the receive function is chosen once:
without CURVE the door reads exactly as it always did.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

from kvd.state.access import is_loopback
from kvd.state.context import Context, Deferred
from kvd.state.coordlimits import MIN_FRAME
from kvd.state.node import Node
from kvd.state.users import User
from shared import codec
from shared.errors import KvError, ProtocolError, WrongPass
from shared.keyring import CLIENT_DOMAIN, PEER_USER, KeyPair

log = logging.getLogger("kvd.doors.native")

MAX_DRAIN = 4096  # messages per turn: bounds the latency one busy client can add to others
# Out of descriptors, accept(2) fails, and ZeroMQ retries it in a tight loop (its I/O thread
# spins) and reports every failure to the socket monitor: about a million events a second,
# with the I/O thread blocked, for every socket, whenever the monitor's queue is full. Reading
# them cost the loop a core and the served clients a p99 of 5-13 ms, so they are not asked
# for: instead the door checks, once every ACCEPT_CHECK_S, whether a descriptor is left. Each
# check that finds none counts once in INFO accept_failures; the log gets a line at most every
# ACCEPT_LOG_S.
ACCEPT_CHECK_S = 1.0
ACCEPT_LOG_S = 10.0
BACKLOG = 1024  # connections the kernel completes for us before we accept them (ZeroMQ: 100)
MAX_PUMP = 4096  # WATCH events pulled from the history per pump: bounds a turn's catch-up work
MAX_SESSIONS = 100_000  # logged-in connections remembered (oldest forgotten first)
CURVE_LOG_S = 10.0  # failed key exchanges on the client port are logged at most this often
# How libzmq's monitor says a CURVE handshake failed for want of the right keys: the client
# used another server key (our server cannot open its HELLO), or it does not encrypt at all.
KEY_FAILURES = frozenset({int(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC),
                          int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)})

# Plain ints, not pyzmq's Flag enums: combining or passing an enum costs more than the
# syscall-free send it decorates, and these run once per message.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)

# A peer's request, the time, and how to answer it (kvd.cluster.peers.Peers.on_request).
PeerHandler = Callable[[codec.Peer, int, Callable[[bytes], None]], None]


@dataclass(slots=True)
class Pending:
    """A reply already encoded whose writes are not yet in the log."""

    index: int  # in the turn's outgoing list
    batch: bool
    replies: list[tuple[int, object]]  # (request id, value)
    wrote: list[int]  # positions in `replies` of the requests that wrote


class BindError(KvError):
    code = "BIND"


class NativeDoor:
    def __init__(self, node: Node, bind: str, port: int, max_message: int | None = None,
                 curve: KeyPair | None = None) -> None:
        self.node = node
        self.on_peer: PeerHandler | None = None
        self.counters: Counter[str] = Counter()
        self.out: list[list[bytes]] = []  # this turn's [client, body] messages, in order
        self.pending: list[Pending] = []  # ... of which these wait for the turn's commit
        # BATCHes held for coordination answers: (replies, positions that wrote) this turn
        self._held_batches: list[tuple[list, list[int]]] = []
        self.events: list[tuple[bytes, int, int, bytes]] = []  # WATCH: client, rid, cursor, body
        self.pumping = False  # the last pump stopped at MAX_PUMP with more to send: pump again
        # Logged-in connections: ROUTER identity -> (user, the connection's descriptor). The
        # ROUTER gives each connection a fresh identity (a counter from a random start) and
        # refuses a second connection under an identity in use; a request counts as the
        # user's only from the same identity on the same descriptor. Not forgotten on
        # disconnect: the monitor's event can arrive after a new connection has reused the
        # descriptor and logged in; the table is bounded instead (MAX_SESSIONS).
        self.sessions: dict[bytes, tuple[User, int]] = {}
        # Where clients come from matters once users exist (sessions, back-off) and for the
        # first-user rule on a node that listens beyond loopback; bodies are then read as
        # frames, whose Peer-Address says it. On an open loopback node all are loopback and
        # the cheaper byte read is kept.
        self.loopback = is_loopback(bind)
        self._lone: list[list] = []  # this turn's one-request messages: [request id, argv]
        self._lone_clients: list[bytes] = []  # ... and who sent each
        self._ctx = zmq.Context.instance()
        self.router = self._ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 1000)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.SNDHWM, 100_000)
        self.router.setsockopt(zmq.RCVHWM, 100_000)
        # The largest message we read: every request whose value is within max_value fits,
        # so anything over max_value but under this is read and answered TOO_LARGE by the
        # node. ZeroMQ drops a bigger frame unread and cuts that connection, so no client can
        # make us buffer a frame over this; what a connection can queue is bounded by RCVHWM
        # such frames, and the loop drains them every turn. Clients learn the limit from INFO
        # (max_message_size) and refuse bigger requests themselves instead of waiting for a
        # reply that cannot come (shared.client).
        # a client's largest request, and never under what the peers' Raft messages need
        # (a full coordination namespace's snapshot: kvd.state.coordlimits)
        self.max_message = max_message or max(max(node.max_value, 0) + 1024 * 1024, MIN_FRAME)
        self.router.setsockopt(zmq.MAXMSGSIZE, self.max_message)
        # Past the backlog the kernel drops a connecting client's SYN, and the client hears
        # nothing; within it, the client is connected and sees that we never greet it.
        self.router.setsockopt(zmq.BACKLOG, BACKLOG)
        self.curve_key = curve.public.decode() if curve is not None else ""
        self._curve_logged = -CURVE_LOG_S  # monotonic time of the last "key exchange" line
        self._curve_unlogged = 0
        # Whether the message just read came from a peer (a cluster key): always, without
        # CURVE (nothing tells them apart, as before); per message with it (_recv_curve).
        self._from_peer = True
        self._recv = NativeDoor._recv_plain
        if curve is not None:
            self.router.setsockopt(zmq.CURVE_SERVER, 1)
            self.router.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
            self.router.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
            self.router.setsockopt(zmq.ZAP_DOMAIN, CLIENT_DOMAIN)
            self._recv = self._recv_curve
        self.monitor = self.router.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
        )
        self._endpoint = f"{bind}:{port}"
        self._accept_check_at = 0.0  # monotonic time of the next check_accepts
        self._accept_logged = -ACCEPT_LOG_S  # ... of the last "cannot accept" line
        self._accept_unlogged = 0  # checks that found no descriptor left since
        try:
            self.router.bind(f"tcp://{bind}:{port}")
        except zmq.ZMQError as exc:
            self.close()
            if exc.errno == zmq.EADDRINUSE:
                raise BindError(
                    f"port {port} on {bind} is in use — stop what holds it or pick --port"
                ) from None
            raise BindError(f"cannot listen on {bind}:{port}: {exc.strerror}") from None

    def info(self) -> dict:
        return {
            "bad_frames": self.counters["bad_frames"],
            "bad_handshakes": self.counters["bad_handshakes"],
            "connections_accepted": self.counters["accepted"],
            "connections_open": self.counters["accepted"] - self.counters["disconnected"],
            "accept_failures": self.counters["accept_failures"],
            "dropped_replies": self.counters["dropped_replies"],
            "max_message_size": self.max_message,
            "curve_key": self.curve_key,
            "curve_failed": self.counters["curve_failed"],
            "peer_messages_refused": self.counters["peer_messages_refused"],
            "watchers_behind": len(self.node.watches.behind()),
            "watchers_lagged": self.node.watches.lagged,
        }

    # -- a turn: read, (the loop commits), flush --------------------------------------------

    def read(self, ctx: Context) -> None:
        """Run every message already queued (up to MAX_DRAIN) through the node."""
        if self.node.locked or not self.loopback:
            self._read_addressed(ctx)
            return
        ctx.user, ctx.source = None, "127.0.0.1"
        router, recv = self.router, self._recv
        for i in range(MAX_DRAIN):
            # After the first message, one EVENTS query (a poll(2)) says whether a second is
            # queued: cheaper than the zmq.Again a lone request (a sequential client) would
            # otherwise end the turn on. Busier turns then drain until Again.
            if i == 1 and not router.get(_EVENTS) & _POLLIN:
                break
            frames = recv(router)
            if frames is None:
                break
            self._handle(frames, ctx)
        if self._lone:
            self._run_lone(ctx)

    def _read_addressed(self, ctx: Context) -> None:
        """`read` when who sent a message matters: each body is read as a frame for its
        sender's address, and each request runs as its connection's user."""
        router = self.router
        for _ in range(MAX_DRAIN):
            try:
                client = router.recv(_NOBLOCK)
                body = router.recv(_NOBLOCK, copy=False)
            except zmq.Again:
                break
            frames = [client, body.bytes]
            while router.get(_RCVMORE):
                frames.append(router.recv(_NOBLOCK))
            try:
                source, fd = body.get("Peer-Address"), body.get(zmq.SRCFD)
                if self.curve_key:
                    self._from_peer = body.get("User-Id") == PEER_USER
            except zmq.ZMQError:
                source, fd = "?", -1
                self._from_peer = not self.curve_key
            ctx.source = source
            session = self.sessions.get(client)
            ctx.user = session[0] if session is not None and session[1] == fd else None
            if len(frames) == 2 and self.node.locked:
                argv = _auth_request(frames[1])
                if argv is not None:
                    rid, argv = argv
                    self.out.append([client, codec.encode_reply(rid, self._login(
                        client, argv, source, fd))])
                    continue
            self._handle(frames, ctx)
            if self._lone:
                self._run_lone(ctx)

    def _login(self, client: bytes, argv: list[bytes], source: str, fd: int) -> object:
        """AUTH [user] password: this connection's user from now on (or an error)."""
        if len(argv) not in (2, 3):
            return KvError("usage: AUTH [user] password")
        name, password = (b"default", argv[1]) if len(argv) == 2 else (argv[1], argv[2])
        self.sessions.pop(client, None)  # a failed AUTH logs the connection out, as in Redis
        try:
            user = self.node.access.login(name, password, source)
        except WrongPass as exc:
            return exc
        self.sessions[client] = (user, fd)
        if len(self.sessions) > MAX_SESSIONS:
            del self.sessions[next(iter(self.sessions))]
        return "OK"

    @staticmethod
    def _recv_plain(router: zmq.Socket) -> list[bytes] | None:
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

    def _recv_curve(self, router: zmq.Socket) -> list[bytes] | None:
        """As _recv_plain, and note whether the sender holds a cluster key (ZAP's User-Id)."""
        try:
            client = router.recv(_NOBLOCK)
            body = router.recv(_NOBLOCK, copy=False)
        except zmq.Again:
            return None
        self._from_peer = body.get("User-Id") == PEER_USER
        frames = [client, body.bytes]
        while router.get(_RCVMORE):
            frames.append(router.recv(_NOBLOCK))
        return frames

    def _handle(self, frames: list[bytes], ctx: Context) -> None:
        client, out = frames[0], self.out
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
            self._run_lone(ctx)
        ctx.client = client
        if type(msg) is codec.Batch:
            ctx.deferrable, ctx.deferred = True, False  # coordination answers later: _batch_later
            try:
                replies, wrote = self.node.execute_batch(msg.requests, ctx)
            finally:
                ctx.deferrable = False
            if ctx.deferred:
                self._batch_later(client, replies, wrote)
                return
            out.append([client, codec.encode_batch_reply(replies)])
            if wrote:
                self.pending.append(Pending(len(out) - 1, True, replies, wrote))
        elif isinstance(msg, codec.Cancel):
            self.node.watches.cancel(client, msg.request_id)
        elif isinstance(msg, codec.Peer) and self.on_peer is not None:
            if not self._from_peer:  # a client that knows our public key, not the secret
                self.counters["peer_messages_refused"] += 1
                return
            self.on_peer(msg, ctx.wall, lambda frame: out.append([client, frame]))
        else:
            self.counters["bad_frames"] += 1
            err = ProtocolError("clients send REQUEST, BATCH or CANCEL messages")
            out.append([client, codec.encode_reply(0, err)])

    def _run_lone(self, ctx: Context) -> None:
        """The one-request messages collected this turn, through the node's batch path (one
        loop for a pipelining client's many small messages, as for a BATCH), each answered by
        its own REPLY."""
        requests, clients = self._lone, self._lone_clients
        self._lone, self._lone_clients = [], []
        out, pending = self.out, self.pending
        ctx.deferrable = True  # each lone request has its own REPLY: it may come later
        if len(requests) == 1:  # a sequential client's turn: the batch loop's set-up costs more
            (rid, argv), = requests
            ctx.client, ctx.request_id = clients[0], rid
            before = len(self.node.changes)
            value = self.node.execute(argv, ctx)
            ctx.deferrable = False
            if type(value) is Deferred:
                self._later(clients[0], rid, value)
                return
            out.append([clients[0], codec.encode_reply(rid, value)])
            if len(self.node.changes) != before:
                pending.append(Pending(len(out) - 1, False, [(rid, value)], [0]))
            return
        ctx.deferred = False
        replies, wrote = self.node.execute_batch(requests, ctx, clients)
        ctx.deferrable = False
        base = len(out)
        encode = codec.encode_reply
        if not ctx.deferred:  # the common case: every reply is here, none to look for
            out.extend([[client, encode(rid, value)]
                        for (rid, value), client in zip(replies, clients, strict=True)])
        else:
            out.extend([[client, encode(rid, value) if type(value) is not Deferred else b""]
                        for (rid, value), client in zip(replies, clients, strict=True)])
        for i in wrote:
            pending.append(Pending(base + i, False, [replies[i]], [0]))
        if ctx.deferred:
            self._defer_some(base, replies, clients)

    def _later(self, client: bytes, rid: int, answer: Deferred) -> None:
        """A reply that comes when `answer` resolves (a coordination command): queued then,
        and sent by the next flush (the loop flushes after the consensus group's work)."""
        answer.then(lambda value: self.out.append([client, codec.encode_reply(rid, value)]))

    def _batch_later(self, client: bytes, replies: list, wrote: list[int]) -> None:
        """A BATCH with coordination commands in it: its one reply waits until the last of
        them is answered. Its keyspace writes are in this turn's commit, and a failed commit
        turns their replies into the error (`fail`) before the reply is encoded."""
        owed = [i for i, (_, value) in enumerate(replies) if type(value) is Deferred]
        left = [len(owed), True]  # still owed; still attaching (this turn, before its commit)

        def fill(i: int, value: object) -> None:
            replies[i] = (replies[i][0], value)
            left[0] -= 1
            if not left[0] and not left[1]:
                self.out.append([client, codec.encode_batch_reply(replies)])

        for i in owed:
            replies[i][1].then(lambda value, i=i: fill(i, value))
        left[1] = False
        if not left[0]:  # all answered at once (NO_QUORUM): an ordinary reply of this turn
            self.out.append([client, codec.encode_batch_reply(replies)])
            if wrote:
                self.pending.append(Pending(len(self.out) - 1, True, replies, wrote))
        elif wrote:
            self._held_batches.append((replies, wrote))

    def _defer_some(self, base: int, replies: list, clients: list[bytes]) -> None:
        """The turn's lone replies with Deferred ones among them: those leave the turn's
        list (their slots were placeholders) and come later, on their own. The list is
        rewritten before any is attached: one already resolved (NO_QUORUM, answered at once)
        appends its reply as it is attached, which the rewrite would otherwise drop."""
        keep = [i for i, (_, value) in enumerate(replies) if type(value) is not Deferred]
        moved = {base + i: base + n for n, i in enumerate(keep)}
        self.out[base:] = [self.out[base + i] for i in keep]
        self.pending = [Pending(moved[p.index], p.batch, p.replies, p.wrote)
                        if p.index in moved else p for p in self.pending
                        if p.index < base or p.index in moved]
        for (rid, value), client in zip(replies, clients, strict=True):
            if type(value) is Deferred:
                self._later(client, rid, value)

    def fail(self, exc: KvError) -> None:
        """The turn's commit failed: every reply to a request that wrote becomes `exc`."""
        for replies, wrote in self._held_batches:
            for i in wrote:
                replies[i] = (replies[i][0], exc)
        out = self.out
        for p in self.pending:
            failed = list(p.replies)
            for i in p.wrote:
                failed[i] = (failed[i][0], exc)
            out[p.index][1] = (
                codec.encode_batch_reply(failed) if p.batch else codec.encode_reply(*failed[0])
            )

    def deliver(self, events: list) -> None:
        """WATCH events, (client, request id, event) each, sent after the turn's replies."""
        queued, encode = self.events, codec.encode_event
        for client, rid, event in events:
            queued.append((client, rid, event["cursor"], encode(rid, event)))

    def flush(self) -> None:
        """Send the turn's messages, in order; then WATCH events, and what the history owes
        watchers that are behind."""
        out, self.out = self.out, []
        if self.pending:
            self.pending = []
        if self._held_batches:
            self._held_batches = []
        for frames in out:
            self._send(frames)
        if self.events:
            self._send_events()
        if self.node.watches.backlog:
            self.pump()

    def _send_events(self) -> None:
        """A watcher whose event cannot be sent (its queue is full: it stopped reading) is not
        skipped ahead: the hub marks it behind and the pump sends it that event and the rest
        from the history, in order, once it reads again — or LAGGED if it never catches up."""
        events, self.events = self.events, []
        hub, stalled = self.node.watches, set()
        for client, rid, cursor, body in events:
            if stalled and (client, rid) in stalled:
                continue
            if not self._try_send(client, body):
                stalled.add((client, rid))
                hub.stalled(client, rid, cursor)

    def pump(self) -> None:
        """Send watchers that are behind what the history owes them, up to MAX_PUMP events,
        each until its queue is full."""
        hub, budget = self.node.watches, MAX_PUMP
        encode = codec.encode_event
        for client, rid in hub.behind():
            for event in hub.owed(client, rid):
                if budget == 0 or not self._try_send(client, encode(rid, event)):
                    break
                hub.sent(client, rid, event)
                budget -= 1
        self.pumping = budget == 0

    def _try_send(self, client: bytes, body: bytes) -> bool:
        """Send a WATCH message; False when the client's queue is full or the client gone."""
        try:
            self.router.send(client, _SNDMORE_NOBLOCK)
            self.router.send(body, _NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.node.watches.drop_client(client)  # the client went away
            return False
        return True

    def _send(self, frames: list[bytes]) -> None:
        try:
            # Every reply is [client, body]; two sends beat send_multipart's generic loop.
            self.router.send(frames[0], _SNDMORE_NOBLOCK)
            self.router.send(frames[1], _NOBLOCK)
        except zmq.Again:
            self.counters["dropped_replies"] += 1
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.counters["dropped_replies"] += 1
            self.node.watches.drop_client(frames[0])  # the client went away

    # -- outside the turn -----------------------------------------------------------------

    def drain_monitor(self) -> None:
        while True:
            try:
                event = parse_monitor_message(self.monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.counters["accepted"] += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.counters["disconnected"] += 1
            else:
                self.counters["bad_handshakes"] += 1
                if self.curve_key and event["value"] in KEY_FAILURES:
                    self._key_exchange_failed()

    def _key_exchange_failed(self) -> None:
        """Count, and now and then log, a client-port handshake that failed for want of the
        right keys. ZeroMQ does not say from where (its monitor names our own endpoint)."""
        self.counters["curve_failed"] += 1
        self._curve_unlogged += 1
        now = time.monotonic()
        if now - self._curve_logged < CURVE_LOG_S:
            return
        log.warning("%d CURVE handshake(s) on %s failed since the last such line: a client "
                    "with a wrong server key or without encryption, or a node with another "
                    "cluster secret", self._curve_unlogged, self._endpoint)
        self._curve_logged, self._curve_unlogged = now, 0

    def check_accepts(self, now: float) -> None:
        """Once every ACCEPT_CHECK_S (`now`: monotonic seconds), see whether a connection
        could be accepted: whether a descriptor is left."""
        if now < self._accept_check_at:
            return
        self._accept_check_at = now + ACCEPT_CHECK_S
        try:
            fd = os.open(os.devnull, os.O_RDONLY)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            self._accept_failed(exc.errno, now)
            return
        os.close(fd)

    def _accept_failed(self, error: int, now: float) -> None:
        self.counters["accept_failures"] += 1
        self._accept_unlogged += 1
        if now - self._accept_logged < ACCEPT_LOG_S:
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.error("cannot accept connections on %s: %s (open-file limit %d, hard %d; found so "
                  "in %d check(s) since the last such line) — clients are left waiting: raise "
                  "the limit (ulimit -n, systemd LimitNOFILE) or close idle clients",
                  self._endpoint, os.strerror(error), soft, hard, self._accept_unlogged)
        self._accept_logged, self._accept_unlogged = now, 0

    def heartbeats(self) -> None:
        """Tell every live watcher the stream is alive (a silent one resubscribes). A heartbeat
        that finds the queue full is not missed: the events queued there say as much."""
        encode = codec.encode_event
        for client, rid, beat in self.node.watches.heartbeats():
            self._try_send(client, encode(rid, beat))
        self.flush()

    def close(self) -> None:
        self.router.disable_monitor()
        self.monitor.close(linger=0)
        self.router.close()


def _auth_request(body: bytes) -> tuple[int, list[bytes]] | None:
    """(request id, argv) when `body` is a lone AUTH request; None for anything else."""
    if b"AUTH" not in body[:64].upper():  # cheap: most messages are not AUTH
        return None
    try:
        msg = codec.decode(body)
    except KvError:
        return None
    if type(msg) is codec.Request and msg.argv and msg.argv[0].upper() == b"AUTH":
        return msg.request_id, msg.argv
    return None
