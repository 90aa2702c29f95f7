"""The Redis door: RESP2/RESP3 on a TCP port, so redis-cli, redis-benchmark, redis-py and
telnet talk to kv unchanged.

A protocol adapter the loop drives like the native door: its listening socket and its
connections (non-blocking) are polled with every other socket; in a turn the door reads what
each ready connection has sent, runs the requests through the node (runs of plain commands
through `Node.execute_batch`, one loop for a pipeline), and queues the replies; the loop
commits the turn's writes, then `flush` sends them, in order. No reply leaves before the write
it acknowledges is in the log, and one fsync covers everyone's writes of the turn.

Bounds: a connection's unread input is parsed as it arrives (respwire refuses oversize
declarations before buffering them); a connection whose replies pile up past `OUTPUT_LIMIT`
is not read from until it drains (it stops costing memory, as TCP's own flow control would);
a subscriber that stops reading its notifications is dropped at the limit, as Redis's
client-output-buffer-limit does for pub/sub, and logged. `max_clients` caps connections.

Coordination commands (CGET, CAS, LOCK, ...) answer later, once the Raft group has applied
them (a Deferred). Their place in the connection's replies is held (kvd.doors.replyline) and
every reply behind them waits, so a pipeline's replies stay in order; a connection that asked
to close (QUIT) or closed its end gets them before it is closed. They run one at a time, never
in the batch loop, and are refused inside MULTI: EXEC is atomic on this node, Raft commands
are not. A connection with more than MAX_HELD replies waiting is not read from until they go.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl

from kvd.doors import respsession as rs
from kvd.doors.replyline import ReplyLine
from kvd.doors.respinfo import info_text
from kvd.doors.respwire import (
    NULL_ARRAY,
    ProtocolViolation,
    RequestParser,
    Verbatim,
    encode,
    error_line,
    text,
    wire,
)
from kvd.doors.respwire import unknown_command as unknown
from kvd.doors.tcp import Connection, TcpDoor
from kvd.state import coordcmds
from kvd.state.context import Context, Deferred
from kvd.state.node import Change, Node
from shared.commands import COMMANDS
from shared.errors import KvError

log = logging.getLogger("kvd.doors.resp")

READ_CHUNK = 256 * 1024
READ_PER_TURN = 1024 * 1024  # bytes read from one connection per turn: fairness
OUTPUT_LIMIT = 64 * 1024 * 1024
_OK = b"+OK\r\n"
_SUBSCRIPTION_CHANGES = {b"SUBSCRIBE", b"PSUBSCRIBE", b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"RESET"}
MAX_HELD = 10_000  # replies waiting behind a coordination reply before reading stops
_COORDINATION = {name.encode() for name in coordcmds.LATER}


class Conn(Connection):
    __slots__ = ("session", "parser", "line")

    def __init__(self, sock: socket.socket, addr: str, session: rs.Session,
                 max_bulk: int) -> None:
        super().__init__(sock, addr)
        self.session = session
        self.parser = RequestParser(max_bulk)
        self.line = ReplyLine()  # replies waiting behind a coordination command's


class RespDoor(TcpDoor):
    def __init__(self, node: Node, bind: str, port: int, max_clients: int = 10_000,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(bind, port, "--resp-port", log, tls)
        self.node = node
        self.max_clients = max_clients
        self.pending: list[tuple[Conn, int]] = []  # replies of this turn that wrote
        self.subscribers: set[Conn] = set()  # connections with a (P)SUBSCRIBE
        self._ids = 0
        self._plain: dict[bytes, int] = {}  # raw name -> Redis arity, for node commands
        self._later: dict[bytes, int] = {}  # ... for coordination commands (never batched)
        self.owing: dict[int, Conn] = {}  # connections with a coordination reply to come
        self.env = rs.Env(node, {}, {"maxclients": str(max_clients), "save": "",
                                     "appendonly": "yes", "databases": "1",
                                     "port": str(self.port)}, self._info)
        node.info_sources.append(self.info)

    def info(self) -> dict:
        return {"resp_port": self.port, "resp_clients": len(self.conns),
                "resp_maxclients": self.max_clients,
                "resp_connections_received": self.counters["accepted"],
                "resp_rejected_connections": self.counters["rejected"],
                "resp_protocol_errors": self.counters["protocol_errors"],
                "resp_dropped_slow_subscribers": self.counters["dropped_slow"],
                "resp_internal_errors": self.counters["internal_errors"],
                "resp_tls": self.tls is not None,
                "resp_tls_handshake_failures": self.counters["tls_handshake_failures"]}

    # -- a turn: read, (the loop commits), flush --------------------------------------------

    def _recv(self, conn: Conn, ctx: Context) -> None:
        got, closed = 0, False
        while got < READ_PER_TURN:
            try:
                data = conn.recv(READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            conn.parser.feed(data)
            got += len(data)
            if len(data) < READ_CHUNK and conn.tls is None:
                # Drained, most likely: spare the recv that would only raise (poll tells when
                # more comes). Not over TLS: there the next recv costs no syscall, and it is
                # what says the client sent close_notify, which no poll would tell.
                break
        try:
            requests = conn.parser.requests()
        except ProtocolViolation as exc:
            # As Redis: the requests read before the bad one are run and answered, then the
            # error, then the connection is closed.
            self.counters["protocol_errors"] += 1
            self._run_guarded(conn, exc.requests, ctx)
            conn.closing = True
            conn.replies.append(b"-%b\r\n" % exc.line.encode("latin-1"))
            self.touched[conn.fd] = conn
            requests = []
        if requests:
            self._run_guarded(conn, requests, ctx)
        if closed or conn.session.closing:  # the client went away, or asked to (QUIT)
            conn.closing = True
            self.touched[conn.fd] = conn

    def _run_guarded(self, conn: Conn, requests: list[list[bytes]], ctx: Context) -> None:
        if not requests:
            return
        self.touched[conn.fd] = conn
        try:
            self._run_all(conn, requests, ctx)
        except Exception:  # the edge: a bug costs this connection, never the node
            self.counters["internal_errors"] += 1
            log.exception("a Redis request failed unexpectedly (%s); its connection is "
                          "closed", conn.session.addr)
            conn.replies.append(b"-ERR internal error: the connection is closed\r\n")
            conn.closing = True

    def _run_all(self, conn: Conn, requests: list[list[bytes]], ctx: Context) -> None:
        s, plain = conn.session, self._plain
        batch: list[list] = []
        # Only a command run one at a time (MULTI, SUBSCRIBE, QUIT, ...) changes whether the
        # next can join a batch: asked again after each of those, not for every request.
        if s.closing:
            return
        batching = s.multi is None and not s.subscribed
        for argv in requests:
            arity = plain.get(argv[0])
            if arity is not None and batching:
                n = len(argv)
                if n == arity or (arity < 0 and n >= -arity):
                    batch.append([0, argv])
                    continue
            if batch:
                self._run_batch(conn, batch, ctx)
                batch = []
            self._run_one(conn, argv, ctx)
            if s.closing:
                return
            batching = s.multi is None and not s.subscribed
        if batch:
            self._run_batch(conn, batch, ctx)

    def _run_batch(self, conn: Conn, batch: list[list], ctx: Context) -> None:
        # No client: the node's MULTI (the native door's) is not this door's.
        ctx.user, ctx.source, ctx.client = conn.session.user, conn.session.addr, b""
        if len(batch) == 1:  # a client one request at a time: the batch loop's set-up costs more
            before = len(self.node.changes)
            replies = [(0, self.node.execute(batch[0][1], ctx))]
            wrote = [0] if len(self.node.changes) != before else []
        else:
            replies, wrote = self.node.execute_batch(batch, ctx)
        out, proto = conn.replies, conn.session.proto
        base = len(out)
        for (_, value), (_, argv) in zip(replies, batch, strict=True):
            if value == "OK":
                out.append(_OK)
            elif type(value) is bytes:
                out.append(b"$%d\r\n%b\r\n" % (len(value), value))
            elif isinstance(value, KvError):
                out.append(b"-%b\r\n" % wire(error_line(value, text(argv[0]))))
            else:
                out.append(encode(value, proto))
        self.pending.extend((conn, base + i) for i in wrote)

    def _run_one(self, conn: Conn, argv: list[bytes], ctx: Context) -> None:
        s = conn.session
        name = argv[0].upper()
        before = len(self.node.changes)
        if s.proto == 2 and s.subscribed and name not in rs.WHILE_SUBSCRIBED:
            reply: object = rs.RespError(
                f"ERR Can't execute '{argv[0].decode('utf-8', 'replace').lower()}': only "
                "(P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this "
                "context")
        elif s.multi is not None and name not in rs.NOT_QUEUED:
            reply = self._queue(s, argv, name)
        elif name == b"PING" and s.subscribed and s.proto == 2 and len(argv) <= 2:
            reply = [b"pong", argv[1] if len(argv) > 1 else b""]
        else:
            reply = self._dispatch(s, argv, name, ctx, deferrable=True)
            if type(reply) is Deferred:
                self._hold(conn, reply, name)
                return
            if name in _COORDINATION and isinstance(reply, KvError):
                reply.redis = None  # kv's own command: kv's words say what to do, not Redis's
        if isinstance(reply, list) and reply and isinstance(reply[0], rs.Push):
            conn.replies.extend(encode(p, s.proto) for p in reply)  # one per channel
        else:
            conn.replies.append(encode(reply, s.proto) if not isinstance(reply, KvError)
                                else b"-%b\r\n" % wire(error_line(reply, text(name))))
        if len(self.node.changes) != before:
            self.pending.append((conn, len(conn.replies) - 1))
        if name in _SUBSCRIPTION_CHANGES:
            (self.subscribers.add if s.subscribed else self.subscribers.discard)(conn)

    def _dispatch(self, s: rs.Session, argv: list[bytes], name: bytes, ctx: Context,
                  deferrable: bool = False) -> object:
        """One command, run now: the session's own, or the node's (via the command table).
        `deferrable`: a coordination command may answer later (a Deferred)."""
        own = rs.SESSION_COMMANDS.get(name)
        arity = own[0] if own else self._arity(argv[0])
        if name == b"EXEC":
            arity = 1
        refused = None
        if arity is None:
            refused = unknown(argv)
        elif len(argv) != arity and not (arity < 0 and len(argv) >= -arity):
            refused = rs.RespError(f"ERR wrong number of arguments for "
                                   f"'{name.lower().decode()}' command")
        if refused is not None:
            if name == b"EXEC":  # Redis aborts the transaction, whatever was wrong
                rs.discard_all(s)
                return rs.RespError("EXECABORT Transaction discarded because of: "
                                    + refused.redis.removeprefix("ERR "))  # type: ignore
            if s.multi is not None:
                s.multi_failed = True  # a refused command fails the transaction
            return refused
        if self.node.locked and (own or name == b"EXEC"):
            refused = rs.may_run(s, name, argv, self.node)
            if refused is not None:
                return refused
        if name == b"EXEC":
            return self._exec(s, ctx)
        if own:
            return own[1](s, argv, self.env)
        ctx.user, ctx.source, ctx.client = s.user, s.addr, b""
        ctx.deferrable = deferrable
        try:
            return self.node.execute(argv, ctx)
        finally:
            ctx.deferrable = False  # the turn's context goes on to other requests and doors

    def _arity(self, raw: bytes) -> int | None:
        arity = self._plain.get(raw) or self._later.get(raw)
        if arity is None:
            command = COMMANDS.get(text(raw).upper())
            if command is None or command.redis_arity is None \
                    or raw.upper() in rs.NOT_FOR_THE_NODE:
                return None
            later = command.name in coordcmds.LATER
            arity = (self._later if later else self._plain)[raw] = command.redis_arity
        return arity

    def _hold(self, conn: Conn, answer: Deferred, name: bytes) -> None:
        """Keep the reply's place in line; fill it when the Raft group answers (the loop
        flushes after the group's work, and `flush` lets out what is then in order)."""
        later = conn.line.hold(len(conn.replies))
        self.owing[conn.fd] = conn
        proto, command = conn.session.proto, text(name)

        def fill(value: object) -> None:
            later.data = (b"-%b\r\n" % wire(error_line(value, command))
                          if isinstance(value, KvError) else encode(value, proto))
            if self.conns.get(conn.fd) is conn:  # not closed (its descriptor maybe reused)
                self.touched[conn.fd] = conn

        answer.then(fill)

    def _queue(self, s: rs.Session, argv: list[bytes], name: bytes) -> object:
        own = rs.SESSION_COMMANDS.get(name)
        arity = own[0] if own else self._arity(argv[0])
        n = len(argv)
        if arity is None:
            s.multi_failed = True
            return unknown(argv)
        if name in _COORDINATION:  # as Redis's no-multi commands: refused, EXEC aborts
            s.multi_failed = True
            return rs.RespError(f"ERR Command not allowed inside a transaction: "
                                f"{text(name)} goes through the Raft group, which EXEC "
                                "cannot make atomic with this node's keyspace — send it "
                                "outside MULTI")
        if n != arity and not (arity < 0 and n >= -arity):
            s.multi_failed = True
            return rs.RespError(f"ERR wrong number of arguments for '{name.lower().decode()}' "
                                "command")
        s.multi.append(argv)  # type: ignore[union-attr]
        return "QUEUED"

    def _exec(self, s: rs.Session, ctx: Context) -> object:
        queued = s.multi
        why = rs.exec_abort(s)
        if isinstance(why, KvError):
            return why
        if why is not None and rs.spoiled(why, self.node):  # a WATCHed key changed
            return NULL_ARRAY
        # The loop runs one turn at a time: nothing else touches the node until this ends.
        return [self._dispatch(s, argv, argv[0].upper(), ctx) for argv in queued or []]

    def fail(self, exc: KvError) -> None:
        """The turn's commit failed: every reply to a request that wrote becomes `exc`."""
        line = b"-%b\r\n" % error_line(exc).encode()
        for conn, i in self.pending:
            conn.replies[i] = line

    def committed(self, changes: list[Change]) -> None:
        """Keyspace notifications for the turn's changes (local, replicated and repaired)."""
        if self.subscribers:
            self._notify([(c.key, b"del" if c.entry.value is None else b"set") for c in changes])

    def _notify(self, events: list[tuple[bytes, bytes]]) -> None:
        for conn in self.subscribers:
            s = conn.session
            for key, event in events:
                for push in rs.notices(s, key, event):
                    conn.replies.append(encode(push, s.proto))
            if conn.replies:
                self.touched[conn.fd] = conn

    def expired(self, keys: list[bytes]) -> None:
        if self.subscribers:
            self._notify([(key, b"expired") for key in keys])

    def _flushing(self) -> None:
        if self.pending:
            self.pending = []

    def flush(self) -> None:
        if self.owing:
            self._line_up()
        super().flush()

    def _line_up(self) -> None:
        """Connections owed a coordination reply: this turn's replies queue behind it, and
        what is in order goes (the commit is done: rewriting by position is over)."""
        for conn in list(self.owing.values()):
            line = conn.line
            conn.replies = line.release(conn.replies)
            if conn.replies:
                self.touched[conn.fd] = conn
            if not line.owing:
                del self.owing[conn.fd]

    # -- sockets (kvd.doors.tcp): what this door says -------------------------------------

    def _reading(self, conn: Conn) -> bool:  # type: ignore[override]
        # A client whose replies pile up is not read from until they drain: its memory stays
        # bounded and every other client is served (TCP's flow control does the rest).
        return len(conn.out) <= OUTPUT_LIMIT and len(conn.line) <= MAX_HELD \
            and not conn.closing

    def _owing(self, conn: Conn) -> bool:  # type: ignore[override]
        return conn.line.owing

    def _too_slow(self, conn: Conn) -> bool:  # type: ignore[override]
        if len(conn.out) > OUTPUT_LIMIT and conn.session.subscribed:
            self.counters["dropped_slow"] += 1
            self.say("slow", "dropped a subscriber that stopped reading (%s): %d bytes of "
                     "notifications unsent", conn.addr, len(conn.out))
            return True
        return False

    def _open(self, sock: socket.socket, addr: str) -> Conn | None:
        if len(self.conns) >= self.max_clients:
            self.counters["rejected"] += 1
            with contextlib.suppress(OSError):  # it is being turned away either way
                if self.tls is None:  # a TLS client would read plaintext as a broken record
                    sock.send(b"-ERR max number of clients reached\r\n")
            sock.close()
            return None
        self._ids += 1
        local = sock.getsockname()
        session = rs.Session(self._ids, addr, f"{local[0]}:{local[1]}", sock.fileno())
        conn = Conn(sock, addr, session, self.node.max_value + 1024 * 1024)
        self.env.sessions[session.id] = session
        return conn

    def _forget(self, conn: Conn) -> None:  # type: ignore[override]
        self.env.sessions.pop(conn.session.id, None)
        self.subscribers.discard(conn)
        self.owing.pop(conn.fd, None)  # what comes later has nowhere to go: dropped

    def _info(self, sections: list[bytes]) -> object:
        now = self.node.clock.time_ms()
        info = self.node.info(now)
        wanted = {s.lower() for s in sections}
        expires = 0
        if not wanted or wanted & {b"keyspace", b"all", b"everything", b"default"}:
            expires = self.node.expiring(now)
        return Verbatim(info_text(info, len(self.conns), expires, sections))
