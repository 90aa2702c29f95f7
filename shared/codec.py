"""The message codec: bytes on the wire to typed messages and back.

Every kv message is one ZeroMQ frame holding a msgpack array that starts with the protocol
version and the message type (PROTOCOL.md has the full spec):

    REQUEST      [version, 1, request_id, [name, arg, ...]]
    REPLY        [version, 2, request_id, kind, value]
    BATCH        [version, 3, [[request_id, [name, arg, ...]], ...]]
    BATCH_REPLY  [version, 4, [[request_id, kind, value], ...]]
    EVENT        [version, 5, request_id, {event}]
    CANCEL       [version, 6, request_id]
    peer types   [version, 7..16, cluster, sender, {body}]   (JOIN, WELCOME, HEARTBEAT, GOSSIP,
                 CATCHUP, CATCHUP_REPLY, SYNC, SYNC_REPLY, SYNC_PUSH, LEAVE: node to node only)

Anything that does not decode into one of these raises `ProtocolError`, and nothing else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

from shared.errors import KvError, ProtocolError, ServerError, VersionError

PROTOCOL_VERSION = 1
MAX_BATCH = 10_000  # requests in one BATCH; more is a protocol error, not a memory bill


class MsgType(enum.IntEnum):
    """ONLY APPEND: the numbers are the protocol."""

    REQUEST = 1
    REPLY = 2
    BATCH = 3
    BATCH_REPLY = 4
    EVENT = 5
    CANCEL = 6
    # node to node (kvd.cluster.cluster): [version, type, cluster, sender, {body}]
    JOIN = 7
    WELCOME = 8
    HEARTBEAT = 9
    GOSSIP = 10
    CATCHUP = 11
    CATCHUP_REPLY = 12
    SYNC = 13
    SYNC_REPLY = 14
    SYNC_PUSH = 15
    LEAVE = 16
    RAFT = 17  # a Raft message (kvd.raft.messages) between members: {"m": bytes}


class ReplyKind(enum.IntEnum):
    """ONLY APPEND: the numbers are the protocol."""

    STATUS = 0  # a short text: OK, PONG
    BYTES = 1
    INT = 2
    NIL = 3
    LIST = 4
    MAP = 5
    ERROR = 6  # value is [code, message]
    RESULTS = 7  # EXEC: [[kind, value], ...], one per queued command, errors among them


class Results(list):
    """A RESULTS reply's value: one per command of a transaction; an error among them is a
    KvError (on the client side a ServerError) in its place, not raised."""


_KIND_OF_TYPE: dict[type, ReplyKind] = {
    str: ReplyKind.STATUS,
    bytes: ReplyKind.BYTES,
    int: ReplyKind.INT,
    bool: ReplyKind.INT,
    type(None): ReplyKind.NIL,
    list: ReplyKind.LIST,
    tuple: ReplyKind.LIST,
    dict: ReplyKind.MAP,
    Results: ReplyKind.RESULTS,
}


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much
class Request:
    request_id: int
    argv: list[bytes]  # the command name first


@dataclass(slots=True)
class Batch:
    """A BATCH as decoded: its [request id, argv] pairs, checked, in the order sent.

    Kept as the pairs msgpack built rather than one Request object each: the daemon's batch
    path reads them in a tight loop, and an object per request was a tenth of its cost.
    """

    requests: list[list]  # [int, list[bytes]]


@dataclass(frozen=True, slots=True)
class Reply:
    request_id: int
    kind: ReplyKind
    value: object

    @property
    def is_error(self) -> bool:
        return self.kind is ReplyKind.ERROR


@dataclass(frozen=True, slots=True)
class Event:
    request_id: int
    event: dict


@dataclass(frozen=True, slots=True)
class Cancel:
    request_id: int


@dataclass(frozen=True, slots=True)
class Peer:
    """A node-to-node message; the body's fields are checked by kvd.cluster.cluster, per type."""

    type: MsgType
    cluster: str
    sender: str
    body: dict


PEER_TYPES = frozenset(MsgType) - {MsgType.REQUEST, MsgType.REPLY, MsgType.BATCH,
                                   MsgType.BATCH_REPLY, MsgType.EVENT, MsgType.CANCEL}

Message = Peer | Request | Batch | Reply | list[Reply] | Event | Cancel


