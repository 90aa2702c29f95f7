"""The HTTP door against its ceiling, a bare h11 server, in the same repetitions.

    python -m bench.httpdoor                 # 3 repetitions; or: python -m bench --http
    python -m bench.httpdoor --reps 5 --requests 40000 --clients 4

kvd (`--fsync everysec`, its HTTP door) and bench.h11echo (one selector and h11, no store:
the most a Python + h11 server does per request) take the same load: `--clients` processes,
each with one keep-alive connection, send `GET /v1/kv/key:NNNN` or `PUT /v1/kv/key:NNNN`
(100-byte values, keys drawn from 10,000) one request at a time, `--requests` in all per op.
Each repetition runs both servers back to back, in an order that alternates, so a ratio
compares two runs that shared the machine's mood. No target (issue 14): the figures are
reported. Prints requests/s and p50 latency, medians and ranges over the repetitions.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import random
import socket
import statistics
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

from bench.targets import Kvd, Target

KEYS = 10_000
VALUE = b"x" * 100
OPS = ("GET", "PUT")
FILL_PIPELINE = 100
READ_CHUNK = 64 * 1024


class KvdHttp(Kvd):
    """kvd measured on its HTTP door."""

    def __init__(self, home: Path) -> None:
        super().__init__(home, "everysec", name="kvd-http")

    def ready(self) -> bool:
        return super().ready() and _answers(self.http_port)


class H11Echo(Target):
    """The ceiling (bench.h11echo); `http_port` is its only port."""

    label = "h11-echo"

    @property
    def http_port(self) -> int:
        return self.port

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.h11echo", str(self.port)]

    def ready(self) -> bool:
        return _answers(self.port)


# -- the client: pre-formatted requests on raw sockets, a minimal response reader ------------

def request(op: str, key: int) -> bytes:
    head = f"{op} /v1/kv/key:{key:04d} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
    if op == "PUT":
        return f"{head}content-length: {len(VALUE)}\r\n\r\n".encode() + VALUE
    return f"{head}\r\n".encode()


class Reader:
    """Reads whole responses off a keep-alive connection; every one carries Content-Length."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def status(self) -> int:
        """The next response's status code; its headers and body are consumed."""
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                total = end + 4 + _content_length(bytes(buf[:end]))
                if len(buf) >= total:
                    status = int(buf[9:12])
                    del buf[:total]
                    return status
            chunk = self.sock.recv(READ_CHUNK)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk


def _content_length(head: bytes) -> int:
    head = head.lower()
    i = head.find(b"\r\ncontent-length:")
    if i < 0:
        raise ValueError(f"a response without content-length: {head[:200]!r}")
    j = head.find(b"\r\n", i + 2)
    return int(head[i + 17:j if j >= 0 else len(head)])


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _answers(port: int) -> bool:
    try:
        with _connect(port) as sock:
            sock.sendall(request("GET", 0))
            Reader(sock).status()
            return True
    except OSError:
        return False


def fill(port: int) -> None:
    """PUT every key once, FILL_PIPELINE requests in flight, so that every GET finds one."""
    with _connect(port) as sock:
        reader = Reader(sock)
        for first in range(0, KEYS, FILL_PIPELINE):
            keys = range(first, min(first + FILL_PIPELINE, KEYS))
            sock.sendall(b"".join(request("PUT", k) for k in keys))
            bad = [s for s in (reader.status() for _ in keys) if s != 200]
            if bad:
                raise RuntimeError(f"fill: a PUT was answered {bad[0]}")


def _client(port: int, op: str, n: int, seed: int, start: mp.Barrier, out: mp.Queue) -> None:
    """One process, one connection, `n` requests one at a time; sends back its timings."""
    rng = random.Random(seed)
    reqs = [request(op, rng.randrange(KEYS)) for _ in range(min(n, KEYS))]
    lat = array("d")
    errors = 0
    with _connect(port) as sock:
        reader, now = Reader(sock), time.perf_counter
        sock.sendall(reqs[0])  # warm the connection before the clock starts
        reader.status()
        start.wait(60)  # a client that cannot connect breaks it
        t0 = now()
        for i in range(n):
            sent = now()
            sock.sendall(reqs[i % len(reqs)])
            if reader.status() != 200:
                errors += 1
            lat.append(now() - sent)
        t1 = now()
    out.put((t0, t1, lat.tobytes(), errors))


