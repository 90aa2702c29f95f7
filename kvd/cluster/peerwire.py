"""Peer message bodies: checking what arrives and shaping what leaves.

Every field of a peer message is checked for its type before any of it is used, so a
malformed message raises one ProtocolError (counted and dropped by the cluster) and never
reaches the store half-applied. The body layouts are specified in PROTOCOL.md section 9.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kvd.cluster.membership import Status
from kvd.cluster.replication import stable_from_wire
from kvd.state.store import Entry
from shared.codec import MsgType, Peer
from shared.errors import ProtocolError

STATUS = {s.value: s for s in Status}
T = TypeVar("T")


class Dest(enum.Enum):
    PUBLISH = "publish"  # to every subscriber of our gossip socket
    REQUEST = "request"  # to the ROUTER of the member at `to` (host:port)
    REPLY = "reply"  # back to whoever sent the request being handled


@dataclass(frozen=True, slots=True)
class Out:
    dest: Dest
    msg: Peer
    to: str = ""


@dataclass(frozen=True, slots=True)
class Outbox:
    """Shapes this node's outgoing messages: each carries our cluster's name and our own."""

    cluster: str
    sender: str

    def message(self, mtype: MsgType, body: dict) -> Peer:
        return Peer(mtype, self.cluster, self.sender, body)

    def publish(self, mtype: MsgType, body: dict) -> Out:
        return Out(Dest.PUBLISH, self.message(mtype, body))

    def request(self, address: str, mtype: MsgType, body: dict) -> Out:
        return Out(Dest.REQUEST, self.message(mtype, body), address)

    def reply(self, mtype: MsgType, body: dict) -> Out:
        return Out(Dest.REPLY, self.message(mtype, body))


def wire_item(seq: int, key: bytes, e: Entry) -> list:
    return [seq, key, e.value, e.stamp, e.expires_at]


# What one entry costs on the wire besides its key, value and origin name: msgpack headers of
# the item array, key and value, and up to three 9-byte integers (seq, stamp, expiry).
ENTRY_OVERHEAD = 48
# Room left in a frame for the message around its entries (type, cluster and sender names,
# origin, epoch, base, cursors): far less than this.
ENVELOPE = 64 * 1024


def item_size(w: list) -> int:
    """Wire bytes of a stream item [seq, key, value, stamp, expires_at]."""
    value = w[2]
    return len(w[1]) + (0 if value is None else len(value)) + ENTRY_OVERHEAD


def entry_size(w: list) -> int:
    """Wire bytes of a sync entry [key, value, stamp, origin, expires_at]."""
    value = w[1]
    return len(w[0]) + (0 if value is None else len(value)) + len(w[3]) + ENTRY_OVERHEAD


def fitting(items: list, size: Callable[[list], int], max_count: int, max_bytes: int,
            start: int = 0) -> int:
    """How many of `items` from `start` go into one message: up to `max_count` and `max_bytes`,
    and always at least one (an entry bigger than `max_bytes` travels alone; see
    Settings.chunk_bytes for why that still fits the receiver's frame limit)."""
    total, end, stop = 0, start, min(len(items), start + max_count)
    while end < stop:
        total += size(items[end])
        if total > max_bytes and end > start:
            break
        end += 1
    return end - start


def split(items: list, size: Callable[[list], int], max_count: int,
          max_bytes: int) -> list[list]:
    """`items` in consecutive chunks, each as `fitting` allows."""
    chunks, start = [], 0
    while start < len(items):
        n = fitting(items, size, max_count, max_bytes, start)
        chunks.append(items[start:start + n])
        start += n
    return chunks


def check(cond: bool, what: str) -> None:
    if not cond:
        raise ProtocolError(f"malformed peer message: {what}")


def item_from_wire(w: object) -> tuple[int, bytes, Entry]:
    """A sync entry ([key, value, stamp, origin, expires_at]) to (0, key, entry)."""
    if type(w) is not list or len(w) != 5:
        raise ProtocolError("malformed peer message: an entry is a 5-item array")
    key, value, stamp, origin, exp = w
    if not (type(key) is bytes and (value is None or type(value) is bytes)
            and type(stamp) is int and type(origin) is str and type(exp) is int
            and stamp >= 0 and exp >= 0):
        raise ProtocolError("malformed peer message: entry fields have the wrong types")
    return 0, key, Entry(value, stamp, origin, exp)


def items_from_wire(raw: list, origin: str) -> list[tuple[int, bytes, Entry]]:
    """The items of one origin's stream (GOSSIP, CATCHUP_REPLY: [seq, key, value, stamp,
    expires_at] each) to (seq, key, entry); one bad item refuses them all.

    One loop with one expression per item and no calls but the Entry: this runs for every
    write every peer makes.
    """
    if type(origin) is not str:
        raise ProtocolError("malformed peer message: entry fields have the wrong types")
    out = []
    append = out.append
    for w in raw:
        if type(w) is not list or len(w) != 5:
            raise ProtocolError("malformed peer message: an entry is a 5-item array")
        seq, key, value, stamp, exp = w
        if not (type(seq) is int and type(key) is bytes
                and (value is None or type(value) is bytes)
                and type(stamp) is int and type(exp) is int and stamp >= 0 and exp >= 0):
            raise ProtocolError("malformed peer message: entry fields have the wrong types")
        append((seq, key, Entry(value, stamp, origin, exp)))
    return out


def get_field(body: dict, name: str, kind: type[T]) -> T:
    """A body field of exactly this type (bool is not taken for int, nor int for bool)."""
    value = body.get(name)
    check(type(value) is kind, f"{name} must be {kind.__name__}")
    return value  # type: ignore[return-value]  # checked just above


def progress(raw: dict) -> dict:
    out = {}
    for origin, v in raw.items():
        check(type(origin) is str and isinstance(v, list) and len(v) == 5, "progress")
        epoch, base, seq, stable, frozen = v
        check(all(type(x) is int for x in (epoch, base, seq, stable)) and type(frozen) is bool,
               "progress")
        out[origin] = [epoch, base, seq, stable_from_wire(stable), frozen]
    return out
