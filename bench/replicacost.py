"""What one write costs each node of a cluster, in-process (no sockets, a warm CPU).

    python -m bench.replicacost             # µs per write, best of 15 rounds
    python -m bench.replicacost --rounds 9 --batches 400

A write costs its origin the batched SET path (run, reply, log record) plus encoding it into
GOSSIP, and costs every other node decoding, checking, merging and logging it. The ratio of
the three nodes' total to a lone node's is the CPU a 3-node cluster spends per write over what
one node spends; on a machine whose cores the nodes share, that bounds how close the cluster's
throughput can come to one node's.
"""

from __future__ import annotations

import argparse
import random
import time

from kvd.cluster.cluster import Cluster, Settings
from kvd.cluster.peerwire import Dest
from kvd.log.record import encode_batch
from kvd.state.node import Context, Node
from shared import codec

NOW = 1_700_000_000_000
PER_BATCH = 256


def core(name: str, others: list[str]) -> Cluster:
    node = Node(name, f"{name}:1")
    return Cluster(node, f"{name}:2", Settings(), NOW,
                   known=[[o, f"{o}:1", f"{o}:2"] for o in others])


def origin_path(c: Cluster, requests: list) -> list[bytes]:
    """What the daemon does with a BATCH of SETs, up to the GOSSIP frames it publishes."""
    node = c.node
    replies, _ = node.execute_batch(requests, Context(now=NOW))
    codec.encode_batch_reply(replies)
    changes = node.take_changes()
    encode_batch(changes)
    node.watches.record_all(changes)
    return [codec.encode_peer(o.msg) for o in c.committed(changes, NOW)
            if o.dest is Dest.PUBLISH]


def replica_path(c: Cluster, frame: bytes) -> None:
    """What a peer does with one GOSSIP frame, up to its log record."""
    c.receive(codec.decode(frame), NOW)  # type: ignore[arg-type]
    changes = c.node.take_changes()
    encode_batch(changes)
    c.node.watches.record_all(changes)


def measure(rounds: int, batches: int) -> dict[str, float]:
    rng = random.Random(3)
    work = [[[i, [b"SET", b"key:%012d" % rng.randrange(10_000), b"x" * 100]]
             for i in range(1, PER_BATCH + 1)] for _ in range(batches)]
    writes = batches * PER_BATCH
    alone, a, b = core("alone", []), core("a", ["b", "c"]), core("b", ["a", "c"])
    best = {"alone": float("inf"), "origin": float("inf"), "replica": float("inf")}
    for _ in range(rounds):
        t0 = time.perf_counter()
        for requests in work:
            origin_path(alone, requests)
        t1 = time.perf_counter()
        frames = [f for requests in work for f in origin_path(a, requests)]
        t2 = time.perf_counter()
        for frame in frames:
            replica_path(b, frame)
        t3 = time.perf_counter()
        for name, seconds in (("alone", t1 - t0), ("origin", t2 - t1), ("replica", t3 - t2)):
            best[name] = min(best[name], seconds / writes * 1e6)
    assert b.node.store.digest == a.node.store.digest, "the replica did not take every write"
    return best


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.replicacost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batches", type=int, default=100)
    args = p.parse_args()
    us = measure(args.rounds, args.batches)
    cluster = us["origin"] + 2 * us["replica"]
    print(f"lone node, batched SET:      {us['alone']:.2f} µs per write")
    print(f"cluster origin (+ GOSSIP):   {us['origin']:.2f} µs per write")
    print(f"each other replica:          {us['replica']:.2f} µs per write "
          f"({us['replica'] / us['alone']:.2f}× a lone node's write)")
    print(f"3-node cluster in all:       {cluster:.2f} µs per write "
          f"({cluster / us['alone']:.2f}× a lone node's)")


if __name__ == "__main__":
    main()
