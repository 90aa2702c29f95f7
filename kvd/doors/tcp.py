"""What the Redis and HTTP doors share: a listening TCP socket and non-blocking connections,
polled with the loop's poller.

A door built on `TcpDoor` says how to make a connection (`_open`), what to do with the bytes
that arrive (`_recv`), when to stop reading a connection that does not read its replies
(`_reading`) and whether to give up on it (`_too_slow`). The plumbing here keeps each
connection's poll flags in step with what it needs: readable while it may send requests,
writable while replies wait to be sent.

TLS (a door given an `ssl.SSLContext`) is done here, once for both doors, with the sans-IO
session of kvd.doors.tls. A door reads its connection through `conn.recv`, which is the
socket's own `recv` on a plain door (nothing in between) and, on a TLS door, the plaintext
that `_recv_tls` decrypted from what the socket brought (`TlsLink.recv`, with the socket's
contract). `conn.out` holds ciphertext on a TLS door: replies are encrypted as they are
flushed, so the output limits and the poll flags work on the bytes that really wait. Which
path a door takes is chosen once, when it is made: a plain door runs the code it always ran.
Every whole record read is decrypted and handed to the door in the same turn, so no plaintext
waits in memory for a poll that would never come.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import time
from collections import Counter

import zmq

from kvd.doors.native import BindError
from kvd.doors.tls import TlsError, TlsLink, TlsSession
from kvd.state.context import Context

POLLIN, POLLOUT = int(zmq.POLLIN), int(zmq.POLLOUT)  # ints: enum Flags cost per test
ACCEPT_PER_TURN = 64
LOG_EVERY_S = 10.0
TLS_READ_CHUNK = 256 * 1024
TLS_READ_PER_TURN = 1024 * 1024  # ciphertext read from one connection per turn: fairness
HANDSHAKE_TIMEOUT_S = 10.0  # a TLS handshake not done by then is dropped (slow or stuck)


class Connection:
    __slots__ = ("sock", "fd", "addr", "out", "replies", "flags", "closing", "recv", "tls")

    def __init__(self, sock: socket.socket, addr: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.out = bytearray()  # encoded (and on a TLS door encrypted), not yet sent
        self.replies: list[bytes] = []  # this turn's, sent after the commit
        self.flags = POLLIN
        self.closing = False  # send what is queued, then close
        self.recv = sock.recv  # what the door reads: the socket, or TlsLink.recv
        self.tls: TlsLink | None = None


class TcpDoor:
    def __init__(self, bind: str, port: int, flag: str, log: logging.Logger,
                 tls: ssl.SSLContext | None = None,
                 listener: socket.socket | None = None) -> None:
        """`listener`: a socket already bound to the port (by kvd.doors.starting), taken over
        as it is, so that the port never closes between the two."""
        self.log = log
        self.counters: Counter[str] = Counter()
        self.conns: dict[int, Connection] = {}
        self.touched: dict[int, Connection] = {}  # connections with replies this turn
        self.poller: zmq.Poller | None = None
        self.listener = listener if listener is not None else listen(bind, port, flag)
        self.port = self.listener.getsockname()[1]
        self._lfd = self.listener.fileno()
        self._logged: dict[str, float] = {}
        self.tls = tls
        self.handshake_timeout_s = HANDSHAKE_TIMEOUT_S
        self.handshaking: dict[int, Connection] = {}  # TLS connections, in accept order
        # Requests already read wait for a turn that no socket will bring (the HTTP door's,
        # behind a response that was held): the loop runs one at once.
        self.due = False
        # Chosen once: a plain door reads with the door's own `_recv`, nothing in between.
        self._reader = self._recv if tls is None else self._recv_tls

    def attach(self, poller: zmq.Poller) -> None:
        self.poller = poller
        poller.register(self._lfd, POLLIN)

    def read(self, ready: dict, ctx: Context) -> None:
        lfd, reader = self._lfd, self._reader
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
                reader(conn, ctx)

    def flush(self) -> None:
        if not self.touched:
            return  # a turn that was not ours: nothing to send
        touched, self.touched = self.touched, {}
        self._flushing()
        if self.tls is not None:
            self._flush_tls(touched)
            return
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

    def _owing(self, conn: Connection) -> bool:
        """Whether replies are still to come on `conn` (a coordination command's, which
        answers later): a connection that is closing waits for them."""
        return False

    def tick(self, now: float) -> None:
        """Housekeeping (the loop's monotonic `now`): handshakes that took too long end."""
        if self.handshaking:
            self._expire_handshakes(now)

    # -- TLS ------------------------------------------------------------------------------

    def _recv_tls(self, conn: Connection, ctx: Context) -> None:
        """Decrypt what the socket brought, then let the door read it all (see the module)."""
        link = conn.tls
        assert link is not None
        if not self._decrypt(conn, link):
            return
        out = link.session.data_to_send()  # the handshake's own bytes, session tickets
        if out:
            conn.out += out
            self.touched[conn.fd] = conn
        if not link.session.established:
            if link.eof and link.heard:
                self._tls_failed(conn, "the client closed mid-handshake")
            elif link.eof:
                self._close(conn)  # a port probe: connected, said nothing, left
            return
        if self.handshaking.pop(conn.fd, None) is not None:
            self.log.debug("TLS (%s) with %s on port %d", link.session.version, conn.addr,
                           self.port)
        recv = self._recv
        while (link.plain or link.eof) and not conn.closing and conn.fd in self.conns:
            recv(conn, ctx)  # the door reads at least once a call, as from a socket
            if link.eof and not link.plain:
                break  # it has seen the end; a closed socket polls readable again if need be

    def _decrypt(self, conn: Connection, link: TlsLink) -> bool:
        """Read the socket (up to the turn's share) into `link.plain`; False if TLS broke."""
        got = 0
        while got < TLS_READ_PER_TURN:
            try:
                data = conn.sock.recv(TLS_READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                link.eof = True
                break
            got += len(data)
            link.heard = True
            try:
                plain = link.session.feed(data)
            except TlsError as exc:
                self._tls_failed(conn, exc.reason)
                return False
            if plain:
                link.plain.append(plain)
            if len(data) < TLS_READ_CHUNK:
                break  # drained, most likely: spare the recv that would only raise (poll tells)
        if link.session.peer_closed:
            link.eof = True
        return True

    def _flush_tls(self, touched: dict[int, Connection]) -> None:
        for conn in touched.values():
            session = conn.tls.session  # type: ignore[union-attr]
            try:
                if conn.replies:
                    conn.out += session.encrypt(b"".join(conn.replies))
                    conn.replies = []
                if conn.closing and not self._owing(conn):
                    conn.out += session.close()  # close_notify: the end is not a cut
            except TlsError as exc:
                self.log.debug("TLS error towards %s on port %d: %s", conn.addr, self.port,
                               exc.reason)
                self._close(conn)
                continue
            self._send(conn)

    def _tls_failed(self, conn: Connection, reason: str) -> None:
        """The peer broke TLS: send OpenSSL's alert if it has one, then close; count and log
        a failed handshake (rate-limited at info, every one at debug)."""
        link = conn.tls
        assert link is not None
        if link.session.established:
            self.log.debug("TLS error from %s on port %d: %s", conn.addr, self.port, reason)
        else:
            self.counters["tls_handshake_failures"] += 1
            message = "TLS handshake with %s on port %d failed: %s"
            if not self.say("tls", message + "; more in the next %ds are counted in INFO, "
                            "not logged", conn.addr, self.port, reason, int(LOG_EVERY_S),
                            level=logging.INFO):
                self.log.debug(message, conn.addr, self.port, reason)
        alert = link.session.data_to_send()
        if not alert:
            self._close(conn)
            return
        link.plain.clear()
        conn.out += alert
        conn.closing = True
        self.touched[conn.fd] = conn

    def _expire_handshakes(self, now: float) -> None:
        deadline = now - self.handshake_timeout_s
        while self.handshaking:  # in accept order, so the first one in time ends the pass
            conn = next(iter(self.handshaking.values()))
            if conn.tls.since > deadline:  # type: ignore[union-attr]
                return
            self.counters["tls_handshake_failures"] += 1
            self.say("tls", "TLS handshake with %s on port %d failed: not done within %gs",
                     conn.addr, self.port, self.handshake_timeout_s, level=logging.INFO)
            self._close(conn)

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
        if (conn.closing and not conn.out and not self._owing(conn)) or self._too_slow(conn):
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
            if self.tls is not None:
                conn.tls = TlsLink(TlsSession(self.tls), time.monotonic())
                conn.recv = conn.tls.recv
                self.handshaking[conn.fd] = conn
            self.conns[conn.fd] = conn
            self.counters["accepted"] += 1
            assert self.poller is not None
            self.poller.register(conn.fd, POLLIN)

    def _close(self, conn: Connection) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        self._forget(conn)
        self.touched.pop(conn.fd, None)
        if conn.tls is not None:
            self.handshaking.pop(conn.fd, None)
        if self.poller is not None and conn.flags:
            self.poller.unregister(conn.fd)
        conn.flags = 0
        conn.sock.close()

    def say(self, what: str, message: str, *args: object, level: int = logging.WARNING) -> bool:
        """Log at most once per LOG_EVERY_S for each kind of trouble; say whether it did."""
        now = time.monotonic()
        if now - self._logged.get(what, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[what] = now
            self.log.log(level, message, *args)
            return True
        return False

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
