"""The on-disk format of a node's Raft state: checksummed records, drawn next to their code.
No I/O here: bytes in, records out, and what damage looks like.

    raft.log   | magic "KVRAFT01" | BASE | record | record | ...   (append-only)
    raft.snap  | magic "KVRSNAP1" | SNAPSHOT record |              (replaced atomically)

    record:   0          4          8
              +----------+----------+------------------------------+
              | crc32    | length   | payload (length bytes)       |
              +----------+----------+------------------------------+
              crc32   CRC-32 (zlib, big-endian) of the length field and the payload
              length  payload size, big-endian uint32

    payloads (msgpack arrays; the first number is the record type, ONLY APPEND):
              [1, index, term]                     BASE: the log follows snapshot (index, term)
              [2, term, vote | nil, commit]        HARD_STATE: the newest one counts
              [3, term, index, kind, data]         ENTRY: the next index, always
              [4, index]                           TRUNCATE: drop entries from index on
    snapshot: [index, term, [voter...], [learner...], data]

Damage is judged by what follows it: if no valid record starts anywhere after the bad offset,
the file ends inside a record a crash cut short (a torn tail: the save that wrote it never
returned, so nothing in it was promised to anyone) and it is dropped. If a valid record does
follow, the middle of the file is damaged, and dropping it could lose acknowledged entries:
`scan` reports it and the storage refuses to start.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

import msgpack

from kvd.raft.config import Config
from kvd.raft.messages import Entry, EntryKind, Snapshot
from kvd.raft.storage import HardState

LOG_MAGIC = b"KVRAFT01"
SNAP_MAGIC = b"KVRSNAP1"
HEADER = struct.Struct(">II")  # crc32, length
MAX_PAYLOAD = 1 << 31

_pack = msgpack.Packer(use_bin_type=True).pack


class Rec(enum.IntEnum):
    """ONLY APPEND: the numbers are on disk."""

    BASE = 1
    HARD_STATE = 2
    ENTRY = 3
    TRUNCATE = 4


def frame(payload: bytes) -> bytes:
    length = len(payload).to_bytes(4, "big")
    return zlib.crc32(payload, zlib.crc32(length)).to_bytes(4, "big") + length + payload


def base(index: int, term: int) -> bytes:
    return frame(_pack([Rec.BASE, index, term]))


def hard_state(hs: HardState) -> bytes:
    return frame(_pack([Rec.HARD_STATE, hs.term, hs.vote, hs.commit]))


def entries(batch: list[Entry]) -> bytes:
    return b"".join(frame(_pack([Rec.ENTRY, e.term, e.index, int(e.kind), e.data]))
                    for e in batch)


def truncate(index: int) -> bytes:
    return frame(_pack([Rec.TRUNCATE, index]))


def snapshot_file(s: Snapshot) -> bytes:
    c = s.config
    return SNAP_MAGIC + frame(_pack([s.index, s.term, sorted(c.voters), sorted(c.learners),
                                     s.data]))


@dataclass(frozen=True)
class Damage:
    offset: int
    reason: str
    torn: bool  # nothing valid follows: a crash mid-write, safe to cut off


@dataclass
class Scan:
    records: list[tuple[int, list]]  # (offset, payload)
    end: int  # where the good records end
    damage: Damage | None


def _record_at(data: bytes, off: int) -> tuple[list, int] | str:
    """The payload at `off` and the offset after it, or why there is none."""
    if off + HEADER.size > len(data):
        return "header cut short"
    crc, length = HEADER.unpack_from(data, off)
    start = off + HEADER.size
    if length > MAX_PAYLOAD or start + length > len(data):
        return "payload cut short"
    payload = data[start:start + length]
    if zlib.crc32(payload, zlib.crc32(data[off + 4:start])) != crc:
        return "checksum mismatch"
    try:
        obj = msgpack.unpackb(payload, raw=False)
    except Exception:  # a valid checksum over bytes we cannot have written
        return "checksum matches but the payload is not msgpack"
    if type(obj) is not list:
        return "payload is not an array"
    return obj, start + length


def scan(data: bytes, start: int) -> Scan:
    records: list[tuple[int, list]] = []
    off = start
    while off < len(data):
        got = _record_at(data, off)
        if isinstance(got, str):
            torn = not any(not isinstance(_record_at(data, k), str)
                           for k in range(off + 1, len(data) - HEADER.size + 1))
            return Scan(records, off, Damage(off, got, torn))
        records.append((off, got[0]))
        off = got[1]
    return Scan(records, off, None)


def parse_snapshot(data: bytes) -> Snapshot | str:
    """The snapshot file's content, or why it is not one."""
    if data[:len(SNAP_MAGIC)] != SNAP_MAGIC:
        return "not a snapshot file (bad magic)"
    got = _record_at(data, len(SNAP_MAGIC))
    if isinstance(got, str):
        return got
    try:
        index, term, voters, learners, blob = got[0]
        return Snapshot(_uint(index), _uint(term), Config.of(voters, learners), _bytes(blob))
    except (ValueError, TypeError):
        return "snapshot record has the wrong shape"


def parse_entry(payload: list) -> Entry:
    _, term, index, kind, data = payload
    return Entry(_uint(term), _uint(index), EntryKind(kind), _bytes(data))


def parse_hard_state(payload: list) -> HardState:
    _, term, vote, commit = payload
    if vote is not None and type(vote) is not str:
        raise ValueError("vote is not a node id")
    return HardState(_uint(term), vote, _uint(commit))


def _uint(v: object) -> int:
    if type(v) is not int or v < 0:
        raise ValueError("expected an unsigned integer")
    return v


def _bytes(v: object) -> bytes:
    if type(v) is not bytes:
        raise ValueError("expected bytes")
    return v
