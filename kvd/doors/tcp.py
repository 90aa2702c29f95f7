"""What the Redis and HTTP doors share: a listening TCP socket and non-blocking connections,
polled with the loop's poller.

A door built on `TcpDoor` says how to make a connection (`_open`), what to do with the bytes
that arrive (`_recv`), when to stop reading a connection that does not read its replies
(`_reading`) and whether to give up on it (`_too_slow`). The plumbing here keeps each
connection's poll flags in step with what it needs: readable while it may send requests,
writable while replies wait to be sent.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections import Counter

import zmq

from kvd.doors.native import BindError
from kvd.state.context import Context

POLLIN, POLLOUT = int(zmq.POLLIN), int(zmq.POLLOUT)  # ints: enum Flags cost per test
ACCEPT_PER_TURN = 64
LOG_EVERY_S = 10.0


class Connection:
    __slots__ = ("sock", "fd", "addr", "out", "replies", "flags", "closing")

    def __init__(self, sock: socket.socket, addr: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.out = bytearray()  # encoded, not yet sent
        self.replies: list[bytes] = []  # this turn's, sent after the commit
        self.flags = POLLIN
        self.closing = False  # send what is queued, then close


class TcpDoor:
    def __init__(self, bind: str, port: int, flag: str, log: logging.Logger) -> None:
        self.log = log
        self.counters: Counter[str] = Counter()
        self.conns: dict[int, Connection] = {}
        self.touched: dict[int, Connection] = {}  # connections with replies this turn
        self.poller: zmq.Poller | None = None
        self.listener = listen(bind, port, flag)
        self.port = self.listener.getsockname()[1]
        self._lfd = self.listener.fileno()
        self._logged: dict[str, float] = {}

    def attach(self, poller: zmq.Poller) -> None:
        self.poller = poller
        poller.register(self._lfd, POLLIN)

    def read(self, ready: dict, ctx: Context) -> None:
        lfd = self._lfd
        for fd, events in ready.items():
            if type(fd) is not int:
                continue
            if fd == lfd:
                self._accept()
                continue
            conn = self.conns.get(fd)
            if conn is None:
                continue
            if events & POLLOUT:
                self._send(conn)
            if events & ~POLLOUT and conn.flags & POLLIN and conn.fd in self.conns:
                self._recv(conn, ctx)

    def flush(self) -> None:
        if not self.touched:
            return  # a turn that was not ours: nothing to send
        touched, self.touched = self.touched, {}
        self._flushing()
        for conn in touched.values():
            if conn.replies:
                conn.out += b"".join(conn.replies)
                conn.replies = []
            self._send(conn)

    # -- what a door says ---------------------------------------------------------------

    def _open(self, sock: socket.socket, addr: str) -> Connection | None:
        raise NotImplementedError

    def _recv(self, conn: Connection, ctx: Context) -> None:
        raise NotImplementedError

    def _flushing(self) -> None:
        """The turn's replies are about to leave (its commit is done)."""

    def _reading(self, conn: Connection) -> bool:
        return not conn.closing

    def _too_slow(self, conn: Connection) -> bool:
        return False

    def _forget(self, conn: Connection) -> None:
        """The connection is closing: drop what the door keeps about it."""

    # -- sockets --------------------------------------------------------------------------

    def _send(self, conn: Connection) -> None:
        if conn.out:
            try:
                sent = conn.sock.send(conn.out)
                del conn.out[:sent]
            except BlockingIOError:
                pass
            except OSError:
                self._close(conn)
                return
        if (conn.closing and not conn.out) or self._too_slow(conn):
            self._close(conn)
            return
        flags = (POLLIN if self._reading(conn) else 0) | (POLLOUT if conn.out else 0)
        if flags != conn.flags and self.poller is not None:
            conn.flags = flags
            if flags:
                self.poller.register(conn.fd, flags)
            else:
                self.poller.unregister(conn.fd)

    def _accept(self) -> None:
        for _ in range(ACCEPT_PER_TURN):
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                self.counters["accept_errors"] += 1
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self.say("fds", "cannot accept a client on port %d: out of file descriptors "
                             "(raise ulimit -n)", self.port)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = self._open(sock, f"{addr[0]}:{addr[1]}")
            if conn is None:
                continue
            self.conns[conn.fd] = conn
            self.counters["accepted"] += 1
            assert self.poller is not None
            self.poller.register(conn.fd, POLLIN)

    def _close(self, conn: Connection) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        self._forget(conn)
        self.touched.pop(conn.fd, None)
        if self.poller is not None and conn.flags:
            self.poller.unregister(conn.fd)
        conn.flags = 0
        conn.sock.close()

    def say(self, what: str, message: str, *args: object) -> None:
        """Log at most once per LOG_EVERY_S for each kind of trouble."""
        now = time.monotonic()
        if now - self._logged.get(what, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[what] = now
            self.log.warning(message, *args)

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn)
        if self.poller is not None:
            self.poller.unregister(self._lfd)
        self.listener.close()


def listen(bind: str, port: int, flag: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise BindError(f"port {port} on {bind} is in use — stop what holds it or pick "
                            f"{flag} (0 closes this door)") from None
        raise BindError(f"cannot listen on {bind}:{port} ({flag}): {exc.strerror}") from None
    sock.listen(511)
    sock.setblocking(False)
    return sock
