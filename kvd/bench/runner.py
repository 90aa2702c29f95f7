"""`kvd bench`: load a running node or cluster and report throughput and latency.

Like redis-benchmark: `--clients` processes, each with `--pipeline` requests in flight (one
BATCH message per refill unless `--no-batch`), `--requests` in total; each client spreads its
messages round-robin over all the `--host/--port` endpoints (the nodes of a cluster). One
result per op in `--ops`. A terminal gets a progress bar and a rich table; a pipe gets plain
text, or one JSON document with `--json`.

The arithmetic (percentiles, throughput) is pure and lives here; the socket work is in
kvd.bench.loadgen, run in worker processes so that the clients do not share one interpreter lock.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from array import array
from dataclasses import asdict, dataclass

from kvd.bench.loadgen import Workload, worker
from shared.keyring import KeyringError, server_key

OPS = ("set", "get", "mixed")
PERCENTILES = (50, 90, 99)


@dataclass
class Result:
    """One op's figures: requests per second and latencies in microseconds."""

    op: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    clients: int
    pipeline: int
    batch: bool


def percentile(sorted_values: array | list, p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (what redis-benchmark reports)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil without floats
    return float(sorted_values[int(rank) - 1])


def summarise(op: str, parts: list[tuple], w: Workload, clients: int) -> Result:
    """Merge the workers' (done, errors, started, finished, latency bytes) into one Result."""
    lat = array("q")
    for part in parts:
        lat.frombytes(part[4])
    ordered = sorted(lat)
    seconds = max(p[3] for p in parts) - min(p[2] for p in parts)
    done = sum(p[0] for p in parts)
    us = [percentile(ordered, p) / 1000 for p in PERCENTILES]
    return Result(op, done, sum(p[1] for p in parts), seconds, done / seconds if seconds else 0.0,
                  *us, (ordered[-1] / 1000) if ordered else 0.0, clients, w.pipeline, w.batch)


def run_paired(endpoints: list[str], w: Workload,
               server_keys: list[str | None] | None = None) -> list[Result]:
    """One Result per endpoint from kvd.bench.loadgen.run_paired, run in this process;
    `server_keys`: each endpoint's CURVE server key (None: not encrypted)."""
    from kvd.bench import loadgen

    keys = server_keys or [None] * len(endpoints)
    conns = [loadgen.connect(e, server_key=k) for e, k in zip(endpoints, keys, strict=True)]
    try:
        parts = loadgen.run_paired([sock for _, sock in conns], w)
    finally:
        for ctx, sock in conns:
            sock.close()
            ctx.term()
    return [summarise(w.ops, [(r.done, r.errors, r.started, r.finished,
                               r.latencies_ns.tobytes())], w, 1) for r in parts]


def split(total: int, n: int) -> list[int]:
    """`total` requests over `n` clients, as evenly as integers allow."""
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def run_op(endpoints: list[str], w: Workload, clients: int, on_progress=None,
           server_key: str | None = None) -> Result:
    """Run one workload with `clients` worker processes; `on_progress(done)` while it runs.
    `server_key`: the endpoints' CURVE server key, when they encrypt."""
    ctx = mp.get_context("spawn")  # no inherited sockets or threads from the caller
    start, progress, results = ctx.Event(), ctx.Value("q", 0), ctx.Queue()
    procs = []
    for i, n in enumerate(split(w.requests, clients)):
        mine = Workload(w.ops, n, w.pipeline, w.batch, w.keyspace, w.value_size, w.seed + i)
        procs.append(ctx.Process(target=worker, daemon=True,
                                 args=(endpoints, mine, start, progress, results, server_key)))
    for proc in procs:
        proc.start()
    try:
        start.set()
        parts = [_collect(results, procs, progress, on_progress) for _ in procs]
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    return summarise(w.ops, parts, w, clients)


def _collect(results, procs, progress, on_progress) -> tuple:
    while True:
        if on_progress is not None:
            on_progress(progress.value)
        try:
            part = results.get(timeout=0.1)
        except Exception:  # queue.Empty, re-exported oddly by multiprocessing
            if not any(p.is_alive() for p in procs) and results.empty():
                raise RuntimeError("a bench client died without a result") from None
            continue
        if isinstance(part, Exception):
            raise RuntimeError(f"a bench client failed: {part}") from None
        return part


# -- the command line -----------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", action="append", help="server host; repeat for several "
                   "endpoints (default 127.0.0.1)")
    p.add_argument("--port", action="append", type=int, help="server port; repeat for "
                   "several endpoints (default 7700)")
    p.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    p.add_argument("--pipeline", type=int, default=1, help="requests in flight per client "
                   "(default 1: sequential)")
    p.add_argument("--no-batch", dest="batch", action="store_false", help="send each "
                   "pipelined request as its own message instead of one BATCH per refill")
    p.add_argument("--requests", type=int, default=100_000, help="requests per op "
                   "(default 100000)")
    p.add_argument("--keyspace", type=int, default=100_000, help="distinct keys "
                   "(default 100000)")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    p.add_argument("--ops", default="set,get", help="comma-separated: set, get, mixed "
                   "(default set,get)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--server-key", metavar="KEY", help="the nodes' CURVE server key, when they "
                   "encrypt (kvd start prints it; default: $KV_SERVER_KEY)")


