"""Repair: catch-up of lost gossip and anti-entropy passes, the cluster core's repair half.

`Repair` is a field of `kvd.cluster.cluster.Cluster`, which hands it the membership and the
replication streams it reasons over and calls it for the messages and ticks it owns. It is
the part that reasons about what is missing and how to get it back:

- Catch-up: members claim (in heartbeats) how far they hold each origin's stream. A claim we
  still do not meet after `gap_grace_ms` means lost messages, not messages in flight: we ask the
  member that claims the most for the range, one chunk in flight per origin, the next chunk as
  soon as the previous one is applied (flow control by pull). `gone` sends us to anti-entropy.
- Anti-entropy: one walk at a time over the bucket digests with one peer (kvd.cluster.antientropy);
  at the end we hold what the peer held when the walk began, so we adopt its progress.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from kvd.cluster.antientropy import Counters, Walk, collect, to_push
from kvd.cluster.membership import Membership, Status
from kvd.cluster.peerwire import (
    Out,
    Outbox,
    check,
    entry_size,
    fitting,
    get_field,
    item_from_wire,
    item_size,
    items_from_wire,
    progress,
    split,
    wire_item,
)
from kvd.cluster.replication import Replication
from kvd.cluster.settings import Settings
from kvd.state.node import Node
from kvd.state.store import NBUCKETS, bucket_of
from shared.codec import MsgType, Peer

# Applies a stream's items (origin, epoch, base, items, now) and returns the fresh ones: the
# cluster's, shared by gossip and catch-up replies.
ApplyStream = Callable[[str, int, int, list, int], list]


@dataclass(slots=True)
class Claim:
    """What a member told us it holds of one origin's stream."""

    epoch: int  # claims about an earlier epoch of the origin are void
    seq: int  # the claim being watched
    since: int  # ms, when it was made
    latest: int  # the highest seq claimed


