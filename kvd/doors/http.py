"""The HTTP door: REST, simple curl routes, live changes over SSE, /health and /metrics.

A protocol adapter the loop drives like the other doors: its listening socket and its
connections (non-blocking) are polled with every other socket. HTTP/1.1 is h11's (sans-IO: it
turns bytes into requests and responses into bytes, keep-alive, chunked bodies and
`100-continue` included); the routes are kvd.doors.httproutes. In a turn the door reads each
ready connection, runs its whole requests through the node, and queues the responses; the loop
commits, then `flush` sends them in order. A write's response never leaves before its log
record, and a turn's failed commit turns those responses into 503s.

Bounds: a request line or header block over 16 KiB is refused (431, 414 for a long target),
a body over `max_value_size` is refused from its Content-Length (413) before it is read, a
request whose headers do not arrive within HEADER_TIMEOUT_S is closed (slowloris), and a
connection whose responses pile up past OUTPUT_LIMIT is closed (an SSE reader that stopped
reading: EventSource comes back with Last-Event-ID and resumes where it stopped).

A coordination route (kvd.doors.httpcoord) answers once the Raft group has applied its command,
turns later. Its connection is held meanwhile: h11 parses no further request until the response
is sent, so pipelined requests wait behind it in order, and the connection is not read from.
When the answer comes (during the group's work after a turn, or its tick), the response is
queued, and the requests already buffered behind it run at the start of the next turn, which
`due` asks the loop for: they may write, and a write's response must follow its commit.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time

import h11

from kvd.doors.httpcoord import Held
from kvd.doors.httproutes import (
    Response,
    Router,
    Stream,
    error_response,
    sse_event,
    sse_expired,
)
from kvd.doors.tcp import Connection, TcpDoor
from kvd.state.context import Context
from kvd.state.node import Change, Node
from shared.errors import KvError

log = logging.getLogger("kvd.doors.http")

READ_CHUNK = 64 * 1024
MAX_HEADER = 16 * 1024
MAX_TARGET = 8 * 1024
HEADER_TIMEOUT_S = 10.0
OUTPUT_LIMIT = 32 * 1024 * 1024
HEARTBEAT_S = 1.0
SERVER = [("server", "kvd")]
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            412: b"Precondition Failed", 413: b"Content Too Large", 414: b"URI Too Long",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
            503: b"Service Unavailable"}


class Conn(Connection):
    __slots__ = ("h11", "body", "request", "started", "stream", "refused", "held")

    def __init__(self, sock: socket.socket, addr: str) -> None:
        super().__init__(sock, addr)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER)
        self.body = bytearray()
        self.request: h11.Request | None = None
        self.started = time.monotonic()  # when the request being read began
        self.stream: Stream | None = None  # an SSE subscription, once the response started
        self.refused = False  # the request was answered early (413): discard its body
        self.held: Held | None = None  # a coordination response still to come


class HttpDoor(TcpDoor):
    def __init__(self, node: Node, bind: str, port: int, router: Router,
                 header_timeout_s: float = HEADER_TIMEOUT_S,
                 tls: ssl.SSLContext | None = None,
                 listener: socket.socket | None = None) -> None:
        super().__init__(bind, port, "--http-port", log, tls, listener)
        self.node = node
        self.header_timeout_s = header_timeout_s
        self.handshake_timeout_s = header_timeout_s  # a TLS handshake is a slowloris too
        self.router = router
        self.streams: set[Conn] = set()
        self.pending: list[tuple[Conn, int]] = []
        self.resumable: dict[int, Conn] = {}  # answered at last, requests buffered behind
        self._next_heartbeat = 0.0
        node.info_sources.append(self.info)

    def info(self) -> dict:
        return {"http_port": self.port, "http_clients": len(self.conns),
                "http_streams": len(self.streams),
                "http_requests": self.counters["requests"],
                "http_bad_requests": self.counters["bad_requests"],
                "http_dropped_slow": self.counters["dropped_slow"],
                "http_timeouts": self.counters["timeouts"],
                "http_tls": self.tls is not None,
                "http_tls_handshake_failures": self.counters["tls_handshake_failures"]}

    # -- a turn: read, (the loop commits), flush --------------------------------------------

    def read(self, ready: dict, ctx: Context) -> None:
        if self.resumable:
            self._resume(ctx)
        super().read(ready, ctx)

    def _resume(self, ctx: Context) -> None:
        """Run what came in behind responses that were held (see the module)."""
        conns, self.resumable, self.due = self.resumable, {}, False
        for conn in conns.values():
            if self.conns.get(conn.fd) is conn and conn.held is None:
                self.touched[conn.fd] = conn
                self._run_events(conn, ctx)

    def _recv(self, conn: Conn, ctx: Context) -> None:
        try:
            data = conn.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.touched[conn.fd] = conn
        if conn.h11.their_state is h11.IDLE and not conn.h11.trailing_data[0]:
            conn.started = time.monotonic()  # a new request begins: its clock starts now
        if conn.stream is not None:  # an SSE reader says nothing more; EOF ends it
            if not data:
                self._close(conn)
            return
        conn.h11.receive_data(data)
        self._run_events(conn, ctx)

    def _run_events(self, conn: Conn, ctx: Context) -> None:
        try:
            self._events(conn, ctx)
        except h11.RemoteProtocolError as exc:
            self.counters["bad_requests"] += 1
            status = exc.error_status_hint
            if status == 431 and conn.request is None and _long_target(conn):
                status = 414
            self._answer(conn, error_response(status, _CODES.get(status, "BAD_REQUEST"),
                                              _why(status, exc)))
            conn.closing = True
        except Exception:  # the edge: a bug costs this connection, never the node
            self.counters["internal_errors"] += 1
            log.exception("an HTTP request failed unexpectedly (%s); its connection is closed",
                          conn.addr)
            conn.replies.append(_plain(error_response(500, "INTERNAL", "internal error: the "
                                                      "connection is closed")))
            conn.closing = True

    def _events(self, conn: Conn, ctx: Context) -> None:
        while not conn.closing and conn.stream is None and conn.held is None:
            event = conn.h11.next_event()
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
                    conn.h11.start_next_cycle()
                    conn.started = time.monotonic()
                    continue
                return
            if isinstance(event, h11.Request):
                self._start(conn, event)
            elif isinstance(event, h11.Data):
                if conn.refused:
                    continue
                if len(conn.body) + len(event.data) > self.node.max_value:  # chunked: unannounced
                    self._refuse(conn, _too_large(self.node.max_value))
                    continue
                conn.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                if conn.refused:
                    conn.refused = False
                    continue
                self._dispatch(conn, ctx)
            elif isinstance(event, h11.ConnectionClosed):
                conn.closing = True

    def _start(self, conn: Conn, request: h11.Request) -> None:
        self.counters["requests"] += 1
        conn.request, conn.body = request, bytearray()
        if sum(len(k) + len(v) + 4 for k, v in request.headers) > MAX_HEADER:
            # h11 bounds only a header block still incomplete: one that came whole is judged here
            self._refuse(conn, error_response(431, "HEADERS_TOO_LARGE", _why(431, None)))
            return
        if len(request.target) > MAX_TARGET:
            self._refuse(conn, error_response(414, "URI_TOO_LONG", "the request target is "
                                              f"over {MAX_TARGET} bytes"))
            return
        length = dict(request.headers).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.node.max_value:
            self._refuse(conn, _too_large(self.node.max_value))
            return
        if conn.h11.they_are_waiting_for_100_continue:
            conn.replies.append(conn.h11.send(h11.InformationalResponse(status_code=100,
                                                                        headers=SERVER)))

    def _refuse(self, conn: Conn, response: Response) -> None:
        """Answer before the body is read, then close: the rest is never buffered."""
        response.headers.append(("connection", "close"))
        self._answer(conn, response)
        conn.closing = True
        conn.refused = True

    def _dispatch(self, conn: Conn, ctx: Context) -> None:
        request = conn.request
        assert request is not None
        if len(conn.body) > self.node.max_value:  # chunked: the size was not announced
            self._answer(conn, error_response(413, "TOO_LARGE", "the body is over the value "
                                              "limit (config key max_value_size)"))
            return
        headers = {k.lower(): v for k, v in request.headers}
        ctx.source, ctx.client = conn.addr, b""  # a stateless door: no MULTI of its own
        before = len(self.node.changes)
        result = self.router.handle(request.method.decode("latin-1"), request.target,
                                    headers, bytes(conn.body), ctx)
        conn.body = bytearray()
        if isinstance(result, Stream):
            self._open_stream(conn, result)
            return
        if isinstance(result, Held):
            self._hold(conn, result)
            return
        self._answer(conn, result)
        if len(self.node.changes) != before:
            self.pending.append((conn, len(conn.replies) - 1))

    def _hold(self, conn: Conn, held: Held) -> None:
        """Answer when the Raft group does; until then h11 parses nothing more here."""
        conn.held = held

        def answer(value: object) -> None:
            if self.conns.get(conn.fd) is not conn:  # closed (its descriptor maybe reused)
                return
            conn.held = None
            self._answer(conn, held.response(value))
            data, closed = conn.h11.trailing_data
            if data or closed:  # requests (or the end) behind it: the next turn runs them
                self.resumable[conn.fd] = conn
                self.due = True

        held.answer.then(answer)

    def _answer(self, conn: Conn, response: Response) -> None:
        headers = [*SERVER, ("content-type", response.content_type),
                   ("content-length", str(len(response.body))), *response.headers]
        try:
            data = conn.h11.send(h11.Response(status_code=response.status, headers=headers,
                                              reason=_REASONS.get(response.status, b"")))
            data += conn.h11.send(h11.Data(data=response.body)) if response.body else b""
            data += conn.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:  # the request was broken past answering: plain bytes
            data, conn.closing = _plain(response), True
        if conn.h11.our_state is h11.MUST_CLOSE:  # `connection: close`, or an HTTP/1.0 client
            conn.closing = True
        conn.replies.append(data)
        self.touched[conn.fd] = conn

    def _open_stream(self, conn: Conn, stream: Stream) -> None:
        headers = [*SERVER, ("content-type", "text/event-stream"),
                   ("cache-control", "no-cache"), ("x-accel-buffering", "no")]
        out = conn.h11.send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
        if stream.reset:
            out += conn.h11.send(h11.Data(data=b"event: reset\ndata: {\"reason\": \"the "
                                          b"history no longer holds what was asked for: the "
                                          b"current state follows\"}\n\n"))
        chunk = b"".join(sse_event(ev) for ev in stream.first) or b": watching\n\n"
        out += conn.h11.send(h11.Data(data=chunk))
        conn.replies.append(out)
        conn.stream = stream
        self.streams.add(conn)
        self.touched[conn.fd] = conn

    def fail(self, exc: KvError) -> None:
        body = error_response(503, exc.code, exc.message)
        for conn, i in self.pending:
            conn.replies[i] = _plain(body)  # h11 already framed the OK; replace the bytes
            conn.closing = True  # ... and end the connection: its h11 state moved on

    def committed(self, changes: list[Change]) -> None:
        if not self.streams:
            return
        last = self.node.watches.cursor  # the hub numbered these changes just before us
        first = last - len(changes) + 1
        for conn in self.streams:
            prefix = conn.stream.prefix  # type: ignore[union-attr]
            data = b"".join(
                sse_event({"cursor": first + i, "key": c.key, "value": c.entry.value,
                           "deleted": c.entry.value is None, "origin": c.entry.origin})
                for i, c in enumerate(changes) if c.key.startswith(prefix))
            if data:
                conn.replies.append(conn.h11.send(h11.Data(data=data)))
                self.touched[conn.fd] = conn

    def expired(self, keys: list[bytes]) -> None:
        """`expired` events: not changes of the history (the expiry was written with the
        value), so they carry no `id:` and a reader's resume point stays its last change."""
        if not self.streams:
            return
        cursor = self.node.watches.cursor
        for conn in self.streams:
            prefix = conn.stream.prefix  # type: ignore[union-attr]
            data = b"".join(sse_expired(key, cursor) for key in keys if key.startswith(prefix))
            if data:
                conn.replies.append(conn.h11.send(h11.Data(data=data)))
                self.touched[conn.fd] = conn

    def _flushing(self) -> None:
        self.pending = []

    def tick(self, now: float) -> None:
        """Heartbeats to SSE readers; connections that trickle their headers (or their TLS
        handshake) are closed."""
        super().tick(now)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_S
            for conn in self.streams:
                conn.replies.append(conn.h11.send(h11.Data(data=b": heartbeat\n\n")))
                self.touched[conn.fd] = conn
        for conn in list(self.conns.values()):
            if conn.stream is None and now - conn.started > self.header_timeout_s \
                    and _mid_request(conn):
                self.counters["timeouts"] += 1
                self._close(conn)
        self.flush()

    # -- sockets (kvd.doors.tcp): what this door says -------------------------------------

    def _reading(self, conn: Conn) -> bool:  # type: ignore[override]
        return not conn.closing and conn.held is None  # held: h11 would only buffer it

    def _owing(self, conn: Conn) -> bool:  # type: ignore[override]
        return conn.held is not None

    def _too_slow(self, conn: Conn) -> bool:  # type: ignore[override]
        if len(conn.out) > OUTPUT_LIMIT:  # an SSE reader that stopped reading: it resumes
            self.counters["dropped_slow"] += 1
            self.say("slow", "closed an HTTP client that stopped reading (%s): %d bytes unsent",
                     conn.addr, len(conn.out))
            return True
        return False

    def _open(self, sock: socket.socket, addr: str) -> Conn:
        return Conn(sock, addr)

    def _forget(self, conn: Conn) -> None:  # type: ignore[override]
        self.streams.discard(conn)
        self.resumable.pop(conn.fd, None)


