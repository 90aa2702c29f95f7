"""What a command handler is given: the request context (who asked, and when) and the view
of the node it may use. Shared by the node and the handler modules, so neither imports the
other's module for its types."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kvd.state.access import Access
from kvd.state.store import Entry, Store
from kvd.state.transaction import Transactions
from kvd.state.users import User, Users
from kvd.state.watch import WatchHub


class Context:
    """Who asked, and when: what a handler may need beyond its arguments.

    A plain class: the loop makes one per turn, and a dataclass's default_factory
    made that a measurable part of a lone request's turn.
    """

    __slots__ = ("now", "wall", "client", "request_id", "user", "source", "deferrable",
                 "deferred")

    def __init__(self, now: int, client: bytes = b"", request_id: int = 0,
                 wall: int | None = None) -> None:
        # `now` judges data (expiry, TTL): the hybrid clock's time (HybridClock.time_ms), the
        # same moment on every node however their wall clocks disagree. `wall` is this host's
        # clock, what timers (membership, repair) run on; the two differ only under skew.
        self.now = now
        self.wall = now if wall is None else wall
        self.client = client
        self.request_id = request_id
        # Who asked, once users exist (kvd.state.access): the door sets both before every
        # request — the context is shared by a turn's requests, so a stale user would leak.
        self.user: User | None = None
        self.source = ""  # the client's address ("host:port"), for first-user and back-off
        # The door can send this request's reply later (a Deferred): the native door's lone
        # requests, the Redis door's outside MULTI, the HTTP door's coordination routes; a
        # native BATCH cannot (its replies travel in one message).
        self.deferrable = False
        # Set when a handler answered with a Deferred: the door that cleared it before a
        # batch knows, without looking at every reply, that one of them comes later.
        self.deferred = False


class Deferred:
    """A reply that comes later: a coordination command answers once the consensus group has
    committed and applied it (kvd.consensus). The door that got it sends `value` when told."""

    __slots__ = ("done", "value", "_callbacks")

    def __init__(self) -> None:
        self.done = False
        self.value: object = None
        self._callbacks: list[Callable[[object], None]] = []

    def then(self, callback: Callable[[object], None]) -> None:
        if self.done:
            callback(self.value)
        else:
            self._callbacks.append(callback)

    def resolve(self, value: object) -> None:
        if self.done:
            return
        self.done, self.value = True, value
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(value)


class Node(Protocol):
    """What a handler may use of the node (kvd.state.node.Node, which dispatches to the
    handlers here): its store and watch hub to read, `write` to change anything."""

    name: str
    address: str
    max_value: int
    store: Store
    watches: WatchHub
    users: Users
    access: Access
    hidden_changes: bool
    members_source: Callable[[int], list[dict]] | None
    coordinator: Callable[[tuple], Deferred] | None
    observer: Callable[[bytes, int | None, int], object] | None
    operator: Callable[[tuple], object] | None
    transactions: Transactions

    def execute(self, argv: list[bytes], ctx: Context) -> object: ...
    def write(self, key: bytes, value: bytes | None, expires_at: int = 0) -> Entry: ...
    def info(self, now: int) -> dict: ...
