"""What durability costs: pipelined SET throughput per fsync policy, replay time and memory.

    python bench/durability.py                 # the full run (1M keys; a few minutes)
    python bench/durability.py --keys 100000   # a quicker look

Every daemon runs in its own temp dir on a free loopback port and is stopped at the end.
Throughput: the same pipelined SET stream (16-byte keys, 100-byte values) against four kvd
daemons side by side — the log off (`appendonly = false`), `no`, `everysec`, `always` — in
interleaved rounds so that a noisy neighbour hurts every policy alike. Replay: fill one node
with --keys keys, stop it, start it again and read `replay_s` from INFO and its RSS. Redis,
if `redis-server` is on PATH, gets the same keys for the memory comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.targets import free_port, rss_bytes  # noqa: E402
from kvsh.client import Client  # noqa: E402
from shared.errors import Unreachable  # noqa: E402

POLICIES = ["off", "no", "everysec", "always"]
VALUE = b"v" * 100
CHUNK = 20_000  # commands per pipeline() call (the client splits them into ~1 MB batches)


def key(i: int) -> bytes:
    return b"key:%012d" % i  # 16 bytes


def rss_mb(pid: int) -> float:
    return rss_bytes(pid) / (1024 * 1024)


class Daemon:
    def __init__(self, home: Path, policy: str) -> None:
        self.home, self.policy, self.port = home, policy, free_port()
        home.mkdir(parents=True, exist_ok=True)
        self.config = home / f"{policy}.toml"
        self.config.write_text("appendonly = false\n" if policy == "off" else "")
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start and wait for PING; returns the seconds it took."""
        env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_DATA_HOME=str(self.home / "xdg"),
                   XDG_STATE_HOME=str(self.home / "xdg"), XDG_CONFIG_HOME=str(self.home / "xdg"))
        fsync = "everysec" if self.policy == "off" else self.policy
        argv = [sys.executable, "-m", "kvd", "start", "--foreground", "--name", self.policy,
                "--port", str(self.port), "--gossip-port", str(free_port()), "--data-dir",
                str(self.home / self.policy), "--fsync", fsync, "--config", str(self.config),
                "--log-level", "warning", "--resp-port", "0", "--http-port", "0"]
        started = time.monotonic()
        with open(self.home / f"{self.policy}.stderr", "ab") as err:
            self.proc = subprocess.Popen(argv, env=env, stdout=err, stderr=err)
        with Client("127.0.0.1", self.port, timeout=1) as client:
            for _ in range(3000):  # bounded: up to ~5 minutes of replay
                if self.proc.poll() is not None:
                    raise RuntimeError(f"kvd {self.policy} exited; see {err.name}")
                try:
                    client.ping()
                    return time.monotonic() - started
                except Unreachable:
                    client.reset()
                    time.sleep(0.1)
        raise RuntimeError(f"kvd {self.policy} did not answer")

    def client(self) -> Client:
        return Client("127.0.0.1", self.port, timeout=120)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def fill(client: Client, start: int, n: int) -> float:
    """SET keys start..start+n through pipelines; returns ops per second."""
    began = time.perf_counter()
    for lo in range(start, start + n, CHUNK):
        hi = min(lo + CHUNK, start + n)
        replies = client.pipeline(["SET", key(i), VALUE] for i in range(lo, hi))
        assert not any(r.is_error for r in replies), replies[0]
    return n / (time.perf_counter() - began)


def one_by_one(client: Client, start: int, n: int) -> float:
    """SET keys one request at a time: every write waits for its own commit."""
    began = time.perf_counter()
    for i in range(start, start + n):
        client.call("SET", key(i), VALUE)
    return n / (time.perf_counter() - began)


def report(title: str, rates: dict[str, list[float]]) -> None:
    base = statistics.median(rates["off"])
    print(f"\n{title}:")
    for p in POLICIES:
        rate = statistics.median(rates[p])
        print(f"  {p:9} {rate:10,.0f} ops/s   {rate / base:5.2f} x log off", flush=True)


