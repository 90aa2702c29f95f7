"""The log record format, pinned byte for byte, and how a reader classifies damage."""

from __future__ import annotations

import zlib

import msgpack
import pytest

from kvd.log import record
from kvd.log.record import (
    MAGIC,
    MAGIC_V1,
    Reader,
    encode_batch,
    encode_checkpoint,
    encode_entry,
    entry_of,
    frame,
    resync,
)
from kvd.state.node import Change
from kvd.state.store import Entry

# (key, entry, seq) -> the exact record bytes. Changing any of these breaks every log on disk.
GOLDEN = [
    (b"a", Entry(b"1", 0x0102 << 16 | 3, "n1", 0), 7,
     "f4f72708" "00000011" "96" "c40161" "c40131" "ce01020003" "a26e31" "00" "07"),
    (b"k", Entry(None, 5, "n2", 0), 0,  # a deletion: nil value
     "166ce98b" "0000000b" "96" "c4016b" "c0" "05" "a26e32" "00" "00"),
    (b"k", Entry(b"v", 5, "n2", 1_700_000_000_000), 2,
     "78d968a6" "00000015" "96" "c4016b" "c40176" "05" "a26e32" "cf0000018bcfe56800" "02"),
]


@pytest.mark.parametrize(("key", "entry", "seq", "hexed"), GOLDEN)
def test_golden_records(key: bytes, entry: Entry, seq: int, hexed: str) -> None:
    raw = bytes.fromhex(hexed)
    assert encode_entry(key, entry, seq) == raw
    assert [entry_of(r) for r in Reader(MAGIC + raw)] == [(key, entry, seq)]


def singles(changes: list[Change]) -> bytes:
    """The changes as single-entry records: what logs held before batches."""
    return b"".join(encode_entry(c.key, c.entry, c.seq) for c in changes)


def test_a_batch_too_big_for_one_record_is_written_as_single_entries(monkeypatch) -> None:
    varied = [Change(b"k" * (i * 37 % 300), Entry(b"v" * (i * 101 % 70_000) if i % 5 else None,
                     i << 20 | i, f"node-{i}", i * 1_000_003 % 7 and 1_700_000_000_000 + i), None,
                     i * 65_537)
              for i in range(60)]
    assert encode_batch(varied)[8:13] == b"\x92\x01\xdc\x00\x3c"  # one record: [1, [60 rows]]
    monkeypatch.setattr(record, "BATCH_BYTES", 40)
    assert encode_batch(varied) == singles(varied)
    assert [entry_of(r) for r in Reader(MAGIC + encode_batch(varied))] == [
        (c.key, c.entry, c.seq) for c in varied]


def test_golden_batch_record() -> None:
    """A turn's entries in one record: [1, [entry, entry]], the entries as above."""
    golden = [Change(key, entry, None, seq) for key, entry, seq, _ in GOLDEN[:2]]
    raw = bytes.fromhex("8aff20cf" "0000001f" "92" "01" "92"
                        "96" "c40161" "c40131" "ce01020003" "a26e31" "00" "07"
                        "96" "c4016b" "c0" "05" "a26e32" "00" "00")
    assert encode_batch(golden) == raw
    assert [entry_of(r) for r in Reader(MAGIC + raw)] == [(k, e, q) for k, e, q, _ in GOLDEN[:2]]
    assert encode_batch([]) == b""
    assert encode_batch(golden[:1]) == encode_entry(*GOLDEN[0][:3])  # a lone write: an entry


def test_golden_checkpoint_and_magic() -> None:
    assert (MAGIC, MAGIC_V1) == (b"KVWAL002", b"KVWAL001")
    assert encode_checkpoint({"n1": 9}) == bytes.fromhex("20e8948d" "00000005" "81a26e3109")
    assert list(Reader(MAGIC + encode_checkpoint({"n1": 9}))) == [{"n1": 9}]


def test_crc_covers_the_length_field() -> None:
    payload = b"\x90"
    expected = zlib.crc32(payload, zlib.crc32(len(payload).to_bytes(4, "big")))
    assert frame(payload)[:4] == expected.to_bytes(4, "big")


