"""The ZAP handler: who may finish a CURVE handshake with this node, answered inside the loop.

ZeroMQ asks (RFC 27, ZAP) over an inproc REP socket, `inproc://zeromq.zap.01`, before it lets a
CURVE handshake on one of our server sockets (the client ROUTER, the gossip PUB) complete. The
loop polls that socket like any other and calls `answer`: no thread, no lock, and a handshake
waits at most one loop turn. The decision itself is shared.keyring.decide (a pure function);
this module only reads requests and writes replies.

pyzmq's Authenticator binds the socket (`start`) and knows the reply layout; its own
`handle_zap_message` is a coroutine built for certificate folders and address lists, so the
loop calls `answer` instead, synchronously.

Must be started before any CURVE server socket binds: a handshake that finds no handler is let
through by libzmq.
"""

from __future__ import annotations

import logging
import time

import zmq
from zmq.auth.base import VERSION, Authenticator

from shared.keyring import Keyring

log = logging.getLogger("kvd.doors.zap")

MAX_ANSWER = 256  # requests answered per call: a flood of handshakes cannot stall a turn
LOG_EVERY_S = 10.0  # refused handshakes are logged at most this often (with a count)


class Gatekeeper(Authenticator):
    def __init__(self, keyring: Keyring, context: zmq.Context | None = None) -> None:
        super().__init__(context or zmq.Context.instance(), log=log)
        self.keyring = keyring
        self.refused = 0
        self._unlogged = 0
        self._logged_at = -LOG_EVERY_S

    def info(self) -> dict:
        return {"curve_refused": self.refused}

    def answer(self, now: float | None = None) -> None:
        """Answer every queued ZAP request (up to MAX_ANSWER)."""
        sock = self.zap_socket
        for _ in range(MAX_ANSWER):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._answer_one(frames, time.monotonic() if now is None else now)

    def _answer_one(self, frames: list[bytes], now: float) -> None:
        # version, request id, domain, address, routing id, mechanism, credentials...
        if len(frames) < 6:
            if len(frames) >= 2:
                self._reply(frames[1], b"400", b"Not enough frames", b"")
            return
        version, request_id, domain, address, _, mechanism = frames[:6]
        if version != VERSION:
            self._reply(request_id, b"400", b"Invalid version", b"")
            return
        key = frames[6] if mechanism == b"CURVE" and len(frames) == 7 else None
        if key is None:
            allowed, why = False, "not a CURVE handshake"
        else:
            allowed, why = self.keyring.decide(domain, key)
        if allowed:
            self._reply(request_id, b"200", b"OK", why.encode())
            return
        self._reply(request_id, b"400", why.encode(), b"")
        self.refused += 1
        self._refused(address.decode(errors="replace"), domain.decode(errors="replace"), why,
                      now)

    def _reply(self, request_id: bytes, status: bytes, text: bytes, user_id: bytes) -> None:
        self.zap_socket.send_multipart([VERSION, request_id, status, text, user_id, b""])

    def _refused(self, address: str, domain: str, why: str, now: float) -> None:
        self._unlogged += 1
        if now - self._logged_at < LOG_EVERY_S:
            return
        log.warning("refused a CURVE handshake from %s on %s: %s (%d refused since the last "
                    "such line) — a process without the cluster secret tried to link as a peer",
                    address, domain, why, self._unlogged)
        self._logged_at, self._unlogged = now, 0