def throughput(home: Path, ops: int, rounds: int) -> None:
    daemons = {p: Daemon(home / "tp", p) for p in POLICIES}
    try:
        for d in daemons.values():
            d.start()
        rates: dict[str, list[float]] = {p: [] for p in POLICIES}
        for r in range(rounds):
            for p in POLICIES:
                with daemons[p].client() as client:
                    rates[p].append(fill(client, r * ops, ops))
        report(f"pipelined SET, {ops} per round, median of {rounds} interleaved rounds", rates)
        single: dict[str, list[float]] = {p: [] for p in POLICIES}
        for r in range(rounds):
            for p in POLICIES:
                with daemons[p].client() as client:
                    single[p].append(one_by_one(client, r * ops, ops // 20))
        report(f"SET one at a time (one client, no pipelining), {ops // 20} per round", single)
    finally:
        for d in daemons.values():
            d.stop()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (contention-proof, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replay(home: Path, keys: int, restarts: int) -> float:
    node = Daemon(home / "rp", "everysec")
    try:
        node.start()
        with node.client() as client:
            fill(client, 0, keys)
            assert client.dbsize() == keys
        assert node.proc is not None
        filled_rss = rss_mb(node.proc.pid)
        node.stop()
        size = (home / "rp" / "everysec" / "kv.wal").stat().st_size
        runs = []  # (replay_s, start-to-PING s, CPU s until ready, RSS MB)
        for _ in range(restarts):
            wall = node.start()
            with node.client() as client:
                info = client.info()
                assert info["keys"] == keys, info["keys"]
            assert node.proc is not None
            runs.append((info["replay_s"], wall, cpu_s(node.proc.pid), rss_mb(node.proc.pid)))
            node.stop()
        print(f"\nreplay of {keys:,} keys (16-byte keys, 100-byte values), "
              f"log {size / 1e6:.0f} MB, {restarts} restarts (min / median):")
        for i, what in enumerate(["replay_s (INFO)", "start to first PING",
                                  "CPU used until ready"]):
            col = [run[i] for run in runs]
            print(f"  {what:22}{min(col):6.2f} / {statistics.median(col):.2f} s"
                  + ("  (goal <= 5 s for 1M)" if i == 0 else ""))
        rss = statistics.median(run[3] for run in runs)
        print(f"  kvd RSS after start   {rss:.0f} MB  (after the writes, before the restart: "
              f"{filled_rss:.0f} MB)")
        return rss
    finally:
        node.stop()


@contextlib.contextmanager
def redis(home: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(home)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            ok = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True)
            if ok.stdout.strip() == b"PONG":
                break
            time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def redis_rss(home: Path, keys: int) -> float | None:
    if shutil.which("redis-server") is None:
        print("\nredis-server not found: no Redis comparison (apt-get install redis-server)")
        return None
    with redis(home) as (port, pid):
        resp = b"".join(b"*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$100\r\n%s\r\n" % (key(i), VALUE)
                        for i in range(keys))
        subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=resp, check=True,
                       capture_output=True)
        used = subprocess.run(["redis-cli", "-p", str(port), "info", "memory"],
                              capture_output=True, text=True).stdout
        used_mb = int(next(ln.split(":")[1] for ln in used.splitlines()
                           if ln.startswith("used_memory:"))) / 2**20
        rss = rss_mb(pid)
    print(f"  redis RSS             {rss:.0f} MB  (used_memory {used_mb:.0f} MB)")
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--ops", type=int, default=100_000, help="SETs per throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=3, help="replays to time")
    args = parser.parse_args()
    print(f"kvd durability benchmark on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="kv-bench-") as tmp:
        home = Path(tmp)
        throughput(home, args.ops, args.rounds)
        rss = replay(home, args.keys, args.restarts)
        theirs = redis_rss(home, args.keys)
        if theirs:
            print(f"  kvd / redis           {rss / theirs:.2f} x  (goal <= 2.5 x)")


if __name__ == "__main__":
    main()
