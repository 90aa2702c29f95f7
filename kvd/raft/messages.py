"""Raft's messages and their wire codec.

Every message is one msgpack array (the frame a transport carries):

    [version, type, src, dst, term, field, ...]

    version  PROTOCOL_VERSION (1)
    type     MsgType: ONLY APPEND, the numbers are the protocol
    src, dst node ids (non-empty strings, at most 255 characters)
    term     the sender's current term (a uint)
    fields   the type's own, in the dataclass's order after `term` (see _FIELDS below):
             uint, bool, bin, entries = [[term, index, kind, data], ...],
             snapshot = [index, term, [voter, ...], [learner, ...], data]

`decode` accepts exactly what `encode` produces and raises `RaftProtocolError` for anything
else (it sits on a network port): a wrong version, type, arity or field type, an entry batch
whose indexes are not consecutive after `prev_index` or whose terms go down or past the
message's term, a config entry whose data is not a ConfChange, an overlapping voter/learner
set. What the core receives is therefore well formed, though not necessarily true.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields

import msgpack

from kvd.raft.config import ConfChange, Config
from kvd.raft.errors import RaftProtocolError

PROTOCOL_VERSION = 1
MAX_UINT = (1 << 63) - 1
MAX_NODE_ID = 255


class EntryKind(enum.IntEnum):
    """ONLY APPEND: the numbers are in logs and on the wire."""

    NORMAL = 0  # the caller's data
    CONFIG = 1  # data is an encoded ConfChange
    NOOP = 2  # a new leader's first entry: commits the entries of earlier terms (Figure 8)


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of `index` (an entry of `term`), and the configuration then."""

    index: int
    term: int
    config: Config
    data: bytes = b""


class MsgType(enum.IntEnum):
    """ONLY APPEND: the numbers are the protocol."""

    VOTE = 1
    VOTE_RESP = 2
    APPEND = 3
    APPEND_RESP = 4
    HEARTBEAT = 5
    HEARTBEAT_RESP = 6
    SNAPSHOT = 7
    TIMEOUT_NOW = 8


@dataclass(slots=True)
class VoteRequest:
    """A (pre-)vote request. A pre-vote carries the term the sender *would* campaign in and
    changes no one's term; `transfer` marks a campaign a leader asked for (TimeoutNow), which
    voters grant even while they still hear from a leader."""

    src: str
    dst: str
    term: int
    last_index: int
    last_term: int
    pre: bool = False
    transfer: bool = False


@dataclass(slots=True)
class VoteResponse:
    src: str
    dst: str
    term: int
    granted: bool
    pre: bool = False


@dataclass(slots=True)
class AppendEntries:
    src: str
    dst: str
    term: int
    prev_index: int
    prev_term: int
    entries: list[Entry]
    commit: int


@dataclass(slots=True)
class AppendResponse:
    """Success: the follower's log matches the leader's up to `index`. Rejection: `index` is
    the rejected `prev_index`, and (hint_index, hint_term) is the follower's last entry at or
    below it whose term is <= the rejected prev_term: the leader can skip a whole term of
    mismatching entries per round trip (etcd's reject hint)."""

    src: str
    dst: str
    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@dataclass(slots=True)
class Heartbeat:
    """`commit` is at most what the follower is known to hold; `ctx` names the ReadIndex
    round this heartbeat confirms leadership for (empty: none)."""

    src: str
    dst: str
    term: int
    commit: int
    ctx: bytes = b""


@dataclass(slots=True)
class HeartbeatResponse:
    src: str
    dst: str
    term: int
    ctx: bytes = b""


@dataclass(slots=True)
class InstallSnapshot:
    src: str
    dst: str
    term: int
    snapshot: Snapshot


@dataclass(slots=True)
class TimeoutNow:
    """The leader hands over: campaign now, without pre-vote."""

    src: str
    dst: str
    term: int


Message = (VoteRequest | VoteResponse | AppendEntries | AppendResponse | Heartbeat
           | HeartbeatResponse | InstallSnapshot | TimeoutNow)


# -- field codecs ---------------------------------------------------------------------------


def _fail(why: str) -> RaftProtocolError:
    return RaftProtocolError(f"bad raft message: {why}")


def _uint(v: object) -> int:
    if type(v) is not int or not 0 <= v <= MAX_UINT:
        raise _fail("expected an unsigned integer")
    return v


def _bool(v: object) -> bool:
    if type(v) is not bool:
        raise _fail("expected a boolean")
    return v


def _bin(v: object) -> bytes:
    if type(v) is not bytes:
        raise _fail("expected bytes")
    return v


