"""The cluster: membership, replication streams and repair tied into one sans-IO core.

`Cluster` takes peer messages, the node's committed changes and the time, and returns `Out`s:
what to publish on the gossip PUB socket, what to send to a peer's ROUTER (by address), and
what to answer the peer whose request is being handled. kvd.cluster.peers moves the bytes;
the tests' simulator (tests/sim.py) moves them in memory with a fake clock. Gap repair and
anti-entropy live in kvd.cluster.repair (the `repair` field), the message bodies' checks and
shapes in kvd.cluster.peerwire.

Safety: every message must carry our cluster name (checked here) and protocol version (checked
by the codec); gossip and heartbeats are taken only from known members, requests from anyone in
the cluster (JOIN is how one becomes known). Anything else is dropped and counted; a malformed
body is rejected before any of it is applied.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from kvd.cluster.clockskew import ClockOffsets
from kvd.cluster.membership import Member, Membership, Status
from kvd.cluster.peerwire import (
    STATUS,
    Out,
    Outbox,
    check,
    get_field,
    item_size,
    items_from_wire,
    split,
    wire_item,
)
from kvd.cluster.repair import Repair
from kvd.cluster.replication import INF, Replication, stable_from_wire
from kvd.cluster.settings import Settings
from kvd.state.hlc import stamp_ms
from kvd.state.node import Change, Node
from kvd.state.store import NBUCKETS
from shared.codec import MsgType, Peer
from shared.errors import ProtocolError


class Cluster:
    """One node's view of the cluster. `seeds` are addresses to JOIN; `known` the members
    remembered from the last run; `epoch` this run's number (default `now`; it must exceed
    every earlier run's, which kvd.cluster.peers ensures across clock steps with a file)."""

    def __init__(self, node: Node, gossip: str, settings: Settings, now: int,
                 seeds: list[str] | None = None, known: list[list] | None = None,
                 rng: random.Random | None = None, epoch: int | None = None,
                 http: str = "") -> None:
        self.node = node
        # Our HTTP door's base URL ("" when closed), told to the members in our heartbeats so
        # that their consoles can link to ours without guessing a port.
        self.http = http
        self.s = settings
        self.rng = rng or random.Random()
        self.ms = Membership(node.name, node.address, gossip, now, settings.timers)
        self.epoch = self.ms.me.incarnation = epoch or now
        self.repl = Replication(node.name, self.epoch, node.seq + 1)
        self.published = node.seq
        self.counters: Counter[str] = Counter()
        self.out = Outbox(settings.cluster, node.name)
        # Raft messages (MsgType.RAFT) from members go here: the consensus group's driver
        # (kvd.consensus) sets it; the cluster only checks that the sender is a member.
        self.on_raft: Callable[[dict], None] | None = None
        self.repair = Repair(node, settings, self.ms, self.repl, self.out, self.counters,
                             self.rng, self._apply_stream, now)
        self.low_waters: dict[str, float] = {}
        self.acked: dict[str, int] = {}  # member -> how far it holds our current stream
        self.hears: dict[str, set[str]] = {}
        self.clocks = ClockOffsets(settings.max_clock_offset_ms)
        # What each member said of itself in its last heartbeat (absent from older versions):
        # its HTTP door, and its keyspace digest with when we heard it (ms), so that a console
        # compares digests through its own node, never by calling members cross-origin.
        self.http_of: dict[str, str] = {}
        self.digest_of: dict[str, tuple[int, int]] = {}
        for name, address, gossip_, *_ in known or []:
            if name != node.name:
                self.ms.add(name, address, gossip_, 0, now)
        self.seeds = [a for a in dict.fromkeys((seeds or []) + [m.address for m in
                      self.ms.others()]) if a != node.address]
        self.welcomed = not self.seeds
        self.next_join = now
        self.join_warn_at: int | None = now + settings.join_warn_ms
        self.next_heartbeat = now
        self.next_gc = now
        self.gc_cursor = 0
        node.info_sources.append(lambda: self.info(self.ms.me.last_seen))
        node.members_source = self.members_view

    # -- messages out ---------------------------------------------------------------------

    def gossip_endpoints(self) -> set[str]:
        """Whose PUB sockets to subscribe to: every member that has not left."""
        return {m.gossip for m in self.ms.others() if m.status is not Status.LEFT}

    # -- the node's own writes --------------------------------------------------------------

    def committed(self, changes: list[Change], now: int) -> list[Out]:
        """Publish our own new writes (logged already), one message per chunk."""
        name, published = self.node.name, self.published
        mine = [c for c in changes if c.seq > published and c.entry.origin == name]
        if not mine:
            return []
        self.repl.local_all(mine)
        self.published = mine[-1].seq
        self.repair.busy(now)
        if len(self.ms.members) == 1:
            # Alone: no member to read the gossip, so skip encoding it (PUB would drop it
            # anyway). The backlog above keeps the writes: a node that joins later finds the
            # gap from our heartbeat's stream position and fetches them, as after a lost
            # GOSSIP.
            return []
        items = [wire_item(c.seq, c.key, c.entry) for c in mine]
        return self._gossip(name, self.epoch, self.repl.mine.base, items)

    def _gossip(self, origin: str, epoch: int, base: int, items: list) -> list[Out]:
        # Chunked by bytes as well as by count: a frame over a subscriber's limit would not
        # just be lost, it would cut that subscriber's link to us.
        return [self.out.publish(MsgType.GOSSIP, {"origin": origin, "epoch": epoch, "base": base,
                                               "items": chunk})
                for chunk in split(items, item_size, self.s.gossip_chunk, self.s.chunk_bytes)]

    # -- messages in ------------------------------------------------------------------------

    def receive(self, msg: Peer, now: int) -> list[Out]:
        """One peer message; never raises for bad input (it is dropped and counted)."""
        if msg.cluster != self.s.cluster:
            self.counters["dropped_wrong_cluster"] += 1
            return []
        if msg.sender == self.node.name:
            return []  # our own gossip, relayed back
        known = self.ms.is_member(msg.sender)
        if not known and msg.type not in _FROM_ANYONE:
            self.counters["dropped_stranger"] += 1
            return []
        handler = _HANDLERS.get(msg.type)
        if handler is None:
            self.counters["dropped_malformed"] += 1
            return []
        try:
            return handler(self, msg, now)
        except ProtocolError:
            self.counters["dropped_malformed"] += 1
            return []
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            # A shape the checks did not foresee: still the peer's fault, never a reason to
            # stop serving. Counted apart so that a gap in the checks shows up.
            self.counters["dropped_malformed"] += 1
            self.counters["dropped_unforeseen"] += 1
            return []

    def _on_raft(self, msg: Peer, now: int) -> list[Out]:
        if not isinstance(msg.body, dict):
            raise ProtocolError("a RAFT message's body is a map")
        if self.on_raft is not None:
            self.on_raft(msg.body)
        return []

    def count_bad(self, reason: str) -> None:
        """Counted by the socket layer: frames that did not even decode."""
        self.counters[f"dropped_{reason}"] += 1

    def _on_join(self, msg: Peer, now: int) -> list[Out]:
        b = msg.body
        address, gossip = get_field(b, "address", str), get_field(b, "gossip", str)
        inc = get_field(b, "incarnation", int)
        self.ms.add(msg.sender, address, gossip, inc, now)
        self.ms.heard_from(msg.sender, inc, now)
        self.repair.serving[msg.sender] = now  # it pulls our store next: no pass of ours to it
        members = [m.wire() for m in self.ms.members.values()]
        return [self.out.reply(MsgType.WELCOME, {"members": members})]

    def _on_welcome(self, msg: Peer, now: int) -> list[Out]:
        self._learn(msg.sender, get_field(msg.body, "members", list), now)
        if not self.welcomed:
            self.welcomed = True
            self.counters["joined"] += 1
            return self.repair.start_walk(msg.sender, now)  # like Clone: a snapshot, then updates
        return []

    def _learn(self, by: str, members: list, now: int) -> None:
        for w in members:
            check(isinstance(w, list) and len(w) == 5, "a member is [name, address, gossip, "
                   "incarnation, status]")
            name, address, gossip, inc, status = w
            check(type(name) is str and type(address) is str and type(gossip) is str
                   and type(inc) is int and status in STATUS, "member fields")
            if name == self.node.name:
                self.ms.claim(by, name, inc, STATUS[status], now)
                continue
            known = self.ms.get(name)
            if known is None and STATUS[status] is not Status.LEFT:
                self.ms.add(name, address, gossip, inc, now)
            elif known is not None and (name == by or inc > known.incarnation):
                # Fresher news of the member (from itself, or of a later life): it may have
                # come back on another address.
                self.ms.add(name, address, gossip, known.incarnation, now)
            self.ms.claim(by, name, inc, STATUS[status], now)

    def _on_heartbeat(self, msg: Peer, now: int) -> list[Out]:
        b, sender = msg.body, msg.sender
        inc = get_field(b, "incarnation", int)
        stream = get_field(b, "stream", list)
        vector = get_field(b, "vector", dict)
        check(len(stream) == 4 and all(type(x) is int for x in stream), "stream")
        wall = b.get("wall")  # absent from a peer of an older version
        check(wall is None or type(wall) is int, "wall must be int")
        http, digest = b.get("http"), b.get("digest")  # absent too from older versions
        check(http is None or type(http) is str, "http must be str")
        check(digest is None or (type(digest) is int and 0 <= digest < 1 << 64),
              "digest must be an unsigned 64-bit int")
        self.ms.heard_from(sender, inc, now)
        self._learn(sender, get_field(b, "members", list), now)
        epoch, base, seq, stamp = stream
        self.repl.mark(sender, epoch, base, seq, stamp)
        self.repair.claim(sender, sender, epoch, base, seq, now)
        for origin, v in vector.items():
            check(type(origin) is str and isinstance(v, list) and len(v) == 3
                   and all(type(x) is int for x in v), "vector")
            if origin == self.node.name and v[0] == self.epoch:
                self.acked[sender] = v[2]
            elif origin != sender and self.ms.is_member(origin):
                self.repair.claim(sender, origin, *v, now)
        self.low_waters[sender] = stable_from_wire(get_field(b, "low", int))
        hears = get_field(b, "hears", list)
        check(all(type(h) is str for h in hears), "hears")
        self.hears[sender] = set(hears)
        if wall is not None:
            self.clocks.sample(sender, wall, now)
        if http is not None:
            self.http_of[sender] = http
        if digest is not None:
            self.digest_of[sender] = (digest, now)
        # Our hybrid clock keeps up with the fastest member even while no writes flow, so
        # that a slow wall clock does not judge expiry (HybridClock.time_ms) in the past.
        self.node.clock.observe(stamp)
        return []

    def _on_gossip(self, msg: Peer, now: int) -> list[Out]:
        b = msg.body
        origin, epoch, base = get_field(b, "origin", str), get_field(b, "epoch", int), \
            get_field(b, "base", int)
        raw = get_field(b, "items", list)
        items = items_from_wire(raw, origin)
        fresh = self._apply_stream(origin, epoch, base, items, now)
        stream = self.repl.streams.get(origin)
        if stream is not None and stream.ahead:
            self.repair.claim(msg.sender, origin, epoch, base, max(stream.ahead), now)
        if fresh and self._must_relay(origin, msg.sender):
            self.counters["relayed"] += len(fresh)
            return self._gossip(origin, epoch, base,
                                [wire_item(*item) for item in fresh])
        return []

    def _apply_stream(self, origin: str, epoch: int, base: int, items: list,
                      now: int) -> list:
        fresh = self.repl.receive(origin, epoch, base, items)
        if fresh:
            node = self.node
            node.clock.observe(max([entry.stamp for _, _, entry in fresh]))
            node.apply_all(fresh)
            self.repair.busy(now)
        self.counters["received"] += len(fresh)
        self.counters["duplicates"] += len(items) - len(fresh)
        return fresh

    def _must_relay(self, origin: str, sender: str) -> bool:
        """Relay when a live member says it does not hear the origin directly."""
        for m in self.ms.live():
            if m.name in (self.node.name, origin, sender):
                continue
            hears = self.hears.get(m.name)
            if hears is not None and origin not in hears:
                return True
        return False

    def _on_leave(self, msg: Peer, now: int) -> list[Out]:
        b = msg.body
        inc, epoch, seq = get_field(b, "incarnation", int), get_field(b, "epoch", int), \
            get_field(b, "seq", int)
        self.ms.left(msg.sender, inc, now)
        self.repl.finished(msg.sender, epoch, seq)
        stream = self.repl.streams.get(msg.sender)
        if stream is not None and stream.epoch == epoch:
            self.repair.claim(msg.sender, msg.sender, epoch, stream.base, seq, now)
        return []

    # -- time -----------------------------------------------------------------------------

    def tick(self, now: int) -> list[Out]:
        out: list[Out] = []
        self.ms.me.last_seen = now
        if not self.welcomed and now >= self.next_join:
            self.next_join = now + self.s.join_retry_ms
            out += [self.out.request(a, MsgType.JOIN, self._join_body()) for a in self.seeds]
        self.ms.tick(now)
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.s.timers.heartbeat_ms
            out.append(self._heartbeat(now))
        out += self.repair.tick(now)
        if now >= self.next_gc:
            self.next_gc = now + self.s.gc_every_ms
            self.collect_tombstones(now)
        return out

    def join_overdue(self, now: int) -> list[str]:
        """The addresses we JOIN, once, when none has welcomed us within `join_warn_ms`:
        for the peer layer to log (we go on trying)."""
        if self.welcomed or self.join_warn_at is None or now < self.join_warn_at:
            return []
        self.join_warn_at = None
        return list(self.seeds)

    def _join_body(self) -> dict:
        me = self.ms.me
        return {"address": me.address, "gossip": me.gossip, "incarnation": me.incarnation}

    def _heartbeat(self, now: int) -> Out:
        me, node = self.ms.me, self.node
        silent = self.s.timers.suspect_after_ms
        hears = [m.name for m in self.ms.others() if now - m.last_seen <= silent]
        low = self.low_water()
        body = {"incarnation": me.incarnation, "members": [m.wire() for m in
                self.ms.members.values()], "vector": self.repl.vector(),
                "stream": [self.epoch, self.repl.mine.base, self.published, node.clock.now()],
                "low": -1 if low == INF else int(low), "hears": hears, "wall": now,
                "http": self.http, "digest": node.store.digest}
        return self.out.publish(MsgType.HEARTBEAT, body)

    # -- tombstones ---------------------------------------------------------------------------

    def low_water(self) -> float:
        """A stamp at or below which we hold every write of every member: one that left
        counts until we hold its last write (its stream's stable stamp is then infinite)."""
        streams = self.repl.streams
        return self.repl.low_water([m.name for m in self.ms.others()
                                    if m.status is not Status.LEFT or m.name in streams])

    def gc_horizon(self) -> float:
        """Tombstones at or below this stamp are known to every member that has not left."""
        horizon = self.low_water()
        for m in self.ms.others():
            if m.status is not Status.LEFT:
                horizon = min(horizon, self.low_waters.get(m.name, 0))
        return horizon

    def collect_tombstones(self, now: int) -> int:
        """Drop the tombstones every member has seen, or older than the maximum age, from the
        next few buckets (a full sweep every NBUCKETS / gc_buckets ticks, no long pauses)."""
        store, dropped = self.node.store, 0
        if not store.tombstones:  # nothing to collect: move on as a scan would, unscanned
            self.gc_cursor = (self.gc_cursor + self.s.gc_buckets) % NBUCKETS
            return 0
        horizon, oldest = self.gc_horizon(), now - self.s.tombstone_max_age_ms
        for _ in range(self.s.gc_buckets):
            b, self.gc_cursor = self.gc_cursor, (self.gc_cursor + 1) % NBUCKETS
            for key, e in store.bucket_items(b):
                if e.value is None and (e.stamp <= horizon or stamp_ms(e.stamp) < oldest):
                    store.remove(key)
                    dropped += 1
        self.counters["tombstones_collected"] += dropped
        return dropped

    def leave(self, now: int) -> list[Out]:
        """A graceful stop: tell everyone, on gossip and directly."""
        self.ms.leave()
        body = {"incarnation": self.ms.me.incarnation, "epoch": self.epoch,
                "seq": self.published}
        out = [self.out.publish(MsgType.LEAVE, body)]
        out += [self.out.request(m.address, MsgType.LEAVE, body) for m in self.ms.live()
                if m is not self.ms.me]
        return out

    # -- introspection ------------------------------------------------------------------------

    def members_view(self, now: int) -> list[dict]:
        return [self._member_row(m, now) for m in
                sorted(self.ms.members.values(), key=lambda m: m.name)]

    def _member_row(self, m: Member, now: int) -> dict:
        """`lag`: how many of our writes the member had not acknowledged in its last heartbeat;
        `behind`: how many of its writes we know of and do not hold yet; `clock_offset_ms`: its
        wall clock minus ours (kvd.cluster.clockskew), None until measured; `http`: its HTTP
        door's base URL (None: closed, or not told yet); `digest`: its keyspace digest as of
        its last heartbeat, `digest_age_ms` how long ago that was (None: not heard yet)."""
        is_me = m is self.ms.me
        stream = self.repl.streams.get(m.name)
        behind = 0 if is_me or stream is None else max(
            [c.latest - stream.contiguous for c in self.repair.claims.get(m.name, {}).values()]
            + [len(stream.ahead)])
        acked = self.acked.get(m.name, self.repl.mine.base - 1)
        lag = 0 if is_me else self.published - acked
        return {"name": m.name, "address": m.address, "gossip": m.gossip,
                "status": m.status.value, "self": is_me, "incarnation": m.incarnation,
                "last_seen_ms": 0 if is_me else max(0, now - m.last_seen),
                "lag": max(0, lag), "lag_ms": 0 if lag <= 0 else self._unacked_age(acked, now),
                "behind": max(0, behind),
                "clock_offset_ms": 0 if is_me else self.clocks.of(m.name),
                **self._said(m, now)}

    def _said(self, m: Member, now: int) -> dict:
        if m is self.ms.me:
            return {"http": self.http or None, "digest": f"{self.node.store.digest:016x}",
                    "digest_age_ms": 0}
        heard = self.digest_of.get(m.name)
        return {"http": self.http_of.get(m.name) or None,
                "digest": None if heard is None else f"{heard[0]:016x}",
                "digest_age_ms": None if heard is None else max(0, now - heard[1])}

    def _unacked_age(self, acked: int, now: int) -> int:
        """How long ago we wrote the oldest of our writes a member has not acknowledged (ms):
        its replication lag in time (0 when the write left the backlog: it is old news)."""
        backlog = self.repl.mine.backlog
        if not backlog:
            return 0
        i = acked + 1 - backlog[0][0]
        if not 0 <= i < len(backlog):
            return 0
        return max(0, now - stamp_ms(backlog[i][2].stamp))

    def clock_warnings(self, now: int) -> list[tuple[str, int]]:
        """(peer, offset ms) for live peers whose clock is off past `max_clock_offset_ms`,
        each at most once a minute: for the peer layer to log. Counted here."""
        due = self.clocks.due_warnings(self._live_peers(), now)
        self.counters["clock_offset_warnings"] += len(due)
        return due

    def _live_peers(self) -> list[str]:
        return [m.name for m in self.ms.live() if m is not self.ms.me]

    def info(self, now: int) -> dict:
        counts = self.ms.counts()
        info: dict = {"members": len(self.ms.members) - counts["members_left"], **counts,
                      "cluster": self.s.cluster, "epoch": self.epoch}
        info["max_clock_offset_ms"] = self.clocks.largest(self._live_peers())
        info.update(self.repair.ae.info(now))
        info.update({k: self.counters[k] for k in sorted({*COUNTERS, *self.counters})})
        info["gossip_dropped"] = sum(self.counters[k] for k in GOSSIP_DROPS)
        return info