def records(n: int) -> list[bytes]:
    return [encode_entry(f"k{i}".encode(), Entry(b"v" * i, i + 1, "n1"), i + 1)
            for i in range(n)]


def read(data: bytes) -> Reader:
    reader = Reader(data)
    reader.items = list(reader)  # type: ignore[attr-defined]
    return reader


def test_empty_file_is_an_empty_log() -> None:
    r = read(b"")
    assert (r.count, r.end, r.damage) == (0, 0, None)


def test_magic_only() -> None:
    r = read(MAGIC)
    assert (r.count, r.end, r.damage) == (0, len(MAGIC), None)


def test_torn_magic_is_a_torn_tail() -> None:
    r = read(MAGIC[:3])
    assert r.damage is not None and r.damage.torn and r.end == 0


def test_bad_magic_is_not_torn() -> None:
    r = read(b"GARBAGE!" + b"".join(records(2)))
    assert r.damage is not None and not r.damage.torn and r.damage.offset == 0
    assert "magic" in r.damage.reason


@pytest.mark.parametrize("cut", [1, 4, 8, 9, -1])
def test_torn_tail_at_any_byte(cut: int) -> None:
    recs = records(3)
    good = MAGIC + recs[0] + recs[1]
    r = read(good + recs[2][:cut])
    assert r.count == 2 and r.end == len(good)
    assert r.damage is not None and r.damage.torn and r.damage.offset == len(good)


def test_zeros_at_the_end_are_a_torn_tail() -> None:
    """What a machine crash can leave: the size grew but the data never made it."""
    good = MAGIC + b"".join(records(2))
    r = read(good + bytes(64))
    assert r.count == 2 and r.damage is not None and r.damage.torn


def test_bad_crc_in_the_last_record_is_torn() -> None:
    recs = records(3)
    last = bytearray(recs[2])
    last[-1] ^= 0xFF
    r = read(MAGIC + recs[0] + recs[1] + bytes(last))
    assert r.count == 2 and r.damage is not None and r.damage.torn


def test_bad_crc_in_the_middle_is_corruption() -> None:
    recs = records(4)
    bad = bytearray(recs[1])
    bad[12] ^= 0x01
    data = MAGIC + recs[0] + bytes(bad) + recs[2] + recs[3]
    r = read(data)
    offset = len(MAGIC) + len(recs[0])
    assert r.count == 1 and r.end == offset
    assert r.damage is not None and not r.damage.torn
    assert r.damage.offset == offset and r.damage.reason == "checksum mismatch"
    assert r.damage.resume == offset + len(recs[1])


def test_a_corrupt_length_in_the_middle_is_not_taken_for_a_torn_tail() -> None:
    """A length that points past the end looks like a torn write; the records after say no."""
    recs = records(4)
    bad = bytearray(recs[1])
    bad[4:8] = (10_000).to_bytes(4, "big")
    r = read(MAGIC + recs[0] + bytes(bad) + recs[2] + recs[3])
    assert r.count == 1 and r.damage is not None and not r.damage.torn


def test_reader_resumes_mid_file() -> None:
    recs = records(3)
    start = len(MAGIC) + len(recs[0])
    r = Reader(MAGIC + b"".join(recs), start)
    assert [entry_of(x)[0] for x in r] == [b"k1", b"k2"]


def changes(n: int, first: int = 0) -> list[Change]:
    return [Change(f"k{i}".encode(), Entry(b"v" * i, i + 1, "n1"), None, i + 1)
            for i in range(first, first + n)]


def test_a_batch_reads_as_its_entries_and_counts_them() -> None:
    batch = changes(5)
    r = read(MAGIC + encode_batch(batch))
    assert [entry_of(x) for x in r.items] == [(c.key, c.entry, c.seq) for c in batch]
    assert (r.count, r.end, r.damage) == (5, len(MAGIC) + len(encode_batch(batch)), None)


