"""Where a turn of kvd's loop spends its time, measured inside a running daemon.

    python -m bench.turns                  # sequential SET and GET; pipelined SET, 1 and 3 nodes
    python -m bench.turns --requests 5000

Each workload gets a fresh kvd (this tree, `--fsync everysec`), or a fresh 3-node cluster
whose first node is reported, and its loop is timed section by section: wrappers around the
Server's methods add up, per turn, the time spent receiving messages, running them, draining
the peers' sockets, committing to the log (with what the cluster publishes) and sending
replies. At SIGTERM each daemon writes the turns it timed to a JSON file; this prints the
median of each section per turn and per message, and the peers' share per write applied.

What it shows on a 2-core VM: a sequential client's lone request costs its turn several times
what the same work costs per message when many share a turn (pipelined), so the sequential
figures are set by how cold the path is, not by how much Python it runs; and in a cluster
whose nodes share the cores, applying a peer's write costs several times what it costs
in-process (`python -m bench.replicacost`). The wrappers add about a microsecond per call:
the figures are for comparing sections, not for the record.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

SECTIONS = ("recv", "run", "peers", "commit", "send")
# The loop's, the native door's (and Peers') methods timed, and the section each one's time
# counts towards.
DOOR_TIMED = {"_recv_plain": "recv", "_handle": "run", "_run_lone": "run", "_send": "send"}
LOOP_TIMED = {"_commit": "commit"}


def serve(out: Path, argv: list[str]) -> int:
    """Run `kvd ARGV` in this process with its loop timed; write the turns to `out`."""
    from kvd import cli, loop
    from kvd.cluster import peers
    from kvd.doors import native
    from kvd.state import node

    clock = time.perf_counter_ns
    turns: list[list[int]] = []
    current = dict.fromkeys(SECTIONS, 0)
    messages = [0]
    applied = [0]  # peers' writes merged this turn

    def timed(fn, section: str):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                current[section] += clock() - t0
        return wrapper

    for cls, table in ((native.NativeDoor, DOOR_TIMED), (loop.Loop, LOOP_TIMED)):
        for name, section in table.items():
            setattr(cls, name, timed(getattr(cls, name), section))
    peers.Peers.drain = timed(peers.Peers.drain, "peers")
    peers.Peers.route = timed(peers.Peers.route, "commit")
    recv = native.NativeDoor._recv_plain

    def counting_recv(router):  # noqa: ANN001, ANN202
        frames = recv(router)
        messages[0] += frames is not None
        return frames

    native.NativeDoor._recv_plain = staticmethod(counting_recv)
    apply_all = node.Node.apply_all

    def counting_apply_all(self, items):  # noqa: ANN001, ANN202
        applied[0] += len(items)
        return apply_all(self, items)

    node.Node.apply_all = counting_apply_all
    turn = loop.Loop._turn

    def timed_turn(self, ready):  # noqa: ANN001, ANN202
        current.update(dict.fromkeys(SECTIONS, 0))
        messages[0] = applied[0] = 0
        t0 = clock()
        turn(self, ready)
        if messages[0] or applied[0]:
            turns.append([clock() - t0, messages[0], *(current[s] for s in SECTIONS),
                          applied[0]])

    loop.Loop._turn = timed_turn
    # SIGUSR1 forgets the turns so far: the driver sends it once the keys are loaded.
    signal.signal(signal.SIGUSR1, lambda *_: turns.clear())
    try:
        return cli.main(argv)
    finally:
        out.write_text(json.dumps(turns))


def summary(turns: list[list[int]]) -> dict[str, float]:
    """Median µs per turn of the whole turn and each section, and per message."""
    whole = [t[0] for t in turns]
    per_message = [t[0] / t[1] for t in turns if t[1]]
    row = {"turns": len(turns), "messages/turn": statistics.median(t[1] for t in turns),
           "turn µs": statistics.median(whole) / 1000,
           "per message µs": statistics.median(per_message or [0]) / 1000}
    for i, section in enumerate(SECTIONS, 2):
        row[f"{section} µs"] = statistics.median(t[i] for t in turns) / 1000
    # A peer's writes come in GOSSIP messages of many items: their cost is per item.
    items = sum(t[-1] for t in turns)
    peers = sum(t[2 + SECTIONS.index("peers")] for t in turns)
    row["peers µs/item"] = peers / items / 1000 if items else 0.0
    return row


def measure(label: str, op: str, pipeline: int, clients: int, requests: int, home: Path,
            size: int = 1) -> dict[str, float]:
    """One workload on a fresh node (or `size` nodes, a cluster); the first node's turns."""
    from bench.clustertarget import Cluster
    from bench.suite import VALUE_SIZE, run_op
    from bench.targets import Kvd
    from kvd.bench.loadgen import Workload

    out = home / f"{label}.json"

    class TimedKvd(Kvd):
        def argv(self) -> list[str]:
            kvd_args = super().argv()[3:]  # after [python, -m, kvd]
            mine = out if self.label.endswith("-1") else home / f"{self.label}.json"
            return [sys.executable, "-m", "bench.turns", "--serve", str(mine), *kvd_args]

    class TimedCluster(Cluster):
        def start(self) -> TimedCluster:
            first = TimedKvd(self.home, self.fsync, name=f"{label}-1").start()
            self.nodes = [first]
            for i in range(2, self.size + 1):
                self.nodes.append(TimedKvd(self.home, self.fsync, name=f"{label}-{i}",
                                           join=[f"127.0.0.1:{first.port}"]).start())
            return self

    nodes = TimedCluster(home / label, size=size).start()
    try:
        if not nodes.formed():
            raise SystemExit(f"the {size} nodes did not form a cluster")
        fill = Workload("set", 20_000, 256, True, 10_000, VALUE_SIZE, seed=1)
        run_op(nodes.endpoints, fill, 1)
        for n in nodes.nodes:
            os.kill(n.pid, signal.SIGUSR1)
        w = Workload(op, requests, pipeline, False, 10_000, VALUE_SIZE, seed=2)
        run_op(nodes.endpoints, w, clients)
    finally:
        nodes.stop()
    return summary(json.loads(out.read_text()))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        sys.exit(serve(Path(sys.argv[2]), sys.argv[3:]))
    p = argparse.ArgumentParser(prog="python -m bench.turns", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=3000)
    args = p.parse_args()
    runs = [("sequential SET", "set", 1, 1, args.requests, 1),
            ("sequential GET", "get", 1, 1, args.requests, 1),
            ("pipelined SET", "set", 32, 2, args.requests * 10, 1),
            ("pipelined SET, 3-node cluster", "set", 32, 2, args.requests * 10, 3)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="kv-turns-") as tmp:
        for i, (label, op, pipeline, clients, n, size) in enumerate(runs):
            rows.append((label, measure(f"turns{i}", op, pipeline, clients, n, Path(tmp),
                                        size)))
    columns = list(rows[0][1])
    print("| workload | " + " | ".join(columns) + " |")
    print("| --- |" + " ---: |" * len(columns))
    for label, row in rows:
        cells = [f"{row[c]:,.0f}" if c == "turns" else f"{row[c]:,.1f}" for c in columns]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
