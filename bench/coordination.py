"""`python -m bench.coordination`: kvd's Raft-backed CAS against pysyncobj, and failover time.

    python -m bench.coordination            # the default run (about 1-2 minutes)
    python -m bench.coordination --quick    # seconds: what the test suite runs

In one run on this machine:

* kvd: a 3-node cluster (`--fsync everysec` for the keyspace; the Raft log fsyncs every
  append), requests sent to the leader over the native protocol. One increment is
  `CAS counter REV r value+1` on the revision the client's last CAS returned (CGET and retry
  on COMPARE_FAILED); the "CGET + CAS" rows read before every CAS.
  - sequential: one client, N increments one after another;
  - pipelined: one client, WINDOW distinct counters; each round pipelines WINDOW CASes
    (lone requests, batch=False; WINDOW CGETs first in the CGET + CAS row), until N
    increments succeeded.
* pysyncobj (installed for the bench only: `pip install pysyncobj`; no dependency of kv):
  3 `SyncObj` processes on loopback (bench.syncobjnode), `password` set, `journalFile` and
  `fullDumpFile` on (its durable mode: it neither fsyncs the journal nor the term/vote), a
  `@replicated` increment called on the leader, in its own process (no client hop, which
  favours pysyncobj):
  - sequential: N `incr(sync=True)` one after another;
  - pipelined: N async `incr(callback=...)`, at most WINDOW in flight.
* failover: with a light CAS load (one CAS each 20 ms) on the kvd cluster, SIGKILL the leader;
  the time from the kill to the first successful CAS (sent to the survivors, which forward to
  the new leader); the killed node is restarted before the next round.

Ops/s counts successful increments. Writes bench/results/latest-coordination.md.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from bench.targets import ROOT, Kvd, free_port
from kvsh.client import Client
from shared.errors import KvError, ServerError

RESULTS = Path(__file__).resolve().parent / "results"
RETRY = ("COMPARE_FAILED", "TRYAGAIN", "NO_QUORUM")
PROBE_S = 0.25  # the failover probe's client timeout


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.coordination",
                                description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=1000, help="sequential increments (default 1000)")
    p.add_argument("--pipe", type=int, default=5000, help="pipelined increments (default 5000)")
    p.add_argument("--window", type=int, default=64, help="counters / calls in flight")
    p.add_argument("--failovers", type=int, default=5, help="leader kills (default 5)")
    p.add_argument("--quick", action="store_true", help="a tiny run: checks the bench works")
    p.add_argument("--no-syncobj", action="store_true", help="leave pysyncobj out")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)
    if args.quick:
        args.seq, args.pipe, args.window, args.failovers = 100, 400, 16, 1
    return args


# --- kvd -------------------------------------------------------------------------------------

class KvdGroup:
    def __init__(self, home: Path) -> None:
        self.nodes: list[Kvd] = []
        first = Kvd(home, "everysec", name="n1")
        self.nodes.append(first.start())
        for i in (2, 3):
            self.nodes.append(Kvd(home, "everysec", name=f"n{i}",
                                  join=[f"127.0.0.1:{first.port}"]).start())

    def alive(self) -> list[Kvd]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def leader(self, deadline_s: float = 60) -> Kvd:
        """The node every live node names leader, once all see three voters."""
        end = time.monotonic() + deadline_s
        names = {n.label for n in self.nodes}
        while time.monotonic() < end:
            try:
                views = [n.info() for n in self.alive()]
            except KvError:
                views = []
            leaders = {v.get("raft_leader") for v in views}
            if (views and len(leaders) == 1 and "" not in leaders and None not in leaders
                    and all(set(v.get("raft_voters", "").split(",")) == names for v in views)
                    and [v.get("raft_role") for v in views].count("leader") == 1):
                name = leaders.pop()
                return next(n for n in self.nodes if n.label == name)
            time.sleep(0.05)
        raise RuntimeError("the kvd group agreed on no leader")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def incr(c: Client, key: str) -> None:
    """One increment the simple way: CGET, then CAS on its revision, retried until it
    succeeds (the "read + CAS" rows)."""
    while True:
        try:
            got = c.call("CGET", key)
            value = int(got["value"] or 0)
            if got["value"] is None:
                c.call("CSET", key, "1")
                return
            c.call("CAS", key, "REV", str(got["revision"]), str(value + 1))
            return
        except ServerError as exc:
            if exc.code not in RETRY:
                raise


def cas_incr(c: Client, key: str, known: tuple[int, int]) -> tuple[int, int]:
    """One increment as an optimistic client does it (etcd's STM, Consul's ModifyIndex):
    CAS on the (revision, value) its last write returned — one round trip — and only on
    COMPARE_FAILED read and retry. Returns the new (revision, value)."""
    revision, value = known
    while True:
        try:
            got = c.call("CAS", key, "REV", str(revision), str(value + 1))
            return got["revision"], value + 1
        except ServerError as exc:
            if exc.code not in RETRY:
                raise
            now = c.call("CGET", key)
            revision, value = now["revision"], int(now["value"] or 0)


def kvd_sequential(leader: Kvd, n: int, read_first: bool) -> dict:
    key = "seq-read" if read_first else "seq"
    with Client("127.0.0.1", leader.port, timeout=10) as c:
        incr(c, "warm")
        known = (c.call("CSET", key, "0")["revision"], 0)
        start = time.perf_counter()
        for _ in range(n):
            if read_first:
                incr(c, key)
            else:
                known = cas_incr(c, key, known)
        seconds = time.perf_counter() - start
        assert int(c.call("CGET", key)["value"]) == n
    return {"ops": n, "seconds": seconds}


def kvd_pipelined(leader: Kvd, n: int, window: int, read_first: bool) -> dict:
    """`window` counters; each round pipelines one CAS per counter (lone requests), on the
    revision the last round's CAS returned — or, read_first, a CGET per counter first."""
    keys = [f"pipe-{'read' if read_first else 'cas'}-{i}" for i in range(window)]
    done = retries = 0
    with Client("127.0.0.1", leader.port, timeout=30) as c:
        known = {}
        for key in keys:  # every counter exists before the clock starts
            known[key] = (c.call("CSET", key, "0")["revision"], 0)
        start = time.perf_counter()
        while done < n:
            batch = keys[:min(window, n - done)]
            if read_first:
                for k, r in zip(batch, c.pipeline([["CGET", k] for k in batch], batch=False),
                                strict=True):
                    if r.is_error:
                        raise RuntimeError(f"CGET {k}: {r.value}")
                    known[k] = (r.value["revision"], int(r.value["value"]))
            cas = [["CAS", k, "REV", str(known[k][0]), str(known[k][1] + 1)] for k in batch]
            for k, r in zip(batch, c.pipeline(cas, batch=False), strict=True):
                if r.is_error:
                    if r.value[0] not in RETRY:
                        raise RuntimeError(f"CAS: {r.value}")
                    retries += 1
                    now = c.call("CGET", k)
                    known[k] = (now["revision"], int(now["value"]))
                else:
                    known[k] = (r.value["revision"], known[k][1] + 1)
                    done += 1
        seconds = time.perf_counter() - start
        total = sum(int(r.value["value"]) for r in
                    c.pipeline([["CGET", k] for k in keys], batch=False))
    assert total == done, (total, done)
    return {"ops": done, "seconds": seconds, "retries": retries}


