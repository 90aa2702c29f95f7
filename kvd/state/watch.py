"""WATCH: who listens to which prefix, and the recent history they can resume from.

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

Heartbeats: `heartbeats()` owes every subscriber a `{"heartbeat": True, "cursor": n}` event;
the server sends them about once a second, so a client that hears nothing for a few seconds
knows its stream is gone (the daemon restarted or the network dropped) and resubscribes
with FROM its last cursor.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from kvd.state.store import Entry

Subscriber = tuple[bytes, int]  # (client identity, request id)
Outgoing = list[tuple[bytes, int, dict]]


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


class WatchHub:
    def __init__(self, history: int = 10_000, first_cursor: int = 0) -> None:
        self.cursor = first_cursor
        self._history: deque[tuple[int, bytes, Entry]] = deque(maxlen=history)
        self._subs: dict[Subscriber, bytes] = {}

    def __len__(self) -> int:
        return len(self._subs)

    def record(self, key: bytes, entry: Entry) -> Outgoing:
        """Note one applied change; returns the events it owes subscribers."""
        self.cursor += 1
        self._history.append((self.cursor, key, entry))
        if not self._subs:
            return []
        return [
            (client, rid, event(self.cursor, key, entry))
            for (client, rid), prefix in self._subs.items()
            if key.startswith(prefix)
        ]

    def record_all(self, changes: list) -> Outgoing:
        """`record` for a turn's changes (objects with .key and .entry) at once: with no
        subscriber, which is the common case, it only extends the history."""
        if self._subs:
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
    ) -> tuple[dict, Outgoing]:
        """Start a stream. Returns the acknowledgement and the events owed right away."""
        self._subs[(client, rid)] = prefix
        ack = {"watching": prefix, "cursor": self.cursor, "history": "live"}
        if since is None:
            return ack, []
        oldest = self._history[0][0] if self._history else self.cursor + 1
        if oldest <= since + 1 <= self.cursor + 1:
            ack["history"] = "replayed"
            owed = [(c, k, e) for c, k, e in self._history if c > since and k.startswith(prefix)]
        else:
            ack["history"] = "reset"  # the gap fell out of the history: send the state instead
            owed = [(self.cursor, k, e) for k, e in current(prefix)]
        return ack, [(client, rid, event(c, k, e)) for c, k, e in owed]

    def heartbeats(self) -> Outgoing:
        """A heartbeat owed to every subscriber: the stream is alive, and where it stands."""
        beat = {"heartbeat": True, "cursor": self.cursor}
        return [(client, rid, beat) for client, rid in self._subs]

    def cancel(self, client: bytes, rid: int) -> bool:
        return self._subs.pop((client, rid), None) is not None

    def drop_client(self, client: bytes) -> None:
        for sub in [s for s in self._subs if s[0] == client]:
            del self._subs[sub]
