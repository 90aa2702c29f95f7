"""CURVE on the peer links: which key pair each link uses, and the next one when it fails.

Every node serves the current key pair of its keyring (shared.keyring) on its client ROUTER
and gossip PUB, and links to its peers as a CURVE client with a pair of the same keyring: its
client key and the server key it expects. A link starts with the current pair. While a new
secret is rolled out, nodes serve different current pairs, and a link made with ours fails its
handshake at once (the peer cannot open our HELLO, or its ZAP refuses our key); the socket
monitor says so, and the link is made again with the next pair of the keyring, round and round
until one works. The ZeroMQ options a connect() uses are fixed at that call, so one SUB can
hold links made with different pairs.

With one secret there is nothing else to try: a failing link is logged (the peer's secret
differs) and left to ZeroMQ's own retries and the peer layer's relinking.
"""

from __future__ import annotations

import logging

import zmq
from zmq.utils.monitor import parse_monitor_message

from shared.keyring import GOSSIP_DOMAIN, Keyring

log = logging.getLogger("kvd.cluster.links")

FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
          | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
WARN_EVERY_MS = 60_000  # a link that fails with every key is logged at most this often


class CurveLinks:
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.index: dict[str, int] = {}  # endpoint (tcp://host:port) -> pair in use
        self.tried: dict[str, int] = {}  # ... -> pairs that failed in a row
        self.warned: dict[str, int] = {}  # ... -> ms of the last warning
        self.failures = 0

    def serve(self, sock: zmq.Socket, domain: bytes = GOSSIP_DOMAIN) -> None:
        """Make `sock` (before it binds) a CURVE server with the current pair."""
        pair = self.keyring.current
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, domain)

    def client(self, sock: zmq.Socket, endpoint: str) -> None:
        """Set the pair for `endpoint` on `sock`, just before it connects there."""
        pair = self.keyring.pairs[self.index.get(endpoint, 0)]
        sock.setsockopt(zmq.CURVE_SERVERKEY, pair.public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)

    @staticmethod
    def monitor(sock: zmq.Socket) -> zmq.Socket:
        return sock.get_monitor_socket(FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED)

    @staticmethod
    def events(monitor: zmq.Socket) -> list[tuple[str, bool]]:
        """A monitor's queued handshake outcomes, in order: (endpoint, succeeded). ZeroMQ
        names the endpoint as connected to at first, and by its resolved address after a
        reconnect: the caller maps it back to the endpoint it connected."""
        out = []
        while True:
            try:
                event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return out
            out.append((event["endpoint"].decode(errors="replace"),
                        event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED))

    def outcomes(self, seen: list[tuple[str, bool]], now: int, what: str) -> set[str]:
        """Take handshake outcomes (endpoints as we connected them); return the endpoints to
        link again with their next pair. `what` names the link for the log."""
        again: set[str] = set()
        for endpoint, succeeded in seen:
            if succeeded:
                self.tried.pop(endpoint, None)
            elif endpoint not in again and self.failed(endpoint, now, what):
                # Once per endpoint per read: older failures in the queue were of the pair
                # we are leaving already.
                again.add(endpoint)
        return again

    def failed(self, endpoint: str, now: int, what: str) -> bool:
        """A handshake to `endpoint` failed: move it to the next pair. True when there is
        another pair to try (the link should be made again)."""
        self.failures += 1
        n = len(self.keyring.pairs)
        tried = self.tried[endpoint] = self.tried.get(endpoint, 0) + 1
        if tried >= n and now - self.warned.get(endpoint, -WARN_EVERY_MS) >= WARN_EVERY_MS:
            self.warned[endpoint] = now
            log.warning("the CURVE handshake with %s (%s) fails with every key of our "
                        "keyring: its cluster secret probably differs from ours — every node "
                        "needs the same --cluster-secret-file", endpoint, what)
        if n == 1:
            return False
        self.index[endpoint] = (self.index.get(endpoint, 0) + 1) % n
        return True