_REQUEST, _REPLY = int(MsgType.REQUEST), int(MsgType.REPLY)  # plain ints: cheaper to compare
_RESULTS = ReplyKind.RESULTS


def kind_of(value: object) -> ReplyKind:
    if isinstance(value, KvError):
        return ReplyKind.ERROR
    kind = _KIND_OF_TYPE.get(type(value))
    if kind is None:
        raise TypeError(f"no reply kind for {type(value).__name__}")
    return kind


def _wire_value(value: object) -> object:
    if isinstance(value, KvError):
        return [value.code, value.message]
    if type(value) is Results:
        return [[kind_of(v), _wire_value(v)] for v in value]
    return value


_packer = msgpack.Packer(use_bin_type=True)


def pack(obj: object) -> bytes:
    return _packer.pack(obj)


def encode_request(request_id: int, argv: list[bytes]) -> bytes:
    return _packer.pack([PROTOCOL_VERSION, MsgType.REQUEST, request_id, argv])


def encode_batch(requests: list[tuple[int, list[bytes]]]) -> bytes:
    return _packer.pack([PROTOCOL_VERSION, MsgType.BATCH, requests])


def encode_reply(request_id: int, value: object) -> bytes:
    kind = _KIND_OF_TYPE.get(type(value))  # no KvError is among these types
    if kind is not None and kind is not ReplyKind.RESULTS:
        return _packer.pack([PROTOCOL_VERSION, _REPLY, request_id, kind, value])
    return _packer.pack(
        [PROTOCOL_VERSION, _REPLY, request_id, kind_of(value), _wire_value(value)]
    )


def encode_batch_reply(replies: list[tuple[int, object]]) -> bytes:
    kinds = _KIND_OF_TYPE  # one type lookup per reply: the common kinds need no isinstance
    body = [[rid, k, v] if (k := kinds.get(type(v))) is not None and k is not _RESULTS
            else [rid, kind_of(v), _wire_value(v)] for rid, v in replies]
    return _packer.pack([PROTOCOL_VERSION, MsgType.BATCH_REPLY, body])


def encode_event(request_id: int, event: dict) -> bytes:
    return _packer.pack([PROTOCOL_VERSION, MsgType.EVENT, request_id, event])


def encode_cancel(request_id: int) -> bytes:
    return _packer.pack([PROTOCOL_VERSION, MsgType.CANCEL, request_id])


def encode_peer(msg: Peer) -> bytes:
    return _packer.pack([PROTOCOL_VERSION, msg.type, msg.cluster, msg.sender, msg.body])


def unpack(frame: bytes) -> object:
    """msgpack to Python, with every decoder failure folded into ProtocolError."""
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises a zoo of types; all mean "not a kv frame"
        raise ProtocolError(f"frame is not valid msgpack ({type(exc).__name__})") from None


def decode(frame: bytes) -> Message:
    """One frame to one message, or ProtocolError / VersionError."""
    msg = unpack(frame)
    if type(msg) is list and len(msg) == 4 and msg[1] == _REQUEST and msg[0] == PROTOCOL_VERSION:
        # A well-formed REQUEST, the daemon's commonest message: checked inline. Anything
        # unusual in it takes the general path below, which says what is wrong.
        rid, argv = msg[2], msg[3]
        if type(rid) is int and 0 <= rid < 2**63 and type(argv) is list and argv:
            for arg in argv:
                if type(arg) is not bytes:
                    break
            else:
                return Request(rid, argv)
    if not isinstance(msg, list) or len(msg) < 3:
        raise ProtocolError("frame is not a kv message: expected [version, type, ...]")
    version, mtype = msg[0], msg[1]
    if version != PROTOCOL_VERSION:
        raise VersionError(
            f"protocol version {version!r} is not spoken here (this side speaks "
            f"{PROTOCOL_VERSION}) — use a kvsh/kvd of the same release"
        )
    decoder = _DECODERS.get(mtype) if isinstance(mtype, int) else None
    if decoder is None:
        raise ProtocolError(f"unknown message type {mtype!r}")
    return decoder(msg)


def _request_id(value: object) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise ProtocolError("request id must be a non-negative integer")
    return value


