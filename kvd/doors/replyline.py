"""A connection's replies in request order when some of them come later, sans-IO.

A coordination command (kvd.state.coordcmds) answers once the Raft group has committed and
applied it, turns after it was read; a pipelining client still wants its replies in the order
it sent the requests (RESP has no request ids). So the door keeps a placeholder (`Later`) where
that reply goes, and every reply behind it waits until it is filled.

The door builds each turn's replies in a plain list (`Connection.replies`, whose positions its
failed-commit handling rewrites), and notes where a placeholder goes with `hold`. When the
turn's replies are about to leave, `release` lines them up behind what already waits and gives
back the ones that may go now: everything before the first placeholder still unfilled.
"""

from __future__ import annotations

from collections import deque


class Later:
    """A reply still to come; `data` is its encoded bytes once it has."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None


class ReplyLine:
    __slots__ = ("held", "laters")

    def __init__(self) -> None:
        self.held: deque[bytes | Later] = deque()  # waiting behind an unfilled Later
        self.laters: list[tuple[int, Later]] = []  # this turn's: before replies[index]

    def hold(self, index: int) -> Later:
        """A placeholder for a reply that goes before this turn's `replies[index]` (index:
        how many replies the turn has so far)."""
        later = Later()
        self.laters.append((index, later))
        return later

    @property
    def owing(self) -> bool:
        """Whether a reply is still to come (or waits behind one that is)."""
        return bool(self.held or self.laters)

    def __len__(self) -> int:
        return len(self.held)

    def release(self, replies: list[bytes]) -> list[bytes]:
        """This turn's `replies` lined up behind what waits; returns what may be sent now."""
        held = self.held
        at = 0
        for index, later in self.laters:
            held.extend(replies[at:index])
            held.append(later)
            at = index
        held.extend(replies[at:])
        self.laters = []
        ready: list[bytes] = []
        while held:
            item = held[0]
            if isinstance(item, Later):
                if item.data is None:
                    break
                ready.append(item.data)
            else:
                ready.append(item)
            held.popleft()
        return ready
