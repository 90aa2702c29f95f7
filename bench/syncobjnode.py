"""One pysyncobj node for bench.coordination: a `@replicated` counter, driven over stdin.

    python -m bench.syncobjnode SELF_PORT PEER_PORT PEER_PORT DIR PASSWORD [batch|nobatch]

`nobatch` sets appendEntriesUseBatch=False, which pysyncobj documents as the faster setting
for a single request at a time (batch, its default, for throughput).

pysyncobj was installed for the bench only (`pip install pysyncobj`); it is no dependency of
kv. Durable mode: `journalFile` (the Raft log, written as it is received, to an mmap that
pysyncobj never msyncs/fsyncs) and `fullDumpFile` (the compacted state). It does not fsync its
term or vote either, unlike kvd's Raft log, which fsyncs every append.

Lines on stdin, one JSON line answered on stdout each:
    leader             -> {"leader": bool, "ready": bool}
    seq N              -> N sync=True increments one after another: {"seconds": s, "ok": n}
    pipe N W           -> N async increments, at most W in flight: {"seconds": s, "ok": n}
    value              -> {"value": counter}
"""

from __future__ import annotations

import json
import sys
import threading
import time

from pysyncobj import SyncObj, SyncObjConf, replicated


class Counter(SyncObj):
    def __init__(self, me: str, peers: list[str], conf: SyncObjConf) -> None:
        super().__init__(me, peers, conf)
        self.counter = 0

    @replicated
    def incr(self) -> int:
        self.counter += 1
        return self.counter


def sequential(obj: Counter, n: int) -> dict:
    ok = 0
    start = time.perf_counter()
    for _ in range(n):
        obj.incr(sync=True, timeout=10)
        ok += 1
    return {"seconds": time.perf_counter() - start, "ok": ok}


def pipelined(obj: Counter, n: int, window: int) -> dict:
    slots = threading.Semaphore(window)
    done = threading.Event()
    state = {"ok": 0, "answered": 0}
    lock = threading.Lock()

    def callback(result, error) -> None:
        with lock:
            state["answered"] += 1
            state["ok"] += error == 0
            if state["answered"] == n:
                done.set()
        slots.release()

    start = time.perf_counter()
    for _ in range(n):
        slots.acquire()
        obj.incr(callback=callback)
    done.wait(120)
    return {"seconds": time.perf_counter() - start, "ok": state["ok"]}


def main(argv: list[str]) -> int:
    me, peers, home, password = argv[0], argv[1:3], argv[3], argv[4]
    batch = (argv[5] if len(argv) > 5 else "batch") == "batch"
    conf = SyncObjConf(password=password, journalFile=f"{home}/journal-{me}",
                       fullDumpFile=f"{home}/dump-{me}", dynamicMembershipChange=False,
                       appendEntriesUseBatch=batch)
    obj = Counter(f"127.0.0.1:{me}", [f"127.0.0.1:{p}" for p in peers], conf)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "leader":
            out = {"leader": obj._isLeader(), "ready": obj.isReady()}
        elif cmd[0] == "seq":
            out = sequential(obj, int(cmd[1]))
        elif cmd[0] == "pipe":
            out = pipelined(obj, int(cmd[1]), int(cmd[2]))
        elif cmd[0] == "value":
            out = {"value": obj.counter}
        else:
            out = {"error": cmd[0]}
        print(json.dumps(out), flush=True)
    obj.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