def _argv(value: object) -> list[bytes]:
    if type(value) is list and value:
        for item in value:
            if type(item) is not bytes:
                break
        else:
            return value  # the common case, every argument already bytes: no copy
    if not isinstance(value, list) or not value:
        raise ProtocolError("command must be a non-empty array of strings")
    out = []
    for item in value:
        if type(item) is bytes:
            out.append(item)
        elif type(item) is str:
            out.append(item.encode("utf-8", "surrogateescape"))
        else:
            raise ProtocolError("command arguments must be byte strings")
    return out


def _decode_request(msg: list) -> Request:
    if len(msg) != 4:
        raise ProtocolError("REQUEST has 4 fields: [version, type, id, argv]")
    return Request(_request_id(msg[2]), _argv(msg[3]))


def _decode_batch(msg: list) -> Batch:
    items = msg[2]
    if len(msg) != 3 or not isinstance(items, list) or not items or len(items) > MAX_BATCH:
        raise ProtocolError(f"BATCH carries 1 to {MAX_BATCH} [id, argv] pairs")
    for item in items:
        if type(item) is not list or len(item) != 2:
            raise ProtocolError("BATCH items are [id, argv] pairs")
        rid, argv = item
        if type(rid) is not int or not 0 <= rid < 2**63:
            raise ProtocolError("request id must be a non-negative integer")
        if type(argv) is list and argv:
            for arg in argv:
                if type(arg) is not bytes:
                    item[1] = _argv(argv)  # text arguments become bytes; others are refused
                    break
        else:
            _argv(argv)  # raises
    return Batch(items)


def _reply(rid: object, kind: object, value: object) -> Reply:
    try:
        rkind = ReplyKind(kind)
    except ValueError:
        raise ProtocolError(f"unknown reply kind {kind!r}") from None
    if rkind is ReplyKind.ERROR and not (isinstance(value, list) and len(value) == 2):
        raise ProtocolError("an ERROR reply carries [code, message]")
    if rkind is ReplyKind.RESULTS:
        value = _results(value)
    return Reply(_request_id(rid), rkind, value)


def _results(value: object) -> Results:
    """A RESULTS reply's [[kind, value], ...] as values, each error a ServerError."""
    if not isinstance(value, list):
        raise ProtocolError("a RESULTS reply carries a list of [kind, value]")
    out = Results()
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise ProtocolError("a RESULTS reply carries a list of [kind, value]")
        result = _reply(0, item[0], item[1])
        if result.is_error:
            code, message = result.value  # type: ignore[misc]
            out.append(ServerError(str(code), str(message)))
        else:
            out.append(result.value)
    return out


def _decode_reply(msg: list) -> Reply:
    if len(msg) != 5:
        raise ProtocolError("REPLY has 5 fields: [version, type, id, kind, value]")
    return _reply(msg[2], msg[3], msg[4])


def _decode_batch_reply(msg: list) -> list[Reply]:
    if len(msg) != 3 or not isinstance(msg[2], list):
        raise ProtocolError("BATCH_REPLY carries a list of [id, kind, value]")
    out = []
    for item in msg[2]:
        if not isinstance(item, list) or len(item) != 3:
            raise ProtocolError("BATCH_REPLY items are [id, kind, value]")
        out.append(_reply(*item))
    return out


def _decode_event(msg: list) -> Event:
    if len(msg) != 4 or not isinstance(msg[3], dict):
        raise ProtocolError("EVENT has 4 fields: [version, type, id, event]")
    return Event(_request_id(msg[2]), msg[3])


def _decode_cancel(msg: list) -> Cancel:
    if len(msg) != 3:
        raise ProtocolError("CANCEL has 3 fields: [version, type, id]")
    return Cancel(_request_id(msg[2]))


def _decode_peer(msg: list) -> Peer:
    if len(msg) != 5 or not isinstance(msg[2], str) or not isinstance(msg[3], str) \
            or not isinstance(msg[4], dict):
        raise ProtocolError("a peer message has 5 fields: [version, type, cluster, sender, {}]")
    return Peer(MsgType(msg[1]), msg[2], msg[3], msg[4])


_DECODERS = {
    MsgType.REQUEST: _decode_request,
    MsgType.REPLY: _decode_reply,
    MsgType.BATCH: _decode_batch,
    MsgType.BATCH_REPLY: _decode_batch_reply,
    MsgType.EVENT: _decode_event,
    MsgType.CANCEL: _decode_cancel,
    **{t: _decode_peer for t in PEER_TYPES},
}
