"""A real network partition on the gossip keyspace: both sides write, and after healing every
node holds the same data. The namespaces and their helpers are tests/netns.py's (skipped with
the reason where they cannot be made)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.netns import PORT, Net, ask, namespaces, start
from tests.procs import wait_for

DEADLINE_S = 40


@pytest.fixture
def net() -> Iterator[tuple[Net, list[subprocess.Popen]]]:
    with namespaces(3) as made:
        yield made


def test_both_sides_of_a_partition_write_and_converge_after_healing(net, tmp_path) -> None:
    net_, procs = net
    start(net_, 0, tmp_path, procs, None)
    for i in (1, 2):
        start(net_, i, tmp_path, procs, f"{net_.ip_of(0)}:{PORT}")

    def statuses(i: int) -> dict:
        got = ask(net_, i, tmp_path, "{m['name']: m['status'] for m in c.members()}")
        return got if isinstance(got, dict) else {}

    for i in range(3):
        wait_for(lambda i=i: list(statuses(i).values()) == ["alive"] * 3, DEADLINE_S,
                 f"n{i} to see the whole cluster")
    ask(net_, 0, tmp_path, "c.pipeline([['SET', f'pre{i}', 'v'] for i in range(100)])")
    wait_for(lambda: ask(net_, 2, tmp_path, "c.dbsize()") == 100, DEADLINE_S, "replication")

    net_.cut(2)
    wait_for(lambda: statuses(0).get("n2") in ("suspect", "dead"), DEADLINE_S,
             "n0 to notice the partition")
    ask(net_, 0, tmp_path, "[c.pipeline([['SET', f'a{i}', 'v'] for i in range(300)]),"
                           " c.set('shared', 'majority'), c.delete('pre1')]")
    ask(net_, 2, tmp_path, "[c.pipeline([['SET', f'b{i}', 'v'] for i in range(300)]),"
                           " c.delete('pre2'), c.set('shared', 'minority')]")
    assert ask(net_, 0, tmp_path, "c.get('b0')") is None  # really cut off
    net_.cut(2, up=True)

    def converged() -> bool:
        digests = [ask(net_, i, tmp_path, "c.info()['digest']") for i in range(3)]
        return None not in digests and len(set(digests)) == 1

    wait_for(converged, DEADLINE_S, "equal digests after healing")
    for i in range(3):
        assert ask(net_, i, tmp_path, "[c.dbsize(), c.get('shared'), c.exists('pre1', 'pre2')]") \
            == [100 - 2 + 600 + 1, "minority", 0]
