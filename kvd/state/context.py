"""The request context: who asked, and when. Shared by the node and the command handlers."""

from __future__ import annotations


class Context:
    """Who asked, and when: what a handler may need beyond its arguments.

    A plain class: the loop makes one per turn, and a dataclass's default_factory
    made that a measurable part of a lone request's turn.
    """

    __slots__ = ("now", "client", "request_id", "events")

    def __init__(self, now: int, client: bytes = b"", request_id: int = 0) -> None:
        self.now = now  # wall-clock ms
        self.client = client
        self.request_id = request_id
        self.events: list = []  # WATCH events owed right away
