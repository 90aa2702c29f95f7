"""The operator's side of recovery, through the real `kvd` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kvd.log.record import MAGIC
from kvd.log.wal import LOG_NAME
from tests.procs import Kvd, env_for


def kvd_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvd", *args], capture_output=True, text=True,
                          env=env_for(home), timeout=60)


def filled(kvd_factory, n: int = 20) -> tuple[Kvd, Path]:
    node = kvd_factory("n1", ["--fsync", "always"])
    with node.client() as client:
        for i in range(n):  # a round trip each: one turn, so one log record, per write
            client.set(f"k{i}", f"v{i}")
    assert node.stop() == 0
    return node, node.data_dir / LOG_NAME


def test_a_corrupt_log_refuses_to_start_until_repaired(kvd_factory, tmp_path: Path) -> None:
    node, path = filled(kvd_factory)
    data = bytearray(path.read_bytes())
    offset = len(MAGIC) + 3 * (len(data) - len(MAGIC)) // 20  # inside a record in the middle
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))

    node.start(wait=False)
    assert node.proc.wait(30) != 0  # type: ignore[union-attr]
    lines = [ln for ln in node.stderr().splitlines() if ln.startswith("kvd:")]
    assert len(lines) == 1 and str(path) in lines[0] and "offset" in lines[0]

    check = kvd_cli(tmp_path, "check-log", "--data-dir", str(node.data_dir))
    assert check.returncode == 1 and "good record(s)" in check.stdout

    repaired = kvd_factory("n1", ["--repair"])
    assert "repair drops it and the" in repaired.stderr()
    with repaired.client() as client:
        keys = client.dbsize()
    assert 0 < keys < 20
    assert kvd_cli(tmp_path, "check-log", "--data-dir", str(node.data_dir)).returncode == 0


def test_a_torn_tail_is_dropped_with_a_warning(kvd_factory) -> None:
    node, path = filled(kvd_factory)
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x01\x00\x00\x00\x00\x30half a record")
    again = kvd_factory("n1")
    assert "cut short by a crash" in again.stderr()
    with again.client() as client:
        assert client.dbsize() == 20
        assert client.info()["replayed_records"] == 20
