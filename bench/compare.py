"""Before/after: kvd of a git ref against kvd of this tree, both as ratios to the raw ceiling.

    python -m bench.compare                 # main against the working tree, 4 repetitions
    python -m bench.compare --ref HEAD~3 --reps 5 --scale 0.5

The ref is exported (`git archive`) to a temp dir and run from there; the load generator and
the raw ceiling are this tree's, so only the daemon differs. Both nodes run `--fsync
everysec`; modes are the suite's sequential (paired), pipelined and batched.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import tarfile
import tempfile
from pathlib import Path

from bench import suite
from bench.targets import ROOT, Kvd, Raw


class RefKvd(Kvd):
    """kvd as it was at a git ref."""

    def __init__(self, home: Path, source: Path, name: str) -> None:
        super().__init__(home, "everysec", name=name)
        self.source = source

    def env(self) -> dict[str, str]:
        return dict(super().env(), PYTHONPATH=str(self.source))

    def argv(self) -> list[str]:
        argv = super().argv()
        cli = (self.source / "kvd" / "cli.py").read_text()
        for flag in ("--resp-port", "--http-port"):  # a kvd from before that door
            if flag not in cli:
                i = argv.index(flag)
                del argv[i : i + 2]
        return argv


def export(ref: str, into: Path) -> Path:
    tar = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    p.add_argument("--ref", default="main")
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--scale", type=float, default=0.5)
    args = p.parse_args()
    before, after = f"kvd@{args.ref}", "kvd@tree"
    with tempfile.TemporaryDirectory(prefix="kv-compare-") as tmp:
        home = Path(tmp)
        targets = [Raw(home / "raw"), RefKvd(home / "a", export(args.ref, home / "src"), before),
                   Kvd(home / "b", "everysec", name=after)]
        try:
            for t in targets:
                t.start()
            s = suite.Suite(targets, suite.default_modes(args.scale)[:3], args.reps, 10_000)
            s.fill()
            s.run(say=lambda line: None)
        finally:
            for t in targets:
                t.stop()
    print("| mode | op | kvd | × raw ceiling (req/s) | p50 × raw |")
    print("| --- | --- | --- | ---: | ---: |")
    for m in s.modes:
        for op in m.ops:
            for label in (before, after):
                r = suite.ratios(s.runs, label, "raw", m.name, op)
                lat = suite.ratios(s.runs, label, "raw", m.name, op, key="p50_us")
                print(f"| {m.name} | {op.upper()} | {label} | {_fmt(r)} | {_fmt(lat)} |")


def _fmt(s: dict) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})" if s else "—"


if __name__ == "__main__":
    main()