def try_cas(node: Kvd, key: str, timeout: float = 0.5) -> bool:
    try:
        with Client("127.0.0.1", node.port, timeout=timeout) as c:
            got = c.call("CGET", key)
            c.call("CAS", key, "REV", str(got["revision"]), str(int(got["value"] or 0) + 1))
            return True
    except (KvError, OSError, TypeError, ValueError):
        return False


def first_cas(survivors: list[Kvd], t0: float, deadline_s: float = 30) -> float | None:
    """Probes (CGET + CAS, on a fresh connection, PROBE_S client timeout) to the survivors in
    turn until one succeeds: the time of that success, from the kill. A request a follower
    forwarded to the dead leader is left unanswered until the client times out, so the
    timeout is short; the figure is within about PROBE_S of the first possible success."""
    while time.monotonic() - t0 < deadline_s:
        for node in survivors:
            if try_cas(node, f"fo-{node.label}", timeout=PROBE_S):
                return time.monotonic() - t0
        time.sleep(0.01)
    return None


def failovers(group: KvdGroup, rounds: int, say) -> list[float]:
    took = []
    for i in range(rounds):
        leader = group.leader()
        with Client("127.0.0.1", leader.port, timeout=10) as c:
            for key in ("fo", *(f"fo-{n.label}" for n in group.nodes)):
                c.call("CSET", key, "0")
        for _ in range(10):  # the light load, before the kill
            try_cas(leader, "fo")
            time.sleep(0.02)
        assert leader.proc is not None
        leader.proc.kill()
        t0 = time.monotonic()
        leader.proc.wait()
        survivors = [n for n in group.nodes if n is not leader]
        seconds = first_cas(survivors, t0)
        if seconds is None:
            raise RuntimeError("no CAS succeeded within 30 s of the leader's kill")
        took.append(seconds)
        say(f"failover {i + 1}: {leader.label} killed, first CAS after {took[-1]:.3f} s")
        leader.start()  # the same data dir and ports: it rejoins from its raft files
    group.leader()
    return took