COUNTERS = ("received", "duplicates", "relayed", "catchup_requests", "catchup_received",
            "catchup_served", "catchup_gone", "tombstones_collected", "dropped_wrong_cluster",
            "dropped_stranger", "dropped_malformed", "dropped_unforeseen", "dropped_bad_version",
            "dropped_requests", "joined", "clock_offset_warnings")
# The peer messages the cluster dropped, as /metrics' kv_gossip_dropped_total sums them:
# dropped_unforeseen is left out, every one of them is counted in dropped_malformed too.
GOSSIP_DROPS = ("dropped_wrong_cluster", "dropped_stranger", "dropped_malformed",
                "dropped_bad_version", "dropped_requests")
_FROM_ANYONE = {MsgType.JOIN, MsgType.WELCOME}
_HANDLERS = {
    MsgType.JOIN: Cluster._on_join,
    MsgType.WELCOME: Cluster._on_welcome,
    MsgType.HEARTBEAT: Cluster._on_heartbeat,
    MsgType.GOSSIP: Cluster._on_gossip,
    MsgType.CATCHUP: lambda c, msg, now: c.repair.on_catchup(msg, now),
    MsgType.CATCHUP_REPLY: lambda c, msg, now: c.repair.on_catchup_reply(msg, now),
    MsgType.SYNC: lambda c, msg, now: c.repair.on_sync(msg, now),
    MsgType.SYNC_REPLY: lambda c, msg, now: c.repair.on_sync_reply(msg, now),
    MsgType.SYNC_PUSH: lambda c, msg, now: c.repair.on_sync_push(msg, now),
    MsgType.LEAVE: Cluster._on_leave,
    MsgType.RAFT: Cluster._on_raft,
}
