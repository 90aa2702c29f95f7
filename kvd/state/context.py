"""The request context: who asked, and when. Shared by the node and the command handlers."""

from __future__ import annotations


class Context:
    """Who asked, and when: what a handler may need beyond its arguments.

    A plain class: the loop makes one per turn, and a dataclass's default_factory
    made that a measurable part of a lone request's turn.
    """

    __slots__ = ("now", "wall", "client", "request_id", "events")

    def __init__(self, now: int, client: bytes = b"", request_id: int = 0,
                 wall: int | None = None) -> None:
        # `now` judges data (expiry, TTL): the hybrid clock's time (HybridClock.time_ms), the
        # same moment on every node however their wall clocks disagree. `wall` is this host's
        # clock, what timers (membership, repair) run on; the two differ only under skew.
        self.now = now
        self.wall = now if wall is None else wall
        self.client = client
        self.request_id = request_id
        self.events: list = []  # WATCH events owed right away
