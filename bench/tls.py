"""TLS on the Redis door against the same door in plaintext, both driven by redis-benchmark,
in the same repetitions.

    python -m bench.tls                  # 5 repetitions; or: python -m bench --tls
    python -m bench.tls --reps 3 --requests 50000

Two kvd (`--fsync everysec`), one with `--tls-cert/--tls-key` (a throwaway CA and server
certificate made with trustme, a test dependency), take `redis-benchmark -t set,get -d 100
-r 10000` (with `--tls --cacert` for the TLS one) in two shapes: (a) 50 clients pipelining
16, (b) one client, one request at a time. Each repetition runs both nodes back to back, the
order alternating, so a ratio compares two runs that shared the machine's mood. Target
(issue 15): (a) SET through TLS >= 0.7 x the plaintext requests/s. Prints requests/s and the
ratio, medians and ranges.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench import redisbench
from bench.targets import Kvd, Redis

SHAPES = {"a: -c 50 -P 16": (50, 16), "b: -c 1 -P 1": (1, 1)}
OPS = ("set", "get")
TARGET = 0.7


class KvdTls(Kvd):
    """kvd whose Redis and HTTP doors speak TLS only."""

    def __init__(self, home: Path, cert: Path, key: Path) -> None:
        super().__init__(home, "everysec", name="kvd-tls")
        self.cert, self.key = cert, key

    def argv(self) -> list[str]:
        return [*super().argv(), "--tls-cert", str(self.cert), "--tls-key", str(self.key)]


def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(CA, server certificate, server key), PEM, for 127.0.0.1."""
    try:
        import trustme
    except ImportError:
        raise SystemExit("bench.tls makes its certificates with trustme: "
                         "pip install -e .[test]") from None
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(paths[0]))
    server.cert_chain_pems[0].write_to_path(str(paths[1]))
    server.private_key_pem.write_to_path(str(paths[2]))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--requests", type=int, default=100_000, help="for shape (a); (b) runs a "
                   "tenth")
    args = p.parse_args(argv)
    if not Redis.available():
        raise SystemExit("bench.tls needs redis-benchmark (apt-get install redis-tools)")
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="kv-bench-tls-") as tmp:
        ca, cert, key = certificates(Path(tmp) / "certs")
        plain, tls = Kvd(Path(tmp) / "plain", "everysec", name="kvd-plain"), \
            KvdTls(Path(tmp) / "tls", cert, key)
        tls_flags = ("--tls", "--cacert", str(ca))
        try:
            plain.start()
            tls.start()
            for rep in range(args.reps):
                for shape, (clients, pipeline) in SHAPES.items():
                    n = args.requests if pipeline > 1 else args.requests // 10
                    for op in OPS:
                        runs = [(plain, ()), (tls, tls_flags)]
                        got = {}
                        for target, flags in runs if rep % 2 == 0 else runs[::-1]:
                            got[target] = redisbench.run(target.resp_port, op, clients,
                                                         pipeline, n, 10_000, 100, flags).rps
                        rows.setdefault((shape, op), []).append((got[plain], got[tls]))
                print(f"repetition {rep + 1}/{args.reps} done", flush=True)
        finally:
            plain.stop()
            tls.stop()
    print(report(rows))
    return 0


def report(rows: dict[tuple[str, str], list[tuple[float, float]]]) -> str:
    lines = ["| shape | op | plaintext, requests/s | TLS, requests/s | TLS ÷ plaintext |",
             "| --- | --- | ---: | ---: | ---: |"]
    for (shape, op), pairs in rows.items():
        lines.append(f"| {shape} | {op.upper()} | {_fmt([a for a, _ in pairs], 0)} | "
                     f"{_fmt([b for _, b in pairs], 0)} | {_fmt([b / a for a, b in pairs])} |")
    pipelined_set = [b / a for a, b in rows.get(("a: -c 50 -P 16", "set"), [])]
    if pipelined_set:
        ratio = statistics.median(pipelined_set)
        lines.append(f"\npipelined SET through TLS: {ratio:.2f} x plaintext (target >= "
                     f"{TARGET}: {'met' if ratio >= TARGET else 'MISSED'})")
    return "\n".join(lines)


def _fmt(xs: list[float], digits: int = 2) -> str:
    return f"{statistics.median(xs):,.{digits}f} ({min(xs):,.{digits}f}–{max(xs):,.{digits}f})"


if __name__ == "__main__":
    raise SystemExit(main())
