"""WATCH: who listens to which prefix, the recent history they can resume from, and how far
behind each one is.

Sans-IO: the hub is told about every applied change and about subscriptions; it returns the
events to send, addressed by (client, request id). Every change gets a cursor (a local,
monotonic sequence number). `WATCH prefix FROM cursor` replays the history after the cursor if
the hub still holds it; otherwise the subscriber is told so and first gets the prefix's current
state, then live events — so no change is lost either way.

Cursors never repeat across restarts of a node: the hub starts counting at `first_cursor`,
which the node derives from its boot time (ms << 20). A cursor from an earlier run is then
always older than anything this run holds, so resuming with it yields a reset, never a
silent replay of the wrong history. A cursor this run never issued (from the future, or from
another node) is a reset too.

Flow control: a subscriber is either *live* (`record` pushes its events as changes happen) or
*behind* (its events are pulled from the history by `owed`, as fast as the door can send).
A subscriber starts behind when it has a replay or a current state to receive, and falls
behind when the door cannot send it an event (its connection's queue is full: the client
stops reading). A subscriber behind is never skipped ahead: it gets every event after `sent`
in order, or — once the history no longer holds what it needs — one error event `LAGGED`
naming `sent`, which ends its stream; `WATCH prefix FROM sent` then resumes without loss
(with the current state first). Memory stays bounded: the history is the only backlog.

Heartbeats: `heartbeats()` owes every live subscriber a `{"heartbeat": True, "cursor": n}`
event; the server sends them about once a second, so a client that hears nothing for a few
seconds knows its stream is gone (the daemon restarted or the network dropped) and resubscribes
with FROM its last cursor. A subscriber behind hears its events instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from kvd.state.store import Entry

Subscriber = tuple[bytes, int]  # (client identity, request id)
Outgoing = list[tuple[bytes, int, dict]]
LAGGED = "LAGGED"


def event(cursor: int, key: bytes, entry: Entry) -> dict:
    return {
        "cursor": cursor,
        "key": key,
        "value": entry.value,
        "deleted": entry.value is None,
        "origin": entry.origin,
        "stamp": entry.stamp,
        "expires_at": entry.expires_at,
    }


@dataclass(slots=True)
class Sub:
    """One stream's position. Every change under `prefix` up to cursor `sent` has been sent,
    except, while `state` is not empty, the current state it still owes first (a reset)."""

    prefix: bytes
    sent: int
    since: int | None = None  # the FROM cursor: what a resumption needs while `state` remains
    state: list[tuple[bytes, Entry]] = field(default_factory=list)  # reversed: next at the end
    lagged: bool = False  # the history lost what it needs: all it is owed is the LAGGED event


class WatchHub:
    def __init__(self, history: int = 10_000, first_cursor: int = 0) -> None:
        self.cursor = first_cursor
        self.lagged = 0  # streams ended with LAGGED (INFO watchers_lagged)
        self._history: deque[tuple[int, bytes, Entry]] = deque(maxlen=history)
        self._subs: dict[Subscriber, Sub] = {}
        self._live: dict[Subscriber, bytes] = {}  # the subscribers `record` pushes to: prefix
        self._behind: set[Subscriber] = set()  # the others: `owed` pulls their events

    def __len__(self) -> int:
        return len(self._subs)

    def record(self, key: bytes, entry: Entry) -> Outgoing:
        """Note one applied change; returns the events it owes live subscribers."""
        self.cursor += 1
        self._history.append((self.cursor, key, entry))
        if not self._live:
            return []
        return [
            (client, rid, event(self.cursor, key, entry))
            for (client, rid), prefix in self._live.items()
            if key.startswith(prefix)
        ]

    def record_all(self, changes: list) -> Outgoing:
        """`record` for a turn's changes (objects with .key and .entry) at once: with no
        live subscriber, which is the common case, it only extends the history."""
        if self._live:
            return [ev for c in changes for ev in self.record(c.key, c.entry)]
        start = self.cursor
        self._history.extend([(start + i, c.key, c.entry) for i, c in enumerate(changes, 1)])
        self.cursor = start + len(changes)
        return []

    def subscribe(
        self,
        client: bytes,
        rid: int,
        prefix: bytes,
        since: int | None,
        current: Callable[[bytes], Iterable[tuple[bytes, Entry]]],
    ) -> dict:
        """Start a stream; returns the acknowledgement. A replay or the current state is then
        owed (`behind`, `owed`): it goes out as fast as the client takes it."""
        sub = (client, rid)
        ack = {"watching": prefix, "cursor": self.cursor, "history": "live"}
        if since is None:
            self._subs[sub] = Sub(prefix, self.cursor)
            self._live[sub] = prefix
            return ack
        if self._holds(since) and since <= self.cursor:
            ack["history"] = "replayed"
            self._subs[sub] = Sub(prefix, since)
        else:
            ack["history"] = "reset"  # the gap fell out of the history: send the state instead
            state = list(current(prefix))
            state.reverse()
            self._subs[sub] = Sub(prefix, self.cursor, since, state)
        self._live.pop(sub, None)
        self._behind.add(sub)
        return ack

    def since(self, cursor: int, prefix: bytes) -> list[dict] | None:
        """The changes under `prefix` after `cursor`, as events, while the history still
        holds them all; None when it does not (the reader starts over from the state)."""
        if not (self._holds(cursor) and cursor <= self.cursor):
            return None
        return [event(c, k, e) for c, k, e in self._history if c > cursor and k.startswith(prefix)]

    def _holds(self, cursor: int) -> bool:
        """Whether every change after `cursor` is still in the history."""
        oldest = self._history[0][0] if self._history else self.cursor + 1
        return oldest <= cursor + 1

    # -- subscribers behind: pulled by the door as it can send ---------------------------

    @property
    def backlog(self) -> bool:
        """Whether some subscriber is behind (the door's pump has work)."""
        return bool(self._behind)

    def behind(self) -> list[Subscriber]:
        return list(self._behind)

    def stalled(self, client: bytes, rid: int, cursor: int) -> None:
        """The door could not send a live subscriber the event at `cursor` (its queue is
        full): from now on its events are pulled from the history, starting with that one."""
        sub = self._subs.get((client, rid))
        if sub is None or (client, rid) not in self._live:
            return
        sub.sent = cursor - 1
        del self._live[(client, rid)]
        self._behind.add((client, rid))

    def owed(self, client: bytes, rid: int) -> Iterator[dict]:
        """The events owed to a subscriber behind, in order. Call `sent` after each one goes
        out and stop at the first that cannot; running it to the end (everything sent) makes
        the subscriber live again. Exhaust or drop it before the next change is recorded."""
        sub = self._subs.get((client, rid))
        if sub is None:
            return
        if sub.lagged or not self._holds(sub.sent):
            if not sub.lagged:
                sub.lagged = True
                self.lagged += 1
            yield self._lagged_event(sub)
            return
        while sub.state:
            yield event(sub.sent, *sub.state[-1])  # the state is stamped with its cursor
        oldest = self._history[0][0] if self._history else self.cursor + 1
        for cursor, key, entry in islice(self._history, sub.sent + 1 - oldest, None):
            if key.startswith(sub.prefix):
                yield event(cursor, key, entry)
        sub.sent = self.cursor
        self._behind.discard((client, rid))
        self._live[(client, rid)] = sub.prefix

    def sent(self, client: bytes, rid: int, ev: dict) -> None:
        """The door sent `ev`, an event from `owed`."""
        sub = self._subs.get((client, rid))
        if sub is None:
            return
        if "error" in ev:
            self._end((client, rid))
        elif sub.state:
            sub.state.pop()
        else:
            sub.sent = ev["cursor"]

    def _lagged_event(self, sub: Sub) -> dict:
        # While it still owes the current state, only a reset (FROM the client's cursor)
        # makes the subscriber whole again.
        cursor = sub.since if sub.state and sub.since is not None else sub.sent
        return {"error": LAGGED, "cursor": cursor,
                "message": f"this watcher fell more than {self._history.maxlen} changes behind "
                           f"— resume with WATCH prefix FROM {cursor}"}

    # -- every subscriber --------------------------------------------------------------------

    def heartbeats(self) -> Outgoing:
        """A heartbeat owed to every live subscriber: the stream is alive, and where it
        stands. A subscriber behind hears its events (or cannot hear anything)."""
        beat = {"heartbeat": True, "cursor": self.cursor}
        return [(client, rid, beat) for client, rid in self._live]

    def cancel(self, client: bytes, rid: int) -> bool:
        return self._end((client, rid))

    def drop_client(self, client: bytes) -> None:
        for sub in [s for s in self._subs if s[0] == client]:
            self._end(sub)

    def _end(self, sub: Subscriber) -> bool:
        self._live.pop(sub, None)
        self._behind.discard(sub)
        return self._subs.pop(sub, None) is not None
