"""The cluster's sockets and its one file: the IO shell around the sans-IO kvd.cluster.cluster core.

The Harmony pattern of the ZeroMQ Guide, one socket kind per direction:

- PUB bound on the gossip port: our writes (one message per loop turn, chunked), heartbeats,
  LEAVE. PUB drops what a slow subscriber cannot take (past SNDHWM); gap repair makes up for it.
- one SUB connected to every member's PUB (reconnects on its own when a member comes back).
- every link to a member we have not heard from for a while is made again (`_relink`):
  ZeroMQ reconnects after a lost connection, but not after a protocol error, and a frame over
  the receiver's MAXMSGSIZE is one. The cluster core keeps frames under the limit
  (Settings.chunk_bytes); this makes sure nothing else can cut a member off for good.
- one DEALER per peer, connected to its client ROUTER port, for requests (JOIN, CATCHUP, SYNC,
  SYNC_PUSH, LEAVE) and their replies. Requests queue (up to SNDHWM) while the connection is
  being made, so the first JOIN is not lost; a stale request that reaches a peer late is
  harmless (answers to a pass or catch-up no longer wanted are ignored, writes are LWW).

Requests from peers arrive on our client ROUTER; kvd.loop hands them to `on_request`.
With a keyring (CURVE on), the PUB is a CURVE server whose ZAP domain admits only cluster
keys, and the SUB and DEALERs are CURVE clients holding a cluster key (kvd.cluster.links, which
also moves a link whose handshake fails on to the keyring's next key pair).
The member list is kept in `members.json` in the data dir, so a restarted node rejoins, and the
last epoch in `epoch`, so a restart after a clock step back still starts a newer stream.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import zmq

from kvd.cluster.cluster import Cluster
from kvd.cluster.links import CurveLinks
from kvd.cluster.membership import Status
from kvd.cluster.peerwire import Dest, Out
from kvd.state.hlc import wall_ms
from shared import codec
from shared.errors import KvError, VersionError
from shared.keyring import Keyring

log = logging.getLogger("kvd.cluster.peers")

MEMBERS_FILE = "members.json"
EPOCH_FILE = "epoch"
MAX_DRAIN = 2048  # peer messages per loop turn
MAX_PEER_MESSAGE = 256 * 1024 * 1024  # default frame limit of the SUB and DEALERs
RELINK_MS = 1000  # how often the links to a silent member are made again
# Requests that get a reply: one unanswered this long means the link to that peer is broken.
ANSWERED = frozenset({codec.MsgType.JOIN, codec.MsgType.CATCHUP, codec.MsgType.SYNC})


def load_members(data_dir: Path) -> list[list]:
    """The members this node knew when it last ran; [] if none or unreadable."""
    try:
        members = json.loads((data_dir / MEMBERS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [m for m in members if isinstance(m, list) and len(m) >= 3
            and all(isinstance(x, str) for x in m[:3])]


def next_epoch(data_dir: Path, now: int) -> int:
    """This run's epoch: `now`, or one past the last run's if the clock stepped back since
    (peers ignore writes of an epoch older than one they saw)."""
    path = data_dir / EPOCH_FILE
    try:
        last = int(path.read_text())
    except (OSError, ValueError):
        last = 0
    epoch = max(now, last + 1)
    tmp = data_dir / (EPOCH_FILE + ".tmp")
    tmp.write_text(str(epoch))
    os.replace(tmp, path)
    return epoch


@functools.lru_cache(maxsize=256)
def _addresses(host: str) -> frozenset[str]:
    """The IP addresses a host name resolves to (none when it does not)."""
    try:
        return frozenset(str(a[4][0]) for a in socket.getaddrinfo(host.strip("[]"), None))
    except (OSError, UnicodeError):
        return frozenset()


def save_members(data_dir: Path, members: list[list]) -> None:
    tmp = data_dir / (MEMBERS_FILE + ".tmp")
    tmp.write_text(json.dumps(members))
    os.replace(tmp, data_dir / MEMBERS_FILE)


class Peers:
    def __init__(self, cluster: Cluster, bind: str, gossip_port: int, data_dir: Path | None,
                 poller: zmq.Poller, hwm: int = 1000,
                 max_message: int = MAX_PEER_MESSAGE, curve: Keyring | None = None) -> None:
        """`hwm`: gossip messages (each up to Settings.gossip_chunk writes) queued per
        subscriber; past it PUB drops and gap repair takes over, so memory stays bounded.
        `max_message`: the frame limit of the SUB and DEALER sockets (config
        `peer_max_message`). `curve`: the cluster's keyring, for CURVE on every link."""
        self.cluster = cluster
        self.max_message = max_message
        self.awaiting: dict[str, int] = {}  # peer address -> ms of its oldest unanswered request
        self.next_relink = 0
        self.data_dir = data_dir
        self._poller = poller
        self.links = CurveLinks(curve) if curve is not None else None
        ctx = zmq.Context.instance()
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, hwm)
        self.pub.setsockopt(zmq.LINGER, 1000)  # LEAVE gets out on a graceful stop
        if self.links is not None:
            self.links.serve(self.pub)
        try:
            self.pub.bind(f"tcp://{bind}:{gossip_port}")
        except zmq.ZMQError as exc:
            self.pub.close(linger=0)
            raise GossipBindError(
                f"gossip port {gossip_port} on {bind} is in use or unusable ({exc.strerror}) "
                "— pick another with --gossip-port"
            ) from None
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, hwm)
        self.sub.setsockopt(zmq.MAXMSGSIZE, max_message)
        self.sub.setsockopt(zmq.RECONNECT_IVL, 200)
        poller.register(self.sub, zmq.POLLIN)
        self.sub_monitor: zmq.Socket | None = None
        if self.links is not None:
            self.sub_monitor = self.links.monitor(self.sub)
            poller.register(self.sub_monitor, zmq.POLLIN)
        self.dealers: dict[str, zmq.Socket] = {}
        self.dealer_monitors: dict[str, zmq.Socket] = {}
        self.subscribed: set[str] = set()
        self._sync_subscriptions()

    # -- in ------------------------------------------------------------------------------

    def sockets(self) -> list[zmq.Socket]:
        return [self.sub, *self.dealers.values()]

    def drain(self, ready: dict, now: int) -> None:
        """Take what the SUB and DEALER sockets hold (bounded per turn)."""
        if self.links is not None:
            self._handshakes(ready, now)
        for address, sock in [("", self.sub), *self.dealers.items()]:
            if sock not in ready:
                continue
            self.awaiting.pop(address, None)
            for _ in range(MAX_DRAIN):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._receive(frames, now, None)

    def _handshakes(self, ready: dict, now: int) -> None:
        """Links whose CURVE handshake failed are made again with the next key pair."""
        links = self.links
        assert links is not None
        if self.sub_monitor in ready:
            seen = [(self._subscribed_as(e), ok) for e, ok in links.events(self.sub_monitor)]
            for endpoint in links.outcomes([s for s in seen if s[0]], now, "gossip"):
                with contextlib.suppress(zmq.ZMQError):
                    self.sub.disconnect(endpoint)
                self._connect_sub(endpoint)
        for address, monitor in list(self.dealer_monitors.items()):
            if monitor not in ready:
                continue
            endpoint = f"tcp://{address}"  # a DEALER's monitor speaks of its one peer
            seen = [(endpoint, ok) for _, ok in links.events(monitor)]
            if links.outcomes(seen, now, "requests"):
                self._drop_dealer(address)  # the next request links with the next pair

    def _subscribed_as(self, seen: str) -> str:
        """The SUB endpoint (tcp://host:port, as connected) a monitor event names, perhaps by
        its resolved address; "" if none. A member's host name is resolved only here, once
        per process (cached): for handshake events, never per message."""
        host, _, port = seen.removeprefix("tcp://").rpartition(":")
        host = host.strip("[]")
        for endpoint in self.subscribed:
            theirs, _, their_port = endpoint.rpartition(":")
            if their_port == port and (theirs == host or host in _addresses(theirs)):
                return f"tcp://{endpoint}"
        return ""

    def _connect_sub(self, endpoint: str) -> None:
        if self.links is not None:
            self.links.client(self.sub, endpoint)
        self.sub.connect(endpoint)

    def on_request(self, msg: codec.Peer, now: int, reply: Callable[[bytes], None]) -> None:
        """A peer's request that came in on the client ROUTER."""
        self.route(self.cluster.receive(msg, now), reply)

    def _receive(self, frames: list[bytes], now: int,
                 reply: Callable[[bytes], None] | None) -> None:
        if len(frames) != 1:
            self.cluster.count_bad("malformed")
            return
        try:
            msg = codec.decode(frames[0])
        except VersionError:
            self.cluster.count_bad("bad_version")
            return
        except KvError:
            self.cluster.count_bad("malformed")
            return
        if not isinstance(msg, codec.Peer):
            self.cluster.count_bad("malformed")
            return
        self.route(self.cluster.receive(msg, now), reply)

    # -- out -----------------------------------------------------------------------------

    def route(self, outs: list[Out], reply: Callable[[bytes], None] | None = None) -> None:
        for out in outs:
            frame = codec.encode_peer(out.msg)
            if out.dest is Dest.PUBLISH:
                self.pub.send(frame, zmq.NOBLOCK)  # never blocks: PUB drops silently
            elif out.dest is Dest.REQUEST:
                self._send(self._dealer(out.to), frame, "dropped_requests")
                if out.msg.type in ANSWERED:
                    self.awaiting.setdefault(out.to, wall_ms())
            elif reply is not None:
                reply(frame)

    def _send(self, sock: zmq.Socket, frame: bytes, counter: str) -> None:
        try:
            sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:  # the peer is down or slow: the request is retried on a timer
            self.cluster.counters[counter] += 1

    def _dealer(self, address: str) -> zmq.Socket:
        sock = self.dealers.get(address)
        if sock is None:
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 500)
            sock.setsockopt(zmq.SNDHWM, 1000)
            sock.setsockopt(zmq.RCVHWM, 1000)
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_message)
            sock.setsockopt(zmq.RECONNECT_IVL, 200)
            endpoint = f"tcp://{address}"
            if self.links is not None:
                self.links.client(sock, endpoint)
                monitor = self.dealer_monitors[address] = self.links.monitor(sock)
                self._poller.register(monitor, zmq.POLLIN)
            sock.connect(endpoint)
            self._poller.register(sock, zmq.POLLIN)
            self.dealers[address] = sock
        return sock

    # -- time and membership ---------------------------------------------------------------

    def tick(self, now: int) -> None:
        self.route(self.cluster.tick(now))
        self._sync_subscriptions()
        overdue = self.cluster.join_overdue(now)
        if overdue:
            log.warning("no member answered our JOIN within %g s (%s): they are down, or the "
                        "cluster secret probably differs — every node needs the same "
                        "--cluster-secret-file, and a node without one cannot join an "
                        "encrypted cluster (nor one with a secret a plain one); still trying",
                        self.cluster.s.join_warn_ms / 1000, ", ".join(overdue))
        for peer, offset in self.cluster.clock_warnings(now):
            log.warning("the clock of %s is %+d ms off ours (bound max_clock_offset_ms = %d): "
                        "concurrent writes favour the faster clock — sync the clocks (NTP)",
                        peer, offset, self.cluster.s.max_clock_offset_ms)
        if now >= self.next_relink:
            self.next_relink = now + RELINK_MS
            self._relink(now)

    def _relink(self, now: int) -> None:
        """Make the links again to every member we have not heard from past the suspicion
        threshold (its PUB, its ROUTER), and to every peer that leaves our requests
        unanswered. A link that merely waits for the member to come back loses nothing by
        it; one that ZeroMQ gave up on (a protocol error) comes back only this way. So a
        member held dead keeps being tried, and once it hears us it refutes and is back."""
        core = self.cluster
        silent, late = core.s.timers.suspect_after_ms, 2 * core.s.request_timeout_ms
        for m in core.ms.others():
            if m.status is Status.LEFT:
                continue
            if now - m.last_seen > silent:
                if m.gossip in self.subscribed:
                    endpoint = f"tcp://{m.gossip}"
                    # ZeroMQ may have dropped the endpoint itself: then connecting is enough.
                    with contextlib.suppress(zmq.ZMQError):
                        self.sub.disconnect(endpoint)
                    self._connect_sub(endpoint)
                self._drop_dealer(m.address)
        for address in [a for a, t in self.awaiting.items() if now - t > late]:
            self._drop_dealer(address)

    def _drop_dealer(self, address: str) -> None:
        """Close the DEALER to a peer; the next request makes a fresh one."""
        self.awaiting.pop(address, None)
        sock = self.dealers.pop(address, None)
        if sock is not None:
            self._poller.unregister(sock)
            self._close_monitor(address, sock)
            sock.close(linger=0)

    def _close_monitor(self, address: str, sock: zmq.Socket) -> None:
        monitor = self.dealer_monitors.pop(address, None)
        if monitor is not None:
            self._poller.unregister(monitor)
            sock.disable_monitor()
            monitor.close(linger=0)

    def _sync_subscriptions(self) -> None:
        wanted = self.cluster.gossip_endpoints()
        for endpoint in wanted - self.subscribed:
            self._connect_sub(f"tcp://{endpoint}")
        for endpoint in self.subscribed - wanted:
            self.sub.disconnect(f"tcp://{endpoint}")
        self.subscribed = wanted
        ms = self.cluster.ms
        if ms.changed and self.data_dir is not None:
            ms.changed = False
            try:
                save_members(self.data_dir, [m.wire() for m in ms.others()])
            except OSError as exc:
                log.warning("cannot save the member list: %s", exc)

    def leave(self, now: int) -> None:
        self.route(self.cluster.leave(now))

    def close(self) -> None:
        for address, sock in self.dealers.items():
            self._poller.unregister(sock)
            self._close_monitor(address, sock)
            sock.close()
        self._poller.unregister(self.sub)
        if self.sub_monitor is not None:
            self._poller.unregister(self.sub_monitor)
            self.sub.disable_monitor()
            self.sub_monitor.close(linger=0)
        self.sub.close(linger=0)
        self.pub.close()


class GossipBindError(KvError):
    code = "BIND"
