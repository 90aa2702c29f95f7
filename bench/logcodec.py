"""The log's codec in-process: single-entry records against batch records, in the same run.

    python -m bench.logcodec             # best of 7 rounds
    python -m bench.logcodec --keys 50000

Before batches the log wrote a turn as one record per write (`encode_entry` each, still what
a lone write gets, and still read); now it writes a turn as one batch record
(`encode_batch`), and compaction one per store bucket. Prints ns per write for encoding turns
of 1, 16 and 256 SETs of 100-byte values in both forms, bytes per write, and ns per entry to
replay a log of each form (start-up time) and to rewrite a store (compaction).
"""

from __future__ import annotations

import argparse
import random
import timeit
from pathlib import Path

from kvd.log.compaction import Rewrite
from kvd.log.record import MAGIC, encode_batch, encode_entry
from kvd.log.recovery import replay
from kvd.state.node import Change
from kvd.state.store import Entry, Store

STAMP = 1_700_000_000_000 << 16


def turn(rng: random.Random, n: int, first: int) -> list[Change]:
    return [Change(b"key:%012d" % rng.randrange(10_000), Entry(b"x" * 100, STAMP + i, "n1"),
                   None, i + 1) for i in range(first, first + n)]


def singles(changes: list[Change]) -> bytes:
    return b"".join([encode_entry(c.key, c.entry, c.seq) for c in changes])


def best_ns(fn, number: int, per: int, rounds: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=rounds)) / number / per * 1e9


class Buffer:
    """A rewrite's file, in memory."""

    def __init__(self) -> None:
        self.data, self.size = bytearray(), 0

    def write(self, data: bytes | bytearray) -> None:
        self.data += data
        self.size += len(data)

    def sync(self) -> None: ...
    def close(self) -> None: ...


def rewrite(store: Store) -> bytes:
    file = Buffer()
    rw = Rewrite(Path("unused"), file, store, {"n1": 1}, 1 << 40, 0, lambda: 0.0)
    while not rw.step():
        pass
    rw.flush()
    return bytes(file.data)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.logcodec", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--keys", type=int, default=100_000, help="entries replayed and rewritten")
    args = p.parse_args(argv)
    rng = random.Random(1)
    for n in (1, 16, 256):
        changes, number = turn(rng, n, 0), max(100, 50_000 // n)
        old = best_ns(lambda c=changes: singles(c), number, n, args.rounds)
        new = best_ns(lambda c=changes: encode_batch(c), number, n, args.rounds)
        print(f"encode, {n:3} writes a turn: single records {old:5.0f} ns/write, batch "
              f"{new:5.0f} ({old / new:.2f}x); {len(singles(changes)) / n:.0f} -> "
              f"{len(encode_batch(changes)) / n:.0f} bytes/write")
    turns = [turn(rng, 256, i) for i in range(0, args.keys, 256)]
    logs = {"single": MAGIC + b"".join(singles(t) for t in turns),
            "batch": MAGIC + b"".join(encode_batch(t) for t in turns)}
    ns = {form: best_ns(lambda d=data: replay(d, Store()), 1, 256 * len(turns), args.rounds)
          for form, data in logs.items()}
    print(f"replay, turns of 256: single records {ns['single']:.0f} ns/entry, batch "
          f"{ns['batch']:.0f} ({ns['single'] / ns['batch']:.2f}x)")
    store = Store()
    for i in range(args.keys):
        store.merge(b"key:%012d" % i, Entry(b"x" * 100, STAMP + i, "n1"))
    data = rewrite(store)
    print(f"compaction of {args.keys} keys: rewrite "
          f"{best_ns(lambda: rewrite(store), 1, args.keys, 3):.0f} ns/key, replay of it "
          f"{best_ns(lambda: replay(data, Store()), 1, args.keys, 3):.0f} ns/key")


if __name__ == "__main__":
    main()