# --- pysyncobj -------------------------------------------------------------------------------

def syncobj_available() -> bool:
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        return False
    return True


class SyncObjGroup:
    def __init__(self, home: Path, batch: bool = True) -> None:
        home.mkdir(parents=True, exist_ok=True)
        ports = [free_port() for _ in range(3)]
        password = secrets.token_hex(16)
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        for i, port in enumerate(ports):
            peers = [str(p) for p in ports if p != port]
            log = open(home / f"syncobj-{i}.log", "wb")  # noqa: SIM115
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.syncobjnode", str(port), *peers, str(home),
                 password, "batch" if batch else "nobatch"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, cwd=ROOT, text=True, bufsize=1))

    def ask(self, proc: subprocess.Popen, line: str) -> dict:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        out = proc.stdout.readline()
        if not out:
            raise RuntimeError(f"pysyncobj node exited {proc.poll()}")
        return json.loads(out)

    def leader(self, deadline_s: float = 30) -> subprocess.Popen:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            views = [self.ask(p, "leader") for p in self.procs]
            leaders = [p for p, v in zip(self.procs, views, strict=True) if v["leader"]]
            if len(leaders) == 1 and all(v["ready"] for v in views):
                return leaders[0]
            time.sleep(0.1)
        raise RuntimeError("pysyncobj elected no leader")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()  # by PID: only the processes started here
                p.wait()
        for log in self.logs:
            log.close()


def syncobj_runs(home: Path, seq: int, pipe: int, window: int) -> tuple[dict, dict]:
    """Each shape in pysyncobj's better setting: appendEntriesUseBatch=False (documented as
    the faster one for single requests) for both shapes, and its default (batch) for the
    pipelined shape too; the pipelined row takes the faster of the two, the other is kept."""
    out: dict = {}
    for batch in (False, True):
        group = SyncObjGroup(home / ("batch" if batch else "nobatch"), batch)
        try:
            leader = group.leader()
            group.ask(leader, "seq 10")  # warm
            s = group.ask(leader, f"seq {seq}") if not batch else {"ok": 0, "seconds": 0}
            p = group.ask(leader, f"pipe {pipe} {window}")
            value = group.ask(leader, "value")["value"]
            assert value == 10 + s["ok"] + p["ok"], value
        finally:
            group.stop()
        tag = "batch" if batch else "nobatch"
        if not batch:
            out["sequential"] = {"ops": s["ok"], "seconds": s["seconds"], "setting": tag}
        out[f"pipelined-{tag}"] = {"ops": p["ok"], "seconds": p["seconds"], "setting": tag}
    best = max((out["pipelined-batch"], out["pipelined-nobatch"]), key=rate)
    return out["sequential"], dict(best, both={k: rate(v) for k, v in out.items()
                                                if k.startswith("pipelined")})


# --- report ----------------------------------------------------------------------------------

def rate(r: dict | None) -> float | None:
    return r["ops"] / r["seconds"] if r and r["seconds"] > 0 else None