# -- a run: C clients against one server --------------------------------------------------

@dataclass(frozen=True)
class Run:
    rps: float
    p50_us: float


def run(port: int, op: str, clients: int, requests: int, seed: int) -> Run:
    ctx = mp.get_context("fork")  # the parent holds no threads; fork starts in milliseconds
    start, out = ctx.Barrier(clients), ctx.Queue()
    each = max(1, requests // clients)
    procs = [ctx.Process(target=_client, args=(port, op, each, seed + i, start, out))
             for i in range(clients)]
    for p in procs:
        p.start()
    try:
        results = _collect(procs, out)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    errors = sum(r[3] for r in results)
    if errors:
        raise RuntimeError(f"{op} on port {port}: {errors} responses were not 200")
    lat = array("d")
    for r in results:
        lat.frombytes(r[2])
    span = max(r[1] for r in results) - min(r[0] for r in results)
    return Run(len(lat) / span, statistics.median(lat) * 1e6)


def _collect(procs: list, out: mp.Queue) -> list[tuple]:
    """Every client's timings; a client that died (its traceback is on stderr) ends the run."""
    results: list[tuple] = []
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=1))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a client process failed (see its traceback above)") from None
    return results


# -- the side-by-side repetitions ---------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.httpdoor", description=__doc__)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--requests", type=int, default=20_000, help="per op, target and repetition")
    p.add_argument("--clients", type=int, default=4, help="client processes, one connection "
                   "each")
    args = p.parse_args(argv)
    rows: dict[str, list[tuple[Run, Run]]] = {op: [] for op in OPS}
    with tempfile.TemporaryDirectory(prefix="kv-bench-http-") as tmp:
        kvd, echo = KvdHttp(Path(tmp) / "kvd"), H11Echo(Path(tmp) / "echo")
        try:
            kvd.start()
            echo.start()
            fill(kvd.http_port)
            for rep in range(args.reps):
                order = (kvd, echo) if rep % 2 == 0 else (echo, kvd)
                for op in OPS:
                    got = {t.label: run(t.http_port, op, args.clients, args.requests, rep * 100)
                           for t in order}
                    rows[op].append((got[kvd.label], got[echo.label]))
                print(f"repetition {rep + 1}/{args.reps} done", flush=True)
        finally:
            kvd.stop()
            echo.stop()
    print(table(rows, args))
    return 0


def table(rows: dict[str, list[tuple[Run, Run]]], args: argparse.Namespace) -> str:
    lines = [f"\n{args.clients} clients, one keep-alive connection and one request in flight "
             f"each; {args.requests:,} requests per op and repetition; {args.reps} "
             f"repetition{'s' if args.reps != 1 else ''} (median, min–max)\n",
             "| op | kvd req/s | h11 ceiling req/s | kvd ÷ ceiling, req/s | kvd p50 µs "
             "| ceiling p50 µs | kvd ÷ ceiling, p50 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for op, pairs in rows.items():
        ours, theirs = [a for a, _ in pairs], [b for _, b in pairs]
        lines.append(
            f"| {op} | {_fmt([r.rps for r in ours], 0)} | {_fmt([r.rps for r in theirs], 0)} "
            f"| {_fmt([a.rps / b.rps for a, b in pairs])} "
            f"| {_fmt([r.p50_us for r in ours], 0)} | {_fmt([r.p50_us for r in theirs], 0)} "
            f"| {_fmt([a.p50_us / b.p50_us for a, b in pairs])} |")
    return "\n".join(lines)


def _fmt(xs: list[float], digits: int = 2) -> str:
    return f"{statistics.median(xs):,.{digits}f} ({min(xs):,.{digits}f}–{max(xs):,.{digits}f})"


if __name__ == "__main__":
    raise SystemExit(main())
