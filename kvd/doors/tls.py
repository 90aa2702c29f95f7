"""TLS for the TCP doors, sans-IO: ciphertext in, plaintext out; plaintext in, ciphertext out.

The protocol is OpenSSL's, through the standard library's `SSLContext.wrap_bio`: an
`SSLObject` between two `ssl.MemoryBIO`s, one for what the peer sent and one for what goes
back. Nothing here touches a socket or blocks, so the daemon keeps its one loop and its one
thread; kvd.doors.tcp moves the bytes.

    feed(ciphertext) -> plaintext      handshake first, then records; raises TlsError
    encrypt(plaintext) -> ciphertext   whatever must leave, handshake and tickets included
    data_to_send() -> ciphertext       what the handshake (or an alert) left to send
    close() -> ciphertext              our close_notify, once

`TlsLink` holds a connection's session and the plaintext decrypted from what its socket
brought, and gives it to the door with a socket's `recv` contract (kvd.doors.tcp).

Invariants: after `feed` returns, every whole record that arrived has been read, so no
plaintext waits inside OpenSSL between two calls (a door that has read everything `feed`
returned has nothing left to poll for); plaintext handed to `encrypt` before the handshake is
done is held and sent once it is (OpenSSL cannot write before the handshake ends).
"""

from __future__ import annotations

import ssl
from collections import deque
from pathlib import Path

from shared.errors import KvError

MIN_VERSION = ssl.TLSVersion.TLSv1_2
RECORD = 16 * 1024  # the most plaintext one TLS record carries: what one read can return


class TlsError(Exception):
    """The peer broke TLS (a failed handshake included): the connection is over. `reason` is
    OpenSSL's word for it, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TlsSetupError(KvError):
    code = "CONFIG"


def server_context(cert: Path, key: Path, ca: Path | None = None,
                   alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A server context: TLS 1.2 or later; with `ca`, only clients whose certificate that CA
    signed get through (CERT_REQUIRED); without it no client certificate is asked for."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSION
    # Client-initiated renegotiation (TLS 1.2) makes the server redo the costly half of a
    # handshake on demand: a cheap way to burn a single-threaded server's CPU.
    context.options |= ssl.OP_NO_RENEGOTIATION
    asked: list[bool] = []

    def no_passphrase() -> bytes:
        # Without this OpenSSL would prompt on the terminal: a detached daemon would hang.
        asked.append(True)
        return b""

    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except (OSError, ssl.SSLError) as exc:
        why = ("the key is protected by a passphrase: give kvd the key without it (openssl "
               "pkey -in KEY -out PLAIN-KEY)") if asked else \
            f"{_why(exc)} (both must be PEM, the key the certificate's)"
        raise TlsSetupError(f"cannot use --tls-cert {cert} with --tls-key {key}: {why}") \
            from None
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"cannot use --tls-ca {ca}: {_why(exc)} (it must hold PEM "
                                "certificates)") from None
        context.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


# OpenSSL's reasons for the failures an operator meets most, in words (the rest as they are).
_REASONS = {
    "WRONG_VERSION_NUMBER": "not TLS (a plaintext client on the TLS port?)",
    "HTTP_REQUEST": "a plain HTTP request on the TLS port",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate (--tls-ca asks one)",
    "CERTIFICATE_VERIFY_FAILED": "the client's certificate is not one --tls-ca signed",
    "UNSUPPORTED_PROTOCOL": "the client speaks only TLS older than 1.2",
}


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or str(exc)
        return _REASONS.get(reason, reason)
    return exc.strerror or str(exc)


class TlsSession:
    """One TLS connection's state. Server side for the doors; the tests also make the client
    side with it (`server_side=False`), so two sessions can talk through memory."""

    __slots__ = ("_in", "_out", "_ssl", "established", "peer_closed", "_early", "_closed",
                 "_failed")

    def __init__(self, context: ssl.SSLContext, server_side: bool = True,
                 server_hostname: str | None = None) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_side=server_side,
                                     server_hostname=server_hostname)
        self.established = False
        self.peer_closed = False  # the peer sent close_notify: no more plaintext comes
        self._early: list[bytes] = []  # plaintext to send once the handshake is done
        self._closed = False  # our close_notify is queued
        self._failed = False

    def feed(self, data: bytes) -> bytes:
        """Ciphertext from the peer in; the plaintext it completes out (b"" while the
        handshake goes on, or while a record is still partial)."""
        if self._failed:
            return b""
        self._in.write(data)
        if not self.established and not self._handshake():
            return b""
        return self._read()

    def _handshake(self) -> bool:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as exc:  # OpenSSL queued its alert: data_to_send() has it
            self._failed = True
            raise TlsError(_why(exc)) from None
        self.established = True
        if self._early:
            early, self._early = b"".join(self._early), []
            self._write(early)
        return True

    def _read(self) -> bytes:
        chunks = []
        ssl_obj, incoming = self._ssl, self._in
        while True:
            try:
                chunk = ssl_obj.read(RECORD)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLError as exc:
                self._failed = True
                raise TlsError(_why(exc)) from None
            if not chunk:
                self.peer_closed = True
                break
            chunks.append(chunk)
            # Nothing left to decrypt: stop here instead of paying for SSLWantReadError.
            if not incoming.pending and not ssl_obj.pending():
                break
        return b"".join(chunks)

    def encrypt(self, data: bytes) -> bytes:
        """Plaintext to send in; the ciphertext to put on the wire out."""
        if self._closed or self._failed:
            return b""
        if not self.established:
            self._early.append(data)
            return self._out.read()
        self._write(data)
        return self._out.read()

    def _write(self, data: bytes) -> None:
        try:
            self._ssl.write(data)  # the whole of it: a memory BIO never pushes back
        except ssl.SSLError as exc:
            self._failed = True
            raise TlsError(_why(exc)) from None

    def data_to_send(self) -> bytes:
        return self._out.read()

    def close(self) -> bytes:
        """Our close_notify (once, and only on a session that is still sound)."""
        if self._closed or self._failed or not self.established:
            self._closed = True
            return self._out.read()
        self._closed = True
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # ours is queued; we do not wait for the peer's answer
        except ssl.SSLError:
            pass  # the peer is gone or broke the session: there is nothing to say
        return self._out.read()

    @property
    def version(self) -> str | None:
        return self._ssl.version()


class TlsLink:
    """A TLS connection's session and the plaintext decrypted this turn, which the door reads
    with a socket's `recv` contract: data, b"" once the peer is done, BlockingIOError when
    there is none now."""

    __slots__ = ("session", "plain", "eof", "since", "heard")

    def __init__(self, session: TlsSession, since: float) -> None:
        self.session = session
        self.plain: deque[bytes] = deque()
        self.eof = False  # the peer closed the socket or sent close_notify
        self.since = since  # accepted at (monotonic): the handshake has until the timeout
        self.heard = False  # the peer sent something (a bare connect-and-close is no failure)

    def recv(self, n: int) -> bytes:
        plain = self.plain
        if plain:
            chunk = plain.popleft()
            if len(chunk) > n:
                plain.appendleft(chunk[n:])
                return chunk[:n]
            return chunk
        if self.eof:
            return b""
        raise BlockingIOError
