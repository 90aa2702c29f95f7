"""The Redis door against Redis, both driven by redis-benchmark, in the same repetitions.

    python -m bench.resp                 # 5 repetitions; or: python -m bench --resp
    python -m bench.resp --reps 3 --requests 50000

Writes the table to bench/results/latest-resp.md (--out another folder).

kvd (`--fsync everysec`, its Redis door) and redis-server (AOF, appendfsync everysec) take
`redis-benchmark -t set,get -d 100 -r 10000` in two shapes: (a) 50 clients pipelining 16,
(b) one client, one request at a time. Each repetition runs both servers back to back, so a
ratio compares two runs that shared the machine's mood. Targets (issue 13): (a) SET and GET
>= 0.5 x Redis's requests/s; (b) p50 latency <= 2 x Redis's. Prints medians and ranges.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
from pathlib import Path

from bench import redisbench
from bench.targets import Kvd, Redis

RESULTS = Path(__file__).parent / "results"

SHAPES = {"a: -c 50 -P 16": (50, 16), "b: -c 1 -P 1": (1, 1)}
OPS = ("set", "get")


class KvdResp(Kvd):
    """kvd measured on its Redis door."""

    def __init__(self, home: Path) -> None:
        super().__init__(home, "everysec", name="kvd-resp")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.resp", description=__doc__)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--requests", type=int, default=100_000, help="for shape (a); (b) runs a "
                   "tenth")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)
    if not Redis.available():
        raise SystemExit("bench.resp needs redis-server and redis-benchmark "
                         "(apt-get install redis-server redis-tools)")
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    absolute: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="kv-bench-resp-") as tmp:
        kvd, redis = KvdResp(Path(tmp) / "kvd"), Redis(Path(tmp) / "redis")
        try:
            kvd.start()
            redis.start()
            for rep in range(args.reps):
                for shape, (clients, pipeline) in SHAPES.items():
                    n = args.requests if pipeline > 1 else args.requests // 10
                    for op in OPS:
                        ours = redisbench.run(kvd.resp_port, op, clients, pipeline, n, 10_000,
                                              100)
                        theirs = redisbench.run(redis.port, op, clients, pipeline, n, 10_000,
                                                100)
                        rows.setdefault((shape, op), []).append(
                            (ours.rps / theirs.rps, ours.p50_us / theirs.p50_us))
                        absolute.setdefault((shape, op), []).append((ours.rps, theirs.rps))
                print(f"repetition {rep + 1}/{args.reps} done", flush=True)
        finally:
            kvd.stop()
            redis.stop()
    lines = [f"# kvd's Redis door vs redis-server, {datetime.date.today()}", "",
             f"redis-benchmark -t set,get -d 100 -r 10000, {args.reps} repetitions, "
             f"{args.requests} requests pipelined, {args.requests // 10} one at a time; "
             "medians (ranges)", "",
             "| shape | op | kv ÷ Redis, requests/s | kv ÷ Redis, p50 latency "
             "| kv requests/s | Redis requests/s |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for (shape, op), pairs in rows.items():
        ours = statistics.median(k for k, _ in absolute[(shape, op)])
        theirs = statistics.median(r for _, r in absolute[(shape, op)])
        lines.append(f"| {shape} | {op.upper()} | {_fmt([r for r, _ in pairs])} | "
                     f"{_fmt([lat for _, lat in pairs])} | {ours:,.0f} | {theirs:,.0f} |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest-resp.md").write_text(text)
    print("\n" + text)
    return 0


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"


if __name__ == "__main__":
    raise SystemExit(main())