def _mid_request(conn: Conn) -> bool:
    """Whether a request has begun to arrive and not all of it has."""
    state = conn.h11.their_state
    return state is h11.SEND_BODY or (state is h11.IDLE and bool(conn.h11.trailing_data[0]))


def _plain(response: Response) -> bytes:
    """A whole response with `connection: close`, framed by hand (no h11 state involved)."""
    head = [b"HTTP/1.1 %d %b" % (response.status, _REASONS.get(response.status, b"Error")),
            b"server: kvd", b"content-type: " + response.content_type.encode(),
            b"content-length: %d" % len(response.body), b"connection: close"]
    head += [k.encode() + b": " + v.encode() for k, v in response.headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + response.body


def _long_target(conn: Conn) -> bool:
    data = conn.h11.trailing_data[0]
    line = data.split(b"\r\n", 1)[0]
    return len(line) > MAX_TARGET


_CODES = {413: "TOO_LARGE", 414: "URI_TOO_LONG", 431: "HEADERS_TOO_LARGE"}


def _too_large(limit: int) -> Response:
    return error_response(413, "TOO_LARGE", f"the body is over the value limit of {limit} "
                          "bytes (config key max_value_size)")


def _why(status: int, exc: h11.RemoteProtocolError | None) -> str:
    if status == 431:
        return f"the request's headers are over {MAX_HEADER} bytes"
    if status == 414:
        return f"the request target is over {MAX_TARGET} bytes"
    return f"not a valid HTTP/1.1 request: {exc}"