def endpoints_of(hosts: list[str] | None, ports: list[int] | None) -> list[str]:
    """Pair hosts with ports; a single host or port is shared by all endpoints."""
    hosts, ports = hosts or ["127.0.0.1"], ports or [7700]
    n = max(len(hosts), len(ports))
    if len(hosts) not in (1, n) or len(ports) not in (1, n):
        raise ValueError("give one --host, or as many --host as --port")
    return [f"tcp://{hosts[i % len(hosts)]}:{ports[i % len(ports)]}" for i in range(n)]


def main(args: argparse.Namespace) -> int:
    try:
        endpoints = endpoints_of(args.host, args.port)
        ops = [o.strip().lower() for o in args.ops.split(",") if o.strip()]
        if not ops or any(o not in OPS for o in ops):
            raise ValueError(f"--ops takes a comma-separated list of {', '.join(OPS)}")
        if min(args.clients, args.pipeline, args.requests, args.keyspace) < 1:
            raise ValueError("--clients, --pipeline, --requests and --keyspace must be >= 1")
        given = args.server_key or os.environ.get("KV_SERVER_KEY")
        key = server_key(given).decode() if given else None
    except (ValueError, KeyringError) as exc:
        print(f"kvd bench: {exc}", file=sys.stderr)
        return 2
    fancy = sys.stdout.isatty() and not args.json
    results = []
    try:
        for op in ops:
            w = Workload(op, args.requests, args.pipeline, args.batch, args.keyspace,
                         args.value_size)
            results.append(_run_shown(endpoints, w, args.clients, fancy, key))
    except (RuntimeError, TimeoutError) as exc:
        print(f"kvd bench: {exc} — is kvd running? (kvd status)", file=sys.stderr)
        return 3
    _print(results, endpoints, args.json, fancy)
    return 1 if any(r.errors for r in results) else 0


def _run_shown(endpoints: list[str], w: Workload, clients: int, fancy: bool,
               key: str | None) -> Result:
    if not fancy:
        return run_op(endpoints, w, clients, server_key=key)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(w.ops.upper(), total=w.requests)
        return run_op(endpoints, w, clients, lambda done: bar.update(task, completed=done), key)


def _print(results: list[Result], endpoints: list[str], as_json: bool, fancy: bool) -> None:
    if as_json:
        print(json.dumps({"endpoints": endpoints, "time": time.time(),
                          "results": [asdict(r) for r in results]}))
        return
    headers = ("op", "requests/s", "p50 µs", "p90 µs", "p99 µs", "max µs", "errors")
    rows = [(r.op.upper(), f"{r.rps:,.0f}", f"{r.p50_us:.0f}", f"{r.p90_us:.0f}",
             f"{r.p99_us:.0f}", f"{r.max_us:.0f}", str(r.errors)) for r in results]
    r0 = results[0]
    title = (f"{r0.requests:,} requests per op, {r0.clients} clients, pipeline {r0.pipeline}"
             f"{' (batched)' if r0.batch and r0.pipeline > 1 else ''}, {', '.join(endpoints)}")
    if fancy:
        from rich.console import Console
        from rich.table import Table

        table = Table(*headers, title=title)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    print(title)
    print("\t".join(headers))
    for row in rows:
        print("\t".join(row))
