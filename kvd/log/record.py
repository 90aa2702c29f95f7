"""The log's record format: bytes in, entries out, and what a damaged file looks like. No I/O.

A log file is a magic string followed by self-delimiting, checksummed records:

    file:    | magic "KVWAL002" (8 bytes) | record | record | ... |

             "KVWAL001": a file from before batch records; read as ever, and appended to in
             single entries only until compaction rewrites it as a "KVWAL002" file

    record:  0          4          8
             +----------+----------+--------------------------------+
             | crc32    | length   | payload (length bytes)         |
             +----------+----------+--------------------------------+
             crc32   CRC-32 (zlib/IEEE, big-endian) of the length field and the payload, so a
                     flipped bit in the length is caught like one in the payload. (Not CRC32C:
                     the standard library has no CRC32C, and zlib's runs in C at memory speed.)
             length  payload size in bytes, big-endian uint32

    payload: msgpack, one of
             [key: bin, value: bin | nil, stamp: uint, origin: str, expires_at: uint, seq: uint]
                 an entry exactly as replication sees it; a nil value is a deletion
                 (tombstone); seq is the write's number in its origin's sequence, 0 if unknown
             [1, [entry, entry, ...]]
                 a batch: a turn's entries (each the 6-array above), in the order applied.
                 The live log writes one per turn of two writes or more; a turn of one, or
                 one whose batch is over BATCH_BYTES (so no record nears MAX_PAYLOAD), is
                 written as single entries. Logs written before batches hold single
                 entries only; both forms are read, mixed in any order.
             {origin: seq, ...}
                 a checkpoint: the highest seq seen per origin, written at the top of a
                 rewritten log so compaction does not forget the sequences

Why a batch: one record per turn packs, checksums and frames once instead of once per write
(the per-record work was most of a SET's log cost), and a turn is all or nothing anyway:
its replies go out only after the commit, and a crash mid-write tears at most the last turn.
Why rows and not columns (the origin once, keys together, ...): a turn can mix origins (peers'
writes with local ones), and rows unpack straight into the tuples replay wants; columns saved
a few bytes per write and cost a regrouping on both sides.

Why a new magic: a kvd from before batches takes a batch record for damage, and when no
record of its kind follows (a log of batches), for a torn tail that it cuts off with only a
warning. "KVWAL002" makes it refuse the whole file instead (bad magic, not torn), and a
KVWAL001 file gets no batch, so going back a version loses nothing silently.

The reader yields entries one by one whatever record held them, and counts entries, not
records: `count` is what the log holds, which the live-size estimate divides by.

Damage is classified by what follows it, not by guessing from the bytes themselves: if no
valid record can be found anywhere after the damaged offset, the file simply ends inside a
record (a crash mid-write, a "torn tail"), which is safe to cut off. If a valid record does
follow, something in the middle of the log is corrupt, and dropping it silently could lose
acknowledged writes: that needs an operator. (The one way to fool this is a torn record whose
value itself holds a complete, valid record; the node then refuses to start and `--repair`
does what start-up would have done.)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack

from kvd.state.store import Entry

MAGIC = b"KVWAL002"  # what this version starts a file with: it may hold batches
MAGIC_V1 = b"KVWAL001"  # a file from before batches: single entries only (see above)
HEADER = struct.Struct(">II")  # crc32, length
HEADER_SIZE = HEADER.size
_LENGTH = struct.Struct(">I")  # the length field alone: what the CRC starts with
# One Packer for every record: building one per call (as msgpack.packb does) allocates and
# frees its 256 KiB buffer each time, a cost a lone SET's commit pays on a cold path. pack()
# runs in C without releasing the GIL or calling back into Python for these types, so
# sharing it between threads is safe.
_pack = msgpack.Packer(use_bin_type=True).pack
MAX_PAYLOAD = 1 << 30  # far above any legal record (64 KiB key + max value); a sanity bound
BATCH_BYTES = 1 << 26  # a bigger batch is written as single entries (see the format above)
_ENTRY_FIELDS = 6
BATCH = 1  # a batch payload's first element: [BATCH, rows]
_BATCH_FIELDS = 2
# First byte of a valid payload: a 6-array (entry), a 2-array (batch) or a map (checkpoint).
# Resync uses it to skip the CRC for almost every candidate offset.
_PAYLOAD_LEADS = frozenset([0x90 | _ENTRY_FIELDS, 0x90 | _BATCH_FIELDS, 0xDE, 0xDF,
                            *range(0x80, 0x90)])


def frame(payload: bytes) -> bytes:
    n = len(payload)
    return HEADER.pack(zlib.crc32(payload, zlib.crc32(_LENGTH.pack(n))), n) + payload


def encode_entry(key: bytes, entry: Entry, seq: int) -> bytes:
    return frame(_pack([key, entry.value, entry.stamp, entry.origin, entry.expires_at, seq]))


def encode_entries(changes: list) -> bytes:
    """Changes (objects with .key, .entry and .seq) as one single-entry record each: all a
    KVWAL001 file may hold."""
    return b"".join([encode_entry(c.key, c.entry, c.seq) for c in changes])


def encode_batch(changes: list) -> bytes:
    """A turn's changes (objects with .key, .entry and .seq) as one batch record: the log's
    hot path, its rows built in one comprehension (cheaper than any attrgetter)."""
    if len(changes) == 1:  # the commonest turn of a client that waits for each reply
        c = changes[0]
        return encode_entry(c.key, c.entry, c.seq)
    return encode_rows([(c.key, (e := c.entry).value, e.stamp, e.origin, e.expires_at, c.seq)
                        for c in changes])


def encode_rows(rows: list[tuple]) -> bytes:
    """Entry rows (key, value, stamp, origin, expires_at, seq) as one batch record: one pack,
    one checksum. A lone row is a single entry (smaller, and cheaper to build), a batch over
    BATCH_BYTES single entries too; no rows, no bytes."""
    if len(rows) > 1:
        payload = _pack([BATCH, rows])
        if len(payload) <= BATCH_BYTES:
            return frame(payload)
    return b"".join([frame(_pack(row)) for row in rows])


def encode_checkpoint(seqs: dict[str, int]) -> bytes:
    return frame(_pack(seqs))


@dataclass(frozen=True)
class Damage:
    """Where reading stopped early, and whether what follows makes it a torn tail."""

    offset: int
    reason: str
    torn: bool  # nothing valid after it: a crash mid-write, safe to truncate
    resume: int  # offset of the next valid record (the file size if torn)


class Reader:
    """Iterate the decoded payloads of a log held in memory (entries as 6-tuples, a batch's
    one by one, checkpoints as dicts); `end` and `damage` say how far it got, `count` how
    many payloads it yielded (entries and checkpoints), `magic` the file's (None if it has
    none)."""

    def __init__(self, data: bytes | memoryview, start: int = 0) -> None:
        self.data = memoryview(data)
        self.start = start
        self.end = start
        self.count = 0
        self.batch_start = start
        self.damage: Damage | None = None
        self.magic: bytes | None = None

    def __iter__(self) -> Iterator[tuple | dict]:
        for batch in self.batches():
            yield from batch

    def batches(self, most: int = 4096) -> Iterator[list[tuple | dict]]:
        """Payloads in lists of about `most` (a batch record is never split): replay's hot
        loop, so it costs one generator step per list instead of per record. `batch_start` is
        the first one's offset."""
        data, size, off = self.data, len(self.data), self.start
        if off == 0:
            off = self._check_magic()
            if off == 0:
                return
        unpack_from, crc32, unpackb = HEADER.unpack_from, zlib.crc32, msgpack.unpackb
        batch: list[tuple | dict] = []
        self.batch_start = off
        while off < size:
            if size - off < HEADER_SIZE:
                break
            crc, length = unpack_from(data, off)
            end = off + HEADER_SIZE + length
            if end > size or crc32(data[off + 4:end]) != crc:
                break
            try:
                obj = unpackb(data[off + HEADER_SIZE:end], raw=False, use_list=False)
            except ValueError:  # every msgpack decoding error is a ValueError
                break
            if type(obj) is tuple and len(obj) == _BATCH_FIELDS:
                if not _rows(obj):
                    break
                batch += obj[1]
            elif type(obj) is dict or (type(obj) is tuple and len(obj) == _ENTRY_FIELDS):
                batch.append(obj)
            else:
                break
            off = end
            if len(batch) >= most:
                self.end, self.count = off, self.count + len(batch)
                yield batch
                batch, self.batch_start = [], off
        self.end, self.count = off, self.count + len(batch)
        if off < size:
            self._damaged(off, self._what_is_wrong(off))
        if batch:
            yield batch

    def _what_is_wrong(self, off: int) -> str:
        """Why the record at `off` was refused (the hot loop only knows that it was)."""
        data, size = self.data, len(self.data)
        if size - off < HEADER_SIZE:
            return "the file ends inside a record header"
        crc, length = HEADER.unpack_from(data, off)
        end = off + HEADER_SIZE + length
        if end > size:
            return f"a record of {length} bytes runs past the end of the file"
        if zlib.crc32(data[off + 4:end]) != crc:
            return "checksum mismatch"
        try:
            msgpack.unpackb(data[off + HEADER_SIZE:end], raw=False)
        except ValueError as exc:
            return f"a checksummed payload does not decode ({exc})"
        return "a checksummed payload is not a record"

    def _check_magic(self) -> int:
        head = bytes(self.data[:len(MAGIC)])
        if head in (MAGIC, MAGIC_V1):
            self.magic = head
            self.end = len(MAGIC)
            return len(MAGIC)
        if MAGIC.startswith(head):  # empty, or the header itself was torn
            self.damage = Damage(0, "the file ends inside its header", True, len(self.data)) \
                if head else None
            return 0
        # No resync here: a foreign file is refused whatever it holds, and scanning a big one
        # byte by byte would only delay saying so.
        self.damage = Damage(0, "not a kv log (bad magic)", False, len(self.data))
        return 0

    def _damaged(self, off: int, reason: str) -> None:
        resume = resync(self.data, off + 1)
        self.damage = Damage(off, reason, resume is None,
                             len(self.data) if resume is None else resume)


