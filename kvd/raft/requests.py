"""A node's clients' requests to the consensus group, from the moment they are taken until
they are answered (kvd.consensus moves the messages; this module keeps the books).

- Writes: proposed through the leader, answered by the node that took them once it applies
  their entry (each entry carries its origin node, this run's id and a tag).
- Reads (CGET, LEADER, LEASE TTL): ReadIndex reads. The leader confirms it still leads with a
  heartbeat round and names its commit index (the leader's own reads, and `remote` ones a
  follower asked for); the node serves the read from its own state machine once it has
  applied that index. A read also keeps its client's order on this node: it waits for the
  writes taken before it (its barrier: the last write's tag) and is served before any write
  taken after it applies, so a pipeline of CSET, CGET, CAS, CGET reads as if run one by one.
- What cannot be answered gets TRYAGAIN: a request that went to a leader that is no longer
  the leader, or that waited `answer_ticks`. A write may still apply after that (TRYAGAIN
  says "may or may not have applied"); a read never changes anything.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

from kvd.state.context import Deferred
from shared.errors import KvError, TryAgain

MAX_READS = 10_000  # reads awaiting confirmation on one node (its clients' and forwarded)


class Requests:
    def __init__(self, run: bytes, answer_ticks: int) -> None:
        """`run`: this process's random id (tags are unique within it); `answer_ticks`: how
        long a request may wait for its answer."""
        self.run = run
        self.answer_ticks = answer_ticks
        self.ticks = 0
        self._tags = itertools.count(1)
        self._last_write = 0
        # writes by tag: (answer, deadline tick, the leader it went to)
        self.writes: dict[int, tuple[Deferred, int, str]] = {}
        # reads by context: (answer, command, deadline tick, leader, barrier)
        self.reads: dict[bytes, tuple[Deferred, bytes, int, str, int]] = {}
        self.confirmed: list[tuple[int, bytes]] = []  # (index to apply, context)
        self.remote: dict[bytes, str] = {}  # as the leader: context -> the follower that asked

    # -- taking requests ----------------------------------------------------------------------

    def write(self, answer: Deferred, leader: str) -> int:
        """A write sent to `leader`: its tag, for the entry."""
        tag = self._last_write = next(self._tags)
        self.writes[tag] = (answer, self.ticks + self.answer_ticks, leader)
        return tag

    def read(self, answer: Deferred, command: bytes, leader: str) -> bytes | None:
        """A read to be confirmed by `leader`: its context, or None when too many wait."""
        if len(self.reads) >= MAX_READS:
            return None
        ctx = self.run + next(self._tags).to_bytes(8, "big")
        self.reads[ctx] = (answer, command, self.ticks + self.answer_ticks, leader,
                           self._last_write)
        return ctx

    def forget_write(self, tag: int) -> None:
        self.writes.pop(tag, None)

    def forget_read(self, ctx: bytes) -> None:
        self.reads.pop(ctx, None)

    def asked(self, ctx: bytes, origin: str) -> bool:
        """As the leader: a follower's read to confirm (False: too many wait)."""
        if len(self.remote) >= MAX_READS:
            return False
        self.remote[ctx] = origin
        return True

    # -- answers --------------------------------------------------------------------------------

    def confirm(self, ctx: bytes, index: int) -> str | None:
        """A read confirmed at commit `index`: the follower to tell, when it was one's."""
        origin = self.remote.pop(ctx, None)
        if origin is None and ctx in self.reads:
            self.confirmed.append((index, ctx))
        return origin

    def applying(self, run: bytes, index: int, read: Callable[[bytes], dict]) -> bool:
        """Entry `index` is about to apply; True when it is one of this node's writes (the
        reads taken before it are served first, from the state before it)."""
        if run != self.run:
            return False
        if self.confirmed:
            self.serve(index - 1, read)
        return True

    def applied(self, tag: int, result: dict) -> None:
        found = self.writes.pop(tag, None)
        if found is not None:
            found[0].resolve(reply(result))

    def serve(self, applied: int, read: Callable[[bytes], dict]) -> None:
        """Answer the confirmed reads whose index is applied (`applied`: so far, maybe in the
        middle of a Ready) and whose earlier writes are answered (applied, or given up on)."""
        oldest = min(self.writes, default=0)
        waiting = []
        for index, ctx in self.confirmed:
            found = self.reads.get(ctx)
            if found is None:
                continue
            if index > applied or (oldest and oldest <= found[4]):
                waiting.append((index, ctx))
                continue
            del self.reads[ctx]
            found[0].resolve(reply(read(found[1])))
        self.confirmed = waiting

    # -- giving up --------------------------------------------------------------------------------

    def leader_changed(self, leader: str | None, leading: bool) -> None:
        """What went to an old leader may be lost (a forward to a leader that died is never
        answered): say so now rather than at the deadline. What went to the new one stays:
        the core learns of a leader from a message, and a request can be sent to it before
        the node reports the change."""
        for tag in [t for t, (_, _, to) in self.writes.items() if to != leader]:
            self.writes.pop(tag)[0].resolve(TryAgain(
                "the consensus group's leader changed while this command was in flight: it "
                "may or may not have applied — read, then retry"))
        if not leading:
            self.remote.clear()  # the rounds that would confirm them are over
        confirmed = {ctx for _, ctx in self.confirmed}
        for ctx in [c for c, (_, _, _, to, _) in self.reads.items()
                    if to != leader and c not in confirmed]:
            self.reads.pop(ctx)[0].resolve(TryAgain(
                "the consensus group's leader changed before this read was confirmed — retry"))

    def tick(self) -> None:
        """One tick: what has waited `answer_ticks` gets TRYAGAIN."""
        self.ticks += 1
        ticks, seconds = self.ticks, self.answer_ticks / 10
        for tag in [t for t, (_, deadline, _) in self.writes.items() if deadline <= ticks]:
            self.writes.pop(tag)[0].resolve(TryAgain(
                f"no answer from the consensus group within {seconds:g} s (the leader may have "
                "changed): the command may or may not have applied — read, then retry"))
        for ctx in [c for c, (_, _, deadline, _, _) in self.reads.items() if deadline <= ticks]:
            self.reads.pop(ctx)[0].resolve(TryAgain(
                f"the consensus group did not confirm this read within {seconds:g} s — retry"))
        if len(self.confirmed) > len(self.reads):
            self.confirmed = [(i, c) for i, c in self.confirmed if c in self.reads]


def reply(result: dict) -> object:
    """A state machine result as a reply: its fields, or an error with its code."""
    if result.get("ok"):
        return {k: v for k, v in result.items() if k != "ok"}
    code = str(result.get("error", "ERR"))
    details = {k: v for k, v in result.items() if k not in ("ok", "error", "message")}
    message = str(result.get("message", code))
    if details:
        message += " (" + ", ".join(f"{k} {_shown(v)}" for k, v in details.items()) + ")"
    error = KvError(message)
    error.code = code
    error.details = details
    return error


def _shown(value: object) -> str:
    """A detail as a person reads it, on one line: text quoted (control characters escaped),
    other bytes as Python escapes, None as nil."""
    if value is None:
        return "nil"
    if isinstance(value, bytes):
        try:
            return json.dumps(value.decode(), ensure_ascii=False)
        except UnicodeDecodeError:
            return repr(value)[1:]
    return str(value)
