"""Progress for long operations: a big paste and KEYS over a large keyspace."""

from __future__ import annotations

import io

from rich.console import Console

from kvsh.progress import KEYS_PROGRESS_FROM, keys_by_scan, run_with_progress
from shared.commands import COMMANDS


def console() -> Console:
    return Console(file=io.StringIO(), width=80, force_terminal=True)


def test_a_long_paste_runs_every_line_in_order_under_a_bar():
    ran: list[str] = []
    out = console()
    run_with_progress([f"SET k{i} v" for i in range(500)], ran.append, out)
    assert ran == [f"SET k{i} v" for i in range(500)]
    assert "running pasted lines" in out.file.getvalue()


class BigKeyspace:
    def __init__(self, size: int):
        self.size = size
        self.scans: list[tuple[int, bytes]] = []

    def dbsize(self) -> int:
        return self.size

    def scan(self, cursor, match, count):
        self.scans.append((cursor, match))
        nxt = cursor + 1
        return (0 if nxt == 3 else nxt), [f"user:{cursor}".encode()]


def test_keys_over_a_large_keyspace_runs_as_a_scan_with_progress():
    client = BigKeyspace(KEYS_PROGRESS_FROM)
    outcome = keys_by_scan(client, COMMANDS["KEYS"], [b"KEYS", b"user:*"], console())
    assert outcome.reply.value == [b"user:0", b"user:1", b"user:2"]
    assert [m for _, m in client.scans] == [b"user:*"] * 3


def test_keys_over_a_small_keyspace_takes_the_ordinary_path():
    client = BigKeyspace(10)
    assert keys_by_scan(client, COMMANDS["KEYS"], [b"KEYS"], console()) is None
    assert client.scans == []