def _rows(obj: tuple) -> bool:
    """Is a decoded 2-array a batch of well-formed entries? (Checked in C: no per-row loop.)"""
    rows = obj[1]
    return type(obj[0]) is int and obj[0] == BATCH and type(rows) is tuple \
        and set(map(type, rows)) == {tuple} and set(map(len, rows)) == {_ENTRY_FIELDS}


def valid_at(data: memoryview, off: int) -> bool:
    """Is there a complete record with a matching checksum at `off`?"""
    size = len(data)
    if size - off < HEADER_SIZE + 1 or data[off + HEADER_SIZE] not in _PAYLOAD_LEADS:
        return False
    crc, length = HEADER.unpack_from(data, off)
    end = off + HEADER_SIZE + length
    return length < MAX_PAYLOAD and end <= size and zlib.crc32(data[off + 4:end]) == crc


def resync(data: memoryview, start: int) -> int | None:
    """The first offset at or after `start` where a valid record begins, or None."""
    for off in range(start, len(data) - HEADER_SIZE):
        if valid_at(data, off):
            return off
    return None


def entry_of(rec: tuple) -> tuple[bytes, Entry, int]:
    """(key, entry, seq) from a decoded entry payload."""
    key, value, stamp, origin, expires_at, seq = rec
    return key, Entry(value, stamp, origin, expires_at), seq