class Repair:
    def __init__(self, node: Node, settings: Settings, ms: Membership, repl: Replication,
                 outbox: Outbox, counters: Counter[str], rng: random.Random,
                 apply_stream: ApplyStream, now: int) -> None:
        self.node = node
        self.s = settings
        self.ms = ms
        self.repl = repl
        self.out = outbox
        self.counters = counters  # the cluster's: one table for INFO
        self.rng = rng
        self._apply_stream = apply_stream
        self.ae = Counters()
        self.walk: Walk | None = None
        self.sync_wanted: str | None = None
        self.pending: dict[str, tuple[str, int]] = {}  # origin -> (member asked, when)
        self.claims: dict[str, dict[str, Claim]] = {}  # origin -> member -> what it holds
        self.next_sync = now + settings.sync_every_ms
        self.busy_until = now  # writes flowing until then: the periodic pass waits
        self.last_pass = now
        self.serving: dict[str, int] = {}  # peer -> ms of the last step of its pass with us
        self.down: set[str] = set()  # members we hold dead: a pass with each when it is back

    def busy(self, now: int) -> None:
        """Writes are flowing: hold the periodic anti-entropy pass back for a while."""
        self.busy_until = now + self.s.sync_every_ms

    def tick(self, now: int) -> list[Out]:
        return self._ask_gaps(now) + self._sync_tick(now)

    def claim(self, member: str, origin: str, epoch: int, base: int, seq: int,
               now: int) -> None:
        """`member` holds `origin`'s writes up to `seq`. A claim we still lack after the grace
        period means lost messages (not just ones in flight): then we ask for them."""
        if origin == self.node.name:
            return
        stream = self.repl.observe_epoch(origin, epoch, base)
        if stream is None or seq <= stream.contiguous:
            return
        claims = self.claims.setdefault(origin, {})
        claim = claims.get(member)
        if claim is None or claim.epoch != epoch:
            claims[member] = Claim(epoch, seq, now, seq)
            return
        claim.latest = max(claim.latest, seq)
        if claim.seq <= stream.contiguous:  # the watched claim was met: watch this one
            claim.seq, claim.since = seq, now

    def on_catchup(self, msg: Peer, now: int) -> list[Out]:
        b = msg.body
        origin, epoch = get_field(b, "origin", str), get_field(b, "epoch", int)
        first, last = get_field(b, "first", int), get_field(b, "last", int)
        items = self.repl.serve(origin, epoch, first, last,
                                self.s.catchup_chunk)
        wire = [wire_item(*i) for i in items or []]
        # One message below the asker's frame limit; it asks for the rest when this is applied.
        wire = wire[:fitting(wire, item_size, self.s.catchup_chunk, self.s.chunk_bytes)]
        self.counters["catchup_served"] += len(wire)
        stream = self.repl.streams.get(origin)
        base = stream.base if stream else 1
        body = {"origin": origin, "epoch": epoch, "base": base, "gone": items is None,
                "items": wire}
        return [self.out.reply(MsgType.CATCHUP_REPLY, body)]

    def on_catchup_reply(self, msg: Peer, now: int) -> list[Out]:
        b = msg.body
        origin, epoch, base = get_field(b, "origin", str), get_field(b, "epoch", int), \
            get_field(b, "base", int)
        items = items_from_wire(get_field(b, "items", list), origin)
        self.pending.pop(origin, None)
        fresh = self._apply_stream(origin, epoch, base, items, now)
        self.counters["catchup_received"] += len(fresh)
        if get_field(b, "gone", bool):
            self.counters["catchup_gone"] += 1
            self.claims.get(origin, {}).pop(msg.sender, None)
            if self._served(msg.sender, now):
                # Its pass with us is under way and brings us level: ours after it, not now
                # (it would ship the same keys again).
                self.sync_wanted = self.sync_wanted or msg.sender
                return []
            return self.start_walk(msg.sender, now)
        if not fresh:  # it had nothing new for us (yet): let the timer ask again, not a loop
            return []
        return self._ask_gaps(now, only=origin)

    def start_walk(self, peer: str, now: int) -> list[Out]:
        member = self.ms.get(peer)
        if member is None:
            return []
        if self.walk is not None:
            self.sync_wanted = peer
            return []
        self.walk = Walk(peer, now, now)
        return [self._sync_step(member.address, 0)]

    def _sync_step(self, address: str, cursor: int) -> Out:
        return self.out.request(address, MsgType.SYNC,
                             {"digests": self.node.store.bucket_digests, "cursor": cursor})

    def on_sync(self, msg: Peer, now: int) -> list[Out]:
        digests, cursor = get_field(msg.body, "digests", list), get_field(msg.body, "cursor", int)
        check(len(digests) == NBUCKETS and 0 <= cursor < NBUCKETS, "digests")
        self.repl.mine.stable = self.node.clock.last
        self.serving[msg.sender] = now
        buckets, entries, nxt = collect(self.node.store, digests, cursor,
                                        self.s.step_entries, self.s.chunk_bytes)
        body = {"buckets": buckets, "entries": entries, "next": nxt,
                "progress": self.repl.progress() if cursor == 0 else {}}
        return [self.out.reply(MsgType.SYNC_REPLY, body)]

    def on_sync_reply(self, msg: Peer, now: int) -> list[Out]:
        walk = self.walk
        if walk is None or walk.peer != msg.sender:
            return []  # a late answer to a pass we gave up
        b = msg.body
        buckets, nxt = get_field(b, "buckets", list), get_field(b, "next", int)
        check(all(type(x) is int and 0 <= x < NBUCKETS for x in buckets), "buckets")
        raw = get_field(b, "entries", list)
        entries = [item_from_wire(w) for w in raw]
        if walk.cursor == 0:
            walk.progress = progress(get_field(b, "progress", dict))
        push, cut = to_push(self.node.store, buckets, raw, self.s.step_entries,
                            self.s.chunk_bytes)
        if cut is not None:
            # We hold much more than the peer in these buckets (it may have joined empty):
            # push a step's worth now and ask again from the first bucket left, so that each
            # of our turns does a bounded amount of this. Its entries from there on come
            # again in the next reply: merge them then, not twice.
            done = set(buckets[:buckets.index(cut)])
            entries = [e for e in entries if bucket_of(e[1]) in done]
            buckets, nxt = sorted(done), cut
        walk.pulled += self._merge(entries)
        walk.buckets += len(buckets)
        walk.pushed += len(push)
        member = self.ms.get(walk.peer)
        assert member is not None
        # Several messages, each under the peer's frame limit (one step may exceed a message).
        out = [self.out.request(member.address, MsgType.SYNC_PUSH, {"entries": chunk})
               for chunk in split(push, entry_size, self.s.step_entries, self.s.chunk_bytes)]
        if nxt == -1:
            return out + self._finish_walk(walk, now)
        check(type(nxt) is int and walk.cursor < nxt < NBUCKETS, "next")
        walk.cursor, walk.sent = nxt, now
        return [*out, self._sync_step(member.address, nxt)]

    def _finish_walk(self, walk: Walk, now: int) -> list[Out]:
        self.walk = None
        self.repl.adopt(walk.progress or {})
        for m in self.ms.others():
            if m.status is Status.LEFT:  # it cannot vouch for its own stream any more
                self.repl.vouch(m.name)
        self._prune_claims()
        ae = self.ae
        ae.rounds += 1
        ae.buckets_repaired += walk.buckets
        ae.keys_pulled += walk.pulled
        ae.keys_pushed += walk.pushed
        ae.last_sync[walk.peer] = now
        self.last_pass = now
        wanted, self.sync_wanted = self.sync_wanted, None
        return self.start_walk(wanted, now) if wanted and wanted != walk.peer else []

    def _prune_claims(self) -> None:
        for origin, claims in self.claims.items():
            stream = self.repl.streams.get(origin)
            done = stream.contiguous if stream else 0
            epoch = stream.epoch if stream else 0
            for m in [m for m, c in claims.items() if c.latest <= done or c.epoch != epoch]:
                del claims[m]

    def on_sync_push(self, msg: Peer, now: int) -> list[Out]:
        entries = [item_from_wire(w) for w in get_field(msg.body, "entries", list)]
        self._merge(entries)
        return []

    def _merge(self, entries: list) -> int:
        node, won = self.node, 0
        for _, key, entry in entries:
            node.clock.observe(entry.stamp)
            won += node.apply(key, entry, 0)
        return won

    def _ask_gaps(self, now: int, only: str | None = None) -> list[Out]:
        """Ask for writes someone claimed long enough ago that we still lack: one chunk in
        flight per origin, to the member that claimed the most. `only` continues a catch-up
        already under way (no grace: the range is known lost)."""
        if self.walk is not None:
            # Our pass brings us what the peer held when it began, and then we adopt its
            # progress: asking for the same writes meanwhile would move them twice.
            return []
        out = []
        grace, timeout = self.s.gap_grace_ms, self.s.request_timeout_ms
        for origin, claims in self.claims.items():
            if only is not None and origin != only:
                continue
            stream = self.repl.streams.get(origin)
            if stream is None:
                continue
            ripe = {m: c.latest for m, c in claims.items()
                    if c.epoch == stream.epoch and c.latest > stream.contiguous
                    and self._reachable(m) and not self._served(m, now)
                    and (only is not None or (c.seq > stream.contiguous
                                              and now - c.since >= grace))}
            pushing = [m for m, c in claims.items() if c.epoch == stream.epoch
                       and c.latest > stream.contiguous and self._served(m, now)]
            if not ripe and pushing:
                # A peer's pass pushes to us meanwhile: ours after it (with little left to
                # move) adopts that peer's progress, rather than asking for the writes again.
                self.sync_wanted = self.sync_wanted or pushing[0]
            pending = self.pending.get(origin)
            if not ripe or (pending is not None and now - pending[1] < timeout):
                continue
            member = max(ripe, key=lambda m: ripe[m])
            last = min(ripe[member], stream.contiguous + self.s.catchup_chunk)
            self.pending[origin] = (member, now)
            self.counters["catchup_requests"] += 1
            body = {"origin": origin, "epoch": stream.epoch, "first": stream.contiguous + 1,
                    "last": last}
            out.append(self.out.request(self.ms.members[member].address, MsgType.CATCHUP, body))
        return out

    def _reachable(self, name: str) -> bool:
        m = self.ms.get(name)
        return m is not None and m.status in (Status.ALIVE, Status.SUSPECT)

    def _sync_tick(self, now: int) -> list[Out]:
        walk = self.walk
        if walk is not None and (now - walk.sent > 2 * self.s.request_timeout_ms
                                 or not self._reachable(walk.peer)):
            # Silent, or held dead (then a pass with it starts when it is back).
            self.walk = None
            self.ae.aborted += 1
        back = self._back(now)
        if back is not None:
            # A member we held dead answers again: whatever happened while it was cut off
            # (writes either side, gossip lost for good), one pass brings both sides level.
            return self.start_walk(back, now)
        if self.walk is None and self.sync_wanted and not self._served(self.sync_wanted, now):
            wanted, self.sync_wanted = self.sync_wanted, None
            return self.start_walk(wanted, now)
        if now < self.next_sync or self.walk is not None:
            return []
        self.next_sync = now + self.s.sync_every_ms
        if now < self.busy_until and now - self.last_pass < self.s.sync_max_ms:
            # Writes are flowing: digests differ by what is in flight, so a pass now would
            # ship whole buckets for nothing. Lost gossip is caught by sequence gaps meanwhile.
            return []
        # Not with a peer whose own pass with us is under way: a pass pulls and pushes, so a
        # second one would ship the same keys again (a joining node pulling our whole store).
        peers = [m.name for m in self.ms.others() if m.status is Status.ALIVE
                 and not self._served(m.name, now)]
        return self.start_walk(self.rng.choice(peers), now) if peers else []

    def _served(self, peer: str, now: int) -> bool:
        """Is `peer`'s own pass with us under way (a step of it lately)?"""
        return now - self.serving.get(peer, now - 2 * self.s.request_timeout_ms - 1) \
            <= 2 * self.s.request_timeout_ms

    def _back(self, now: int) -> str | None:
        """A member that was dead and is alive again (at most one per tick), unless its own
        pass with us already does the work."""
        for m in self.ms.others():
            if m.status is Status.DEAD:
                self.down.add(m.name)
            elif m.status is Status.ALIVE and m.name in self.down:
                self.down.discard(m.name)
                if not self._served(m.name, now):
                    return m.name
        return None