def markdown(doc: dict) -> str:
    lines = [f"# Coordination: kvd CAS vs pysyncobj ({doc['date']})", "",
             f"`{doc['command']}`", "",
             "| shape | kvd ops/s | pysyncobj ops/s | kvd / pysyncobj | target |",
             "|---|---:|---:|---:|---|"]
    for shape, kvd_shape in (("sequential", "sequential"), ("sequential", "sequential-read"),
                             ("pipelined", "pipelined"), ("pipelined", "pipelined-read")):
        k, s = rate(doc["kvd"][kvd_shape]), rate(doc["pysyncobj"].get(shape))
        ratio = f"{k / s:.2f}x" if k and s else "—"
        sv = f"{s:,.0f}" if s else doc["pysyncobj"].get("note", "—")
        if s:
            sv += f" ({doc['pysyncobj'][shape]['setting']})"
        ok = "—" if not (k and s) else ("met" if k / s >= 2 else "missed")
        target = f"≥ 2x: {ok}" if kvd_shape == shape else "(for comparison)"
        lines.append(f"| {doc['shapes'][kvd_shape]} | {k:,.0f} | {sv} | {ratio} | {target} |")
    fo = doc["failover"]
    if fo:
        p50 = statistics.median(fo)
        lines += ["", "| failover (kill -9 leader → first CAS) | p50 s | max s | runs | target |",
                  "|---|---:|---:|---:|---|",
                  f"| kvd 3 nodes | {p50:.3f} | {max(fo):.3f} | {len(fo)} | "
                  f"≤ 1.5 s: {'met' if p50 <= 1.5 else 'missed'} |"]
    lines += ["", *[f"- {n}" for n in doc["notes"]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    doc: dict = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                 "command": "python -m bench.coordination " + " ".join(
                     argv if argv is not None else sys.argv[1:]),
                 "shapes": {
                     "sequential": f"sequential CAS (1 client, {args.seq} increments)",
                     "sequential-read": f"sequential CGET + CAS ({args.seq} increments)",
                     "pipelined": f"pipelined CAS ({args.pipe} increments, {args.window} in "
                                  "flight)",
                     "pipelined-read": f"pipelined CGET + CAS ({args.pipe} increments, "
                                       f"{args.window} in flight)"},
                 "kvd": {}, "pysyncobj": {}, "failover": []}
    with tempfile.TemporaryDirectory(prefix="kv-coord-") as tmp, ExitStack() as stack:
        home = Path(tmp)
        group = KvdGroup(home / "kvd")
        stack.callback(group.stop)
        leader = group.leader()
        say(f"kvd: leader {leader.label}")
        for read in (False, True):
            tag = "-read" if read else ""
            doc["kvd"]["sequential" + tag] = kvd_sequential(leader, args.seq, read)
            doc["kvd"]["pipelined" + tag] = kvd_pipelined(leader, args.pipe, args.window,
                                                          read)
            say(f"kvd sequential{tag}: {rate(doc['kvd']['sequential' + tag]):,.0f} ops/s, "
                f"pipelined{tag}: {rate(doc['kvd']['pipelined' + tag]):,.0f} ops/s")
        if args.no_syncobj or not syncobj_available():
            doc["pysyncobj"]["note"] = ("left out" if args.no_syncobj else "not installed")
        else:
            seq, pipe = syncobj_runs(home / "syncobj", args.seq, args.pipe, args.window)
            doc["pysyncobj"].update(sequential=seq, pipelined=pipe)
            from pysyncobj.version import VERSION

            doc["pysyncobj"]["version"] = VERSION
            say(f"pysyncobj sequential: {rate(seq):,.0f} ops/s, pipelined: "
                + ", ".join(f"{k} {v:,.0f} ops/s" for k, v in pipe["both"].items()))
        doc["failover"] = failovers(group, args.failovers, say)
    doc["notes"] = [
        "kvd: 3 nodes, --fsync everysec (keyspace); the Raft log fsyncs every append (on "
        "the leader and the followers, before they answer). One client sends to the leader "
        "over the native protocol. CAS rows: an increment is CAS REV r (value+1) on the "
        "revision the client's last CAS returned, as an optimistic client does (etcd's STM, "
        "Consul's ModifyIndex); on COMPARE_FAILED it reads (CGET) and retries. CGET + CAS "
        "rows: every increment reads first (a ReadIndex read: a heartbeat round, no log "
        "entry), then CASes.",
        f"kvd pipelined: one client, {args.window} distinct counters; each round pipelines "
        f"one CAS per counter (and, in the CGET + CAS row, {args.window} CGETs before them) "
        "as lone requests (batch=False).",
        "pysyncobj " + ("(" + doc["pysyncobj"]["note"] + ")" if "note" in doc["pysyncobj"]
                        else doc["pysyncobj"].get("version", "")) +
        ": 3 SyncObj processes on loopback, password set, journalFile + fullDumpFile (its "
        "durable mode; the journal is an mmap it never msyncs/fsyncs, and term/vote are not "
        "fsynced either). A @replicated incr called in the leader's own process (no client "
        f"hop): sequential sync=True, pipelined async with callbacks, ≤ {args.window} in "
        "flight. Setting: appendEntriesUseBatch=False (nobatch) for sequential — its default "
        "(batch) waits a tick per entry, ~10 ops/s; pipelined runs both and shows the faster"
        + (": " + ", ".join(f"{k} {v:,.0f} ops/s" for k, v in
                            doc["pysyncobj"]["pipelined"]["both"].items())
           if "pipelined" in doc["pysyncobj"] else "") + ".",
        "failover: one CAS each 20 ms on the leader, then SIGKILL; time to the first "
        "successful CAS (CGET + CAS) sent to a survivor, survivors probed in turn on fresh "
        f"connections with a {PROBE_S} s client timeout (a request forwarded to the dead leader "
        "is left unanswered until the client times out, so the figure is within about "
        f"{PROBE_S} s of the first possible success); a follower forwards to the new leader. "
        "The killed node is restarted between runs.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(doc)
    (args.out / "latest-coordination.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
