"""Redis's own figures, from redis-benchmark, in the shape of kvd.bench.Result.

redis-benchmark is the fairest driver for Redis (a C client with one event loop); it reports
p50 and p99 but not p90, which stays empty.
"""

from __future__ import annotations

import csv
import io
import subprocess

from kvd.bench.runner import Result


def run(port: int, op: str, clients: int, pipeline: int, requests: int, keyspace: int,
        value_size: int, tls: tuple[str, ...] = ()) -> Result:
    """`tls`: redis-benchmark's TLS flags (`--tls --cacert FILE`), for a TLS door."""
    argv = ["redis-benchmark", "-p", str(port), "-c", str(clients), "-P", str(pipeline),
            "-t", op, "-d", str(value_size), "-n", str(requests), "-r", str(keyspace),
            "--csv", "-q", *tls]
    out = subprocess.run(argv, capture_output=True, timeout=300, check=True).stdout.decode()
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r.get("test")]
    row = next(r for r in rows if r["test"].upper() == op.upper())
    rps = float(row["rps"])
    ms = {k: float(row[f"{k}_latency_ms"]) * 1000 for k in ("p50", "p99", "max")}
    return Result(op, requests, 0, requests / rps, rps, ms["p50"], 0.0, ms["p99"], ms["max"],
                  clients, pipeline, False)


def fill_commands(keys: int, value_size: int) -> bytes:
    """RESP for SET key:<n> of `keys` 16-byte keys, for `redis-cli --pipe`."""
    value = b"v" * value_size
    head = b"*3\r\n$3\r\nSET\r\n$16\r\n"
    tail = b"\r\n$%d\r\n%s\r\n" % (value_size, value)
    return b"".join(head + b"key:%012d" % n + tail for n in range(keys))
