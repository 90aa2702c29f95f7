"""The HTTP door's stand-in while the node starts: every request gets a 503 and `Retry-After`.

The log replays before the loop exists, and a big log takes seconds. With the HTTP port closed
meanwhile, a load balancer's health check sees "connection refused", which it cannot tell from
a dead node. So the door's listening socket is bound before the replay and this stand-in
answers on it (`/health`: `{"status": "starting", ...}`; any other route: the JSON error
`STARTING`) until `hand_over` stops it and gives that same socket to the real door
(kvd.doors.http). Connections still in the backlog are then the door's to answer: the port is
never closed in between, so there is no rebind and no race for it.

A thread, unlike the rest of the doors: the replay is one blocking call in the log layer, which
knows no sockets. The thread touches nothing of the node (it answers constants) and is joined
before the loop starts, so the loop remains the only thread that touches the node.

With TLS on the door the stand-in does not answer (it would need the TLS session of the door):
it holds the port bound, and clients wait in the backlog until the door serves them.
"""

from __future__ import annotations

import json
import selectors
import socket
import ssl
import threading
import time

import h11

from kvd.doors.tcp import listen

RETRY_AFTER_S = 1
HEAD_LIMIT = 16 * 1024  # as the door's: a request head larger than that is not waited for
LINGER_S = 1.0  # an answered connection's unread request is drained this long (see _answer)
SELECT_S = 0.1  # how often the stand-in looks at its deadlines
READ_CHUNK = 16 * 1024


class _Conn:
    __slots__ = ("sock", "h11", "since", "answered")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
        self.since = time.monotonic()
        self.answered = False


class StartingDoor:
    """Bind the HTTP port now and answer 503 on it until `hand_over`."""

    def __init__(self, bind: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.listener = listen(bind, port, "--http-port")
        self._stop = threading.Event()
        self._conns: dict[int, _Conn] = {}
        self._thread: threading.Thread | None = None
        self._taken = False
        if tls is None:
            self._wake_r, self._wake_w = socket.socketpair()
            self._thread = threading.Thread(target=self._serve, name="kvd-http-starting",
                                            daemon=True)
            self._thread.start()

    def __enter__(self) -> StartingDoor:
        return self

    def __exit__(self, *_: object) -> None:
        self._halt()
        if not self._taken:
            self.listener.close()

    def hand_over(self) -> socket.socket:
        """Stop answering and give the listening socket to the real door."""
        self._halt()
        self._taken = True
        return self.listener

    def _halt(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._wake_w.send(b"x")
        self._thread.join()
        self._thread = None
        self._wake_r.close()
        self._wake_w.close()

    # -- the thread ------------------------------------------------------------------------

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(SELECT_S):
                    if key.fileobj is self.listener:
                        self._accept(sel)
                    elif key.fileobj is not self._wake_r:
                        self._read(sel, key.data)
                self._expire(sel)
        finally:
            for conn in list(self._conns.values()):  # those mid-request still hear why
                if not conn.answered:
                    self._read(sel, conn)  # its request may be here, unread: answer it
                if conn.sock.fileno() in self._conns and not conn.answered:
                    self._answer(conn, b"")
                self._drop(sel, conn)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, say: the client is left in the backlog
                return
            sock.setblocking(False)
            conn = _Conn(sock)
            self._conns[sock.fileno()] = conn
            sel.register(sock, selectors.EVENT_READ, conn)

    def _read(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if not conn.answered:
                self._answer(conn, b"")
            self._drop(sel, conn)
            return
        if conn.answered:
            return  # draining what the client sent after its request head
        conn.h11.receive_data(data)
        try:
            event = conn.h11.next_event()
        except h11.RemoteProtocolError:
            event = None  # not HTTP, or too large: it still hears why, as a route would
        if isinstance(event, h11.Request):
            self._answer(conn, event.target, event.method == b"HEAD")
        elif event is not h11.NEED_DATA:
            self._answer(conn, b"")

    def _answer(self, conn: _Conn, target: bytes, head: bool = False) -> None:
        """Send the 503 and close our side; the client's unread body (a PUT's) is drained
        for LINGER_S: closing with unread input sends RST, which can destroy the answer."""
        try:
            conn.sock.send(response(target, head))  # a few hundred bytes: the buffer takes them
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.answered = True
        conn.since = time.monotonic()

    def _expire(self, sel: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if now - conn.since > LINGER_S:
                if not conn.answered:  # a head that trickles: answered as it stands
                    self._answer(conn, b"")
                else:
                    self._drop(sel, conn)

    def _drop(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        if self._conns.pop(conn.sock.fileno(), None) is not None:
            sel.unregister(conn.sock)
            conn.sock.close()


def response(target: bytes, head: bool = False) -> bytes:
    """The whole 503: `/health` in its own shape, every other route as a JSON error."""
    if target.split(b"?", 1)[0] == b"/health":
        doc: dict = {"status": "starting", "reason": "the node is replaying its log"}
    else:
        doc = {"error": {"code": "STARTING", "message": "the node is starting (replaying its "
                         f"log): retry in {RETRY_AFTER_S}s"}}
    body = json.dumps(doc).encode()
    lines = [b"HTTP/1.1 503 Service Unavailable", b"server: kvd",
             b"content-type: application/json", b"content-length: %d" % len(body),
             b"retry-after: %d" % RETRY_AFTER_S, b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head else body)