def test_old_and_new_records_mixed() -> None:
    """A log written before batches, appended to by this version (and a compacted one, whose
    checkpoint and snapshot are single records), reads in file order."""
    old = singles(changes(3))
    data = MAGIC + encode_checkpoint({"n1": 2}) + old + encode_batch(changes(4, 3)) \
        + encode_entry(b"k7", Entry(b"v", 8, "n1"), 8) + encode_batch(changes(2, 8))
    r = read(data)
    assert r.items[0] == {"n1": 2}
    assert [x[0] for x in r.items[1:]] == [f"k{i}".encode() for i in range(10)]
    assert (r.count, r.damage) == (11, None)


@pytest.mark.parametrize("cut", [1, 8, 9, 20, -1])
def test_a_batch_torn_in_the_middle_is_a_torn_tail(cut: int) -> None:
    good = MAGIC + encode_batch(changes(3))
    last = encode_batch(changes(50, 3))
    r = read(good + last[:cut])
    assert (r.count, r.end) == (3, len(good))  # the torn turn is lost whole, never in part
    assert r.damage is not None and r.damage.torn and r.damage.offset == len(good)


def test_a_corrupt_batch_in_the_middle_is_corruption_and_resyncs_past_it() -> None:
    first, second, third = (encode_batch(changes(4, i * 4)) for i in range(3))
    bad = bytearray(second)
    bad[30] ^= 0x04
    data = MAGIC + first + bytes(bad) + third
    r = read(data)
    offset = len(MAGIC) + len(first)
    assert r.count == 4 and r.end == offset
    assert r.damage is not None and not r.damage.torn and r.damage.reason == "checksum mismatch"
    assert r.damage.resume == offset + len(second) == resync(memoryview(data), offset + 1)
    rest = Reader(data, r.damage.resume)
    assert [x[0] for x in rest] == [f"k{i}".encode() for i in range(8, 12)]


def test_a_corrupt_batch_before_single_records_is_corruption() -> None:
    """Resync finds the old form after a damaged batch, and a batch after old records."""
    bad = bytearray(encode_batch(changes(3)))
    bad[-2] ^= 0x10
    r = read(MAGIC + bytes(bad) + singles(changes(2, 3)))
    assert r.count == 0 and r.damage is not None and not r.damage.torn
    bad = bytearray(singles(changes(2)))
    bad[-1] ^= 0x10
    r = read(MAGIC + bytes(bad) + encode_batch(changes(2, 2)))
    assert r.count == 1 and r.damage is not None and not r.damage.torn


@pytest.mark.parametrize("payload", [
    [1, []],  # an empty batch: never written
    [2, [[b"k", b"v", 1, "n1", 0, 1]]],  # an unknown kind
    [True, [[b"k", b"v", 1, "n1", 0, 1]]],
    [1, [[b"k", b"v", 1, "n1", 0]]],  # a row one field short
    [1, [[b"k", b"v", 1, "n1", 0, 1], b"kv1n01"]],  # a row that is not an array
    [1, b"not rows"],
])
def test_a_checksummed_batch_that_is_not_well_formed_is_refused(payload: list) -> None:
    good = MAGIC + encode_batch(changes(2))
    r = read(good + frame(msgpack.packb(payload)))
    assert r.count == 2 and r.damage is not None
    assert r.damage.reason == "a checksummed payload is not a record"




def test_a_log_from_before_batches_reads_as_ever_and_says_so() -> None:
    old = MAGIC_V1 + encode_checkpoint({"n1": 2}) + singles(changes(3))
    r = read(old)
    assert (r.count, r.damage, r.magic) == (4, None, MAGIC_V1)
    assert read(MAGIC + encode_batch(changes(2))).magic == MAGIC
    assert read(MAGIC_V1[:5]).magic is None and read(MAGIC_V1[:5]).damage.torn


def test_a_reader_from_before_batches_refuses_a_new_file_instead_of_cutting_it() -> None:
    """What a KVWAL001-only reader did with a header: cut a torn one, refuse a foreign one.
    A new file is foreign to it, never torn, so going back a version cannot truncate it."""
    head = (MAGIC + encode_batch(changes(2)))[:len(MAGIC_V1)]
    assert head != MAGIC_V1 and not MAGIC_V1.startswith(head)