def _node(v: object) -> str:
    if type(v) is not str or not 0 < len(v) <= MAX_NODE_ID:
        raise _fail("expected a node id")
    return v


def _list(v: object, n: int | None = None) -> list:
    if type(v) is not list or (n is not None and len(v) != n):
        raise _fail("expected an array" + (f" of {n}" if n is not None else ""))
    return v


def _entry(v: object) -> Entry:
    term, index, kind, data = _list(v, 4)
    if type(kind) is not int or kind not in EntryKind._value2member_map_:
        raise _fail("unknown entry kind")
    entry = Entry(_uint(term), _uint(index), EntryKind(kind), _bin(data))
    if entry.kind is EntryKind.CONFIG:
        try:
            ConfChange.decode(entry.data)
        except ValueError as exc:
            raise _fail(str(exc)) from None
    return entry


def _entries(v: object) -> list[Entry]:
    return [_entry(e) for e in _list(v)]


def _snapshot(v: object) -> Snapshot:
    index, term, voters, learners, data = _list(v, 5)
    config = Config.of([_node(n) for n in _list(voters)], [_node(n) for n in _list(learners)])
    if config.voters & config.learners:
        raise _fail("a node is both voter and learner")
    return Snapshot(_uint(index), _uint(term), config, _bin(data))


def _wire_entries(entries: list[Entry]) -> list:
    return [[e.term, e.index, int(e.kind), e.data] for e in entries]


def _wire_snapshot(s: Snapshot) -> list:
    return [s.index, s.term, sorted(s.config.voters), sorted(s.config.learners), s.data]


def _same(v: object) -> object:
    return v


# kind -> (to the wire, from the wire)
_KINDS: dict[str, tuple[Callable[[object], object], Callable[[object], object]]] = {
    "int": (_same, _uint),
    "bool": (_same, _bool),
    "bytes": (_same, _bin),
    "list[Entry]": (_wire_entries, _entries),  # type: ignore[dict-item]
    "Snapshot": (_wire_snapshot, _snapshot),  # type: ignore[dict-item]
}

_TYPES: dict[type, MsgType] = {
    VoteRequest: MsgType.VOTE, VoteResponse: MsgType.VOTE_RESP,
    AppendEntries: MsgType.APPEND, AppendResponse: MsgType.APPEND_RESP,
    Heartbeat: MsgType.HEARTBEAT, HeartbeatResponse: MsgType.HEARTBEAT_RESP,
    InstallSnapshot: MsgType.SNAPSHOT, TimeoutNow: MsgType.TIMEOUT_NOW,
}
_CLASSES = {int(t): cls for cls, t in _TYPES.items()}
# per type: (name, to wire, from wire) of the fields after src, dst, term
_FIELDS = {int(t): [(f.name, *_KINDS[str(f.type)]) for f in fields(cls)[3:]]
           for cls, t in _TYPES.items()}

_packer = msgpack.Packer(use_bin_type=True)


def encode(msg: Message) -> bytes:
    t = _TYPES[type(msg)]
    body = [enc(getattr(msg, name)) for name, enc, _ in _FIELDS[t]]
    return _packer.pack([PROTOCOL_VERSION, t, msg.src, msg.dst, msg.term, *body])


def decode(frame: bytes) -> Message:
    try:
        obj = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types; all mean "not a raft frame"
        raise _fail(f"not msgpack ({type(exc).__name__})") from None
    head = _list(obj)
    if len(head) < 5 or head[0] != PROTOCOL_VERSION or type(head[0]) is not int:
        raise _fail("not a version 1 raft message")
    t = head[1]
    if type(t) is not int or t not in _CLASSES:
        raise _fail("unknown message type")
    spec = _FIELDS[t]
    if len(head) != 5 + len(spec):
        raise _fail(f"type {t} has {len(spec)} fields")
    values = [dec(v) for (_, _, dec), v in zip(spec, head[5:], strict=True)]
    msg = _CLASSES[t](_node(head[2]), _node(head[3]), _uint(head[4]), *values)
    if isinstance(msg, AppendEntries):
        _check_batch(msg)
    return msg


def _check_batch(msg: AppendEntries) -> None:
    """What the core's log matching relies on: consecutive indexes after prev_index, terms
    that never go down and never exceed the sender's term."""
    index, term = msg.prev_index, msg.prev_term
    for e in msg.entries:
        if e.index != index + 1 or e.term < term or e.term > msg.term:
            raise _fail("entries out of order")
        index, term = e.index, e.term
