"""Cluster benchmark: replication lag, cluster vs single-node throughput, time to converge.

    python bench/cluster.py [--lag-rate 1000] [--lag-seconds 5] [--lag-runs 3]
                            [--writes 100000] [--diverged 100000] [--join-keys 1000000]

Starts its own kvd processes on free loopback ports (data under a temporary folder) and stops
them at the end. The convergence figure needs root and `ip netns` (a real partition, healed);
without them it is reported as skipped.

1. Lag: one client SETs at a steady rate on node A; a WATCH on node B timestamps each event.
   Lag = seen on B - sent to A (so it includes A's own request round trip).
2. Throughput: pipelined SETs to a lone node, then to one node of a 3-node cluster (same run,
   same machine); for the cluster also the time until every node holds every write.
3. Convergence: 3 nodes in network namespaces; node C is cut off; A and C each take half of
   the diverged keys; the link comes back; time until the three digests are equal.
4. Join under load: node A holds --join-keys keys (16-byte keys, 100-byte values); a client
   GETs from A at a steady 200/s; an empty node B joins A. The client's latency (p50, p99,
   max) before the join against during it (until the digests are equal), how long the join
   took, and how many keys anti-entropy moved each way (A's pushes, B's pulls: once is
   the goal).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.procs import Kvd, env_for, wait_for  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def cluster(home: Path, n: int, tag: str) -> list[Kvd]:
    first = Kvd(home, f"{tag}0").start()
    nodes = [first] + [Kvd(home, f"{tag}{i}", ["--join", first.address]).start()
                       for i in range(1, n)]
    for node in nodes:
        wait_for(lambda node=node: [m["status"] for m in node.client().members()]
                 == ["alive"] * n, 30, "the cluster to form")
    for node in nodes:  # and gossip flows between every pair (subscriptions are made)
        node.client().set(f"probe:{node.name}", "1")
    wait_for(lambda: all(x.client().exists(*[f"probe:{m.name}" for m in nodes]) == len(nodes)
                         for x in nodes), 30, "gossip between every pair")
    for node in nodes:
        node.client().delete(f"probe:{node.name}")
    return nodes


def digests_equal(nodes: list[Kvd]) -> bool:
    return len({n.client().info()["digest"] for n in nodes}) == 1


def lag(home: Path, rate: int, seconds: float) -> dict:
    a, b = cluster(home, 2, "lag")
    try:
        count = int(rate * seconds)
        seen: dict[str, float] = {}
        ready = threading.Event()

        def watch() -> None:
            with b.client(timeout=30) as c:
                for event in c.watch("lag:", poll_s=0.05):
                    if "key" not in event:
                        ready.set()
                        continue
                    key = event["key"].decode()
                    seen[key] = time.perf_counter()
                    if key == "lag:stop":
                        return

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        ready.wait(10)
        sent: dict[str, float] = {}
        acks: list[float] = []
        with a.client() as c:
            start = time.perf_counter()
            for i in range(count):
                slot = start + i / rate
                while time.perf_counter() < slot:
                    time.sleep(max(0.0, slot - time.perf_counter()))
                key = f"lag:{i}"
                sent[key] = time.perf_counter()
                c.set(key, "x" * 32)
                acks.append(time.perf_counter() - sent[key])
            c.set("lag:stop", "1")
        t.join(30)
        lags = [(seen[k] - sent[k]) * 1000 for k in sent if k in seen]
        return {"writes": count, "rate_per_s": rate, "seen_on_b": len(lags),
                "lag_p50_ms": round(pct(lags, 50), 2), "lag_p99_ms": round(pct(lags, 99), 2),
                "lag_max_ms": round(max(lags), 1),
                "ack_p50_ms": round(statistics.median(acks) * 1000, 2)}
    finally:
        for n in (a, b):
            n.stop()


def pipelined(node: Kvd, writes: int, tag: str) -> float:
    with node.client(timeout=120) as c:
        start = time.perf_counter()
        for lo in range(0, writes, 10_000):
            c.pipeline([["SET", f"{tag}:{i}", "v" * 32] for i in range(lo, lo + 10_000)])
        return time.perf_counter() - start


def throughput(home: Path, writes: int) -> dict:
    single = Kvd(home, "single").start()
    try:
        alone = pipelined(single, writes, "t")
    finally:
        single.stop()
    nodes = cluster(home, 3, "tp")
    try:
        start = time.perf_counter()
        clustered = pipelined(nodes[0], writes, "t")
        wait_for(lambda: all(n.client().dbsize() == writes for n in nodes), 120, "replication")
        replicated = time.perf_counter() - start
    finally:
        for n in nodes:
            n.stop()
    return {"writes": writes, "single_node_sets_per_s": round(writes / alone),
            "cluster_sets_per_s": round(writes / clustered),
            "ratio": round(alone / clustered, 2),
            "cluster_all_replicated_s": round(replicated, 2)}


def converge(home: Path, diverged: int) -> dict:
    from tests.test_partition import PORT, Net, _can_make_namespaces

    reason = _can_make_namespaces()
    if reason:
        return {"skipped": reason}
    net = Net(3)
    procs: list[subprocess.Popen] = []
    env = env_for(home)

    def in_ns(i: int, code: str, wait: bool = True):
        argv = ["ip", "netns", "exec", net.nodes[i], sys.executable, "-c",
                "from kvsh.client import Client\n" + code]
        if wait:
            return subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True,
                                  text=True, timeout=300).stdout
        return subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)

    try:
        net.create()
        for i in range(3):
            argv = ["ip", "netns", "exec", net.nodes[i], sys.executable, "-m", "kvd", "start",
                    "--foreground", "--name", f"p{i}", "--bind", net.ip_of(i), "--port",
                    str(PORT), "--data-dir", str(home / f"p{i}"), "--log-level", "warning"]
            if i:
                argv += ["--join", f"{net.ip_of(0)}:{PORT}"]
            procs.append(subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL))
        ips = [net.ip_of(i) for i in range(3)]
        client = f"lambda ip: Client(ip, {PORT}, timeout=5)"
        in_ns(0, f"import time\nmk = {client}\nend = time.time() + 60\n"
                 "def formed():\n"
                 "    try:\n"
                 f"        got = [m['status'] for m in mk({ips[0]!r}).members()]\n"
                 "        return got == ['alive'] * 3\n"
                 "    except Exception:\n"
                 "        return False\n"
                 "while not formed():\n"
                 "    assert time.time() < end; time.sleep(0.1)\n")
        net.cut(2)
        half = diverged // 2
        for i, tag in ((0, "a"), (2, "c")):
            in_ns(i, f"c = Client({ips[i]!r}, {PORT}, timeout=120)\n"
                     f"for lo in range(0, {half}, 10000):\n"
                     f"    c.pipeline([['SET', f'{tag}:{{i}}', 'v']\n"
                     f"                for i in range(lo, lo + 10000)])\n")
        probe = in_ns(0, f"import sys, time\nmk = {client}\nsys.stdin.readline()\n"
                         "start = time.perf_counter()\n"
                         f"while len({{mk(ip).info()['digest'] for ip in {ips!r}}}) != 1:\n"
                         "    time.sleep(0.02)\n"
                         "print(time.perf_counter() - start)\n", wait=False)
        net.cut(2, up=True)
        probe.stdin.write("go\n")
        probe.stdin.flush()
        out, _ = probe.communicate(timeout=300)
        return {"diverged_keys": 2 * half, "converge_s": round(float(out), 2)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        net.destroy()


def join_under_load(home: Path, keys: int, rate: int = 200, before_s: float = 5) -> dict:
    a = Kvd(home, "ja", ["--fsync", "no"]).start()
    b = Kvd(home, "jb", ["--fsync", "no", "--join", a.address])
    try:
        with a.client(timeout=120) as c:
            for lo in range(0, keys, 20_000):
                c.pipeline([["SET", b"key:%012d" % i, b"v" * 100]
                            for i in range(lo, min(keys, lo + 20_000))])
        reads: list[tuple[float, float]] = []  # (when, seconds)
        stop = threading.Event()

        def reader() -> None:
            with a.client(timeout=30) as c:
                start, i = time.perf_counter(), 0
                while not stop.is_set():
                    t0 = time.perf_counter()
                    c.get(b"key:%012d" % (i * 7919 % keys))
                    t1 = time.perf_counter()
                    reads.append((t1, t1 - t0))
                    i += 1
                    stop.wait(max(0.0, start + i / rate - time.perf_counter()))

        t = threading.Thread(target=reader)
        t.start()
        try:
            time.sleep(before_s)  # the reader's baseline on the same node, just before
            joined = time.perf_counter()
            b.start()
            wait_for(lambda: b.client().info()["digest"] == a.client().info()["digest"], 600,
                     "b to hold a's keys")
            done = time.perf_counter()
        finally:
            stop.set()
            t.join()
        # The passes' counters are kept when a pass ends: wait for b's first.
        wait_for(lambda: b.client().info()["ae_rounds"] >= 1, 60, "b's pass to end")
        ia, ib = a.client().info(), b.client().info()

        def figures(lo: float, hi: float) -> dict:
            ms = [s * 1000 for w, s in reads if lo <= w <= hi]
            return {"reads": len(ms), "p50_ms": round(pct(ms, 50), 2),
                    "p99_ms": round(pct(ms, 99), 2), "max_ms": round(max(ms), 1)}

        return {"keys": keys, "gets_per_s": rate, "before": figures(0, joined),
                "during": figures(joined, done), "join_s": round(done - joined, 2),
                "a_ae_keys_pushed": ia["ae_keys_pushed"], "b_ae_keys_pulled": ib["ae_keys_pulled"]}
    finally:
        for n in (a, b):
            n.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lag-rate", type=int, default=1000, help="writes per second")
    parser.add_argument("--lag-seconds", type=float, default=5)
    parser.add_argument("--lag-runs", type=int, default=3)
    parser.add_argument("--writes", type=int, default=100_000)
    parser.add_argument("--diverged", type=int, default=100_000)
    parser.add_argument("--join-keys", type=int, default=1_000_000, help="0 skips the figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kv-bench-") as tmp:
        home = Path(tmp)
        for _ in range(args.lag_runs):  # a shared machine is noisy: several runs, all shown
            run = Path(tempfile.mkdtemp(dir=home))
            print("lag:", lag(run, args.lag_rate, args.lag_seconds), flush=True)
        print("throughput:", throughput(home, args.writes), flush=True)
        print("convergence:", converge(home, args.diverged), flush=True)
        if args.join_keys:
            print("join under load:", join_under_load(home, args.join_keys), flush=True)


if __name__ == "__main__":
    main()
