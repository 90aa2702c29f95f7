"""The side-by-side run: every target, every mode, interleaved, several repetitions.

The machine is shared and noisy, so no figure stands alone: in each repetition every target
runs the same workload back to back (in an order that rotates between repetitions, so no
target always runs first), and each kv figure is divided by the raw ceiling's and by Redis's
figure *of the same repetition*. The report gives the median of those ratios and their spread
(min..max). Absolute requests per second are kept in the JSON for reference only.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import redisbench
from bench.targets import Redis, Target
from kvd.bench.loadgen import Workload
from kvd.bench.runner import Result, run_op, run_paired

VALUE_SIZE = 100


@dataclass(frozen=True)
class Mode:
    """How the clients load a target; `redis` is the redis-benchmark (clients, pipeline)."""

    name: str
    clients: int
    pipeline: int
    batch: bool
    requests: int
    redis: tuple[int, int] | None
    ops: tuple[str, ...] = ("set", "get")
    only: tuple[str, ...] = ()  # target labels; empty means all
    paired: bool = False  # one client taking turns over the targets (kvd.bench.loadgen.run_paired)


def default_modes(scale: float = 1.0) -> list[Mode]:
    def n(x: int) -> int:
        return max(50, int(x * scale))

    return [
        Mode("sequential", 1, 1, False, n(4_000), (1, 1), paired=True),
        Mode("pipelined", 2, 32, False, n(60_000), None),  # vs Redis: its batched run
        Mode("batched", 2, 256, True, n(200_000), (50, 16)),
        Mode("8 clients", 8, 1, False, n(8_000), None, ("set",),
             ("kvd-everysec", "kvd-always")),
    ]


@dataclass
class Run:
    rep: int
    target: str
    mode: str
    op: str
    result: Result


@dataclass
class Suite:
    targets: list[Target]
    modes: list[Mode]
    reps: int
    keyspace: int
    redis: Redis | None = None
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fill(self) -> None:
        """Every key of the keyspace exists before GETs are timed, on every target alike."""
        w = Workload("set", self.keyspace * 5, 256, True, self.keyspace, VALUE_SIZE, seed=99)
        for t in self.targets:
            run_op([t.endpoint], w, 1, server_key=t.server_key)
        if self.redis is not None:
            redisbench.run(self.redis.port, "set", 50, 16, self.keyspace * 5, self.keyspace,
                           VALUE_SIZE)

    def run(self, say=print) -> None:
        for rep in range(self.reps):
            for mode in self.modes:
                for op in mode.ops:
                    self._round(rep, mode, op, say)

    def _round(self, rep: int, mode: Mode, op: str, say) -> None:
        targets = [t for t in self.targets if not mode.only or t.label in mode.only]
        shift = rep % len(targets)
        if mode.paired:  # single nodes take turns; a cluster (several endpoints) goes alone
            w = Workload(op, mode.requests, 1, False, self.keyspace, VALUE_SIZE, seed=rep)
            order = [t for t in targets[shift:] + targets[:shift] if not hasattr(t, "endpoints")]
            paired = run_paired([t.endpoint for t in order], w, [t.server_key for t in order])
            for t, r in zip(order, paired, strict=True):
                self._record(rep, t.label, mode, op, r, say)
            targets = [t for t in targets if hasattr(t, "endpoints")]
            shift = 0
        for t in targets[shift:] + targets[:shift]:
            w = Workload(op, mode.requests, mode.pipeline, mode.batch, self.keyspace,
                         VALUE_SIZE, seed=rep * 1000)
            endpoints = getattr(t, "endpoints", [t.endpoint])
            r = run_op(endpoints, w, mode.clients, server_key=t.server_key)
            self._record(rep, t.label, mode, op, r, say)
        if self.redis is not None and mode.redis is not None:
            c, p = mode.redis
            requests = mode.requests * (8 if p > 1 else 2)  # Redis is faster: same duration
            r = redisbench.run(self.redis.port, op, c, p, requests, self.keyspace, VALUE_SIZE)
            self._record(rep, "redis", mode, op, r, say)

    def _record(self, rep: int, label: str, mode: Mode, op: str, r: Result, say) -> None:
        self.runs.append(Run(rep, label, mode.name, op, r))
        say(f"rep {rep + 1}/{self.reps} {mode.name:<10} {op.upper():<3} {label:<13} "
            f"{r.rps:>10,.0f}/s  p50 {r.p50_us:>7.0f} µs  p99 {r.p99_us:>7.0f} µs"
            + (f"  ERRORS {r.errors}" if r.errors else ""))


# -- the arithmetic ------------------------------------------------------------------------


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)} if values else {}


def figures(runs: list[Run]) -> dict:
    """{target: {mode: {op: {rps, p50_us, p99_us: spread}}}} over the repetitions."""
    out: dict = {}
    for r in runs:
        cell = out.setdefault(r.target, {}).setdefault(r.mode, {}).setdefault(r.op, {})
        for k in ("rps", "p50_us", "p90_us", "p99_us", "max_us"):
            cell.setdefault(k, []).append(getattr(r.result, k))
    for modes in out.values():
        for ops in modes.values():
            for op, cell in ops.items():
                ops[op] = {k: spread(v) for k, v in cell.items()}
    return out


def ratios(runs: list[Run], target: str, base: str, mode: str, op: str,
           base_mode: str | None = None, key: str = "rps") -> dict:
    """Median and spread over repetitions of target/base, each pair from one repetition."""
    def by_rep(label: str, m: str) -> dict[int, float]:
        return {r.rep: getattr(r.result, key) for r in runs
                if r.target == label and r.mode == m and r.op == op}

    a, b = by_rep(target, mode), by_rep(base, base_mode or mode)
    return spread([a[i] / b[i] for i in sorted(a) if i in b and b[i]])


def to_json(suite: Suite, extra: dict) -> dict:
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reps": suite.reps,
        "keyspace": suite.keyspace,
        "value_size": VALUE_SIZE,
        "modes": [asdict(m) for m in suite.modes],
        "notes": suite.notes,
        "figures": figures(suite.runs),
        "runs": [{"rep": r.rep, "target": r.target, "mode": r.mode, "op": r.op,
                  **asdict(r.result)} for r in suite.runs],
        **extra,
    }


def save(doc: dict, folder: Path, suffix: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.strftime('%Y-%m-%d', time.gmtime())}{suffix}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path
