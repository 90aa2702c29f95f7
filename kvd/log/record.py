"""The log's record format: bytes in, entries out, and what a damaged file looks like. No I/O.

A log file is a magic string followed by self-delimiting, checksummed records:

    file:    | magic "KVWAL001" (8 bytes) | record | record | ... |

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
             {origin: seq, ...}
                 a checkpoint: the highest seq seen per origin, written at the top of a
                 rewritten log so compaction does not forget the sequences

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgpack

from kvd.state.store import Entry

MAGIC = b"KVWAL001"
HEADER = struct.Struct(">II")  # crc32, length
HEADER_SIZE = HEADER.size
_LENGTH = struct.Struct(">I")  # the length field alone: what the CRC starts with
# One Packer for every record: building one per call (as msgpack.packb does) allocates and
# frees its 256 KiB buffer each time, a cost a lone SET's commit pays on a cold path. pack()
# runs in C without releasing the GIL or calling back into Python for these types, so
# sharing it between threads is safe.
_pack = msgpack.Packer(use_bin_type=True).pack
MAX_PAYLOAD = 1 << 30  # far above any legal record (64 KiB key + max value); a sanity bound
_ENTRY_FIELDS = 6
# First byte of a valid payload: a 6-array (entry) or a map (checkpoint). Resync uses it to
# skip the CRC for almost every candidate offset.
_PAYLOAD_LEADS = frozenset([0x90 | _ENTRY_FIELDS, 0xDE, 0xDF, *range(0x80, 0x90)])


def frame(payload: bytes) -> bytes:
    length = len(payload).to_bytes(4, "big")
    return zlib.crc32(payload, zlib.crc32(length)).to_bytes(4, "big") + length + payload


def encode_entry(key: bytes, entry: Entry, seq: int) -> bytes:
    return frame(_pack([key, entry.value, entry.stamp, entry.origin, entry.expires_at, seq]))


def encode_entries(changes: Iterable) -> bytes:
    """`encode_entry` for a turn's changes (objects with .key, .entry and .seq), joined.

    The log's hot path: the module's one Packer, the header packed in one struct call. The
    bytes are those of `encode_entry`, record for record (a test pins that).
    """
    pack, crc32, header, length_of = _pack, zlib.crc32, HEADER.pack, _LENGTH.pack
    parts = []
    for c in changes:
        e = c.entry
        payload = pack([c.key, e.value, e.stamp, e.origin, e.expires_at, c.seq])
        n = len(payload)
        parts.append(header(crc32(payload, crc32(length_of(n))), n))
        parts.append(payload)
    return b"".join(parts)


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
    """Iterate the decoded payloads of a log held in memory (entries as 6-tuples,
    checkpoints as dicts); `end` and `damage` say how far it got, `count` how many good
    records it read."""

    def __init__(self, data: bytes | memoryview, start: int = 0) -> None:
        self.data = memoryview(data)
        self.start = start
        self.end = start
        self.count = 0
        self.batch_start = start
        self.damage: Damage | None = None

    def __iter__(self) -> Iterator[tuple | dict]:
        for batch in self.batches():
            yield from batch

    def batches(self, most: int = 4096) -> Iterator[list[tuple | dict]]:
        """Payloads in lists of up to `most`: replay's hot loop, so it costs one generator
        step per batch instead of per record. `batch_start` is the first one's offset."""
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
            if not (type(obj) is dict or (type(obj) is tuple and len(obj) == _ENTRY_FIELDS)):
                break
            batch.append(obj)
            off = end
            if len(batch) == most:
                self.end, self.count = off, self.count + most
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
        if head == MAGIC:
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
