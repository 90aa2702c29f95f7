"""A real network partition: kvd nodes in network namespaces joined by a bridge, one link cut.

Needs root and iproute2 (`ip netns`, veth, bridge); skipped with the reason otherwise. Every
namespace, link and process made here is removed at the end, pass or fail. The test process
stays in its own namespace and talks to the nodes through `ip netns exec` (a Python one-liner
with the kv client), so it never touches the host's network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import ROOT, env_for, wait_for

PORT = 7700
DEADLINE_S = 40


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


class Net:
    """A bridge namespace and one namespace per node, each linked to the bridge by a veth."""

    def __init__(self, n: int) -> None:
        tag = uuid.uuid4().hex[:4]
        self.bridge_ns = f"kvb{tag}"
        self.nodes = [f"kv{i}{tag}" for i in range(n)]
        self.links = [f"kv{i}{tag}b" for i in range(n)]  # the bridge-side end of each veth
        self.made: list[str] = []

    def ip_of(self, i: int) -> str:
        return f"10.77.0.{i + 1}"

    def create(self) -> None:
        for ns in [self.bridge_ns, *self.nodes]:
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, ns in enumerate(self.nodes):
            inner = f"{self.links[i][:-1]}a"
            _ip("link", "add", inner, "netns", ns, "type", "veth", "peer", "name",
                self.links[i], "netns", self.bridge_ns)
            _ip("-n", ns, "addr", "add", f"{self.ip_of(i)}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", self.bridge_ns, "link", "set", self.links[i], "master", "br0")
            _ip("-n", self.bridge_ns, "link", "set", self.links[i], "up")

    def cut(self, i: int, up: bool = False) -> None:
        _ip("-n", self.bridge_ns, "link", "set", self.links[i], "up" if up else "down")

    def destroy(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` command"
    probe = f"kvprobe{uuid.uuid4().hex[:4]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"`ip netns add` is not allowed here: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture
def net(tmp_path: Path) -> Iterator[tuple[Net, list[subprocess.Popen]]]:
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    net = Net(3)
    procs: list[subprocess.Popen] = []
    try:
        net.create()
        yield net, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        net.destroy()


def start(net: Net, i: int, home: Path, procs: list, join: str | None) -> None:
    argv = ["ip", "netns", "exec", net.nodes[i], sys.executable, "-m", "kvd", "start",
            "--foreground", "--name", f"n{i}", "--bind", net.ip_of(i), "--port", str(PORT),
            "--data-dir", str(home / f"n{i}"),
            "--insecure"]  # beyond loopback with no user: in namespaces this test made
    if join:
        argv += ["--join", join]
    err = open(home / f"n{i}.stderr", "ab")  # noqa: SIM115 - the child holds it
    procs.append(subprocess.Popen(argv, env=env_for(home), stdout=err, stderr=err,
                                  stdin=subprocess.DEVNULL))


def ask(net: Net, i: int, home: Path, expr: str) -> object:
    """Evaluate `expr` with `c`, a kv client of node i, inside its namespace."""
    code = ("import json,sys; from kvsh.client import Client\n"
            f"c = Client({net.ip_of(i)!r}, {PORT}, timeout=2)\n"
            f"print(json.dumps({expr}, default=lambda b: b.decode()))")
    done = subprocess.run(["ip", "netns", "exec", net.nodes[i], sys.executable, "-c", code],
                          capture_output=True, env=env_for(home), timeout=30, cwd=ROOT)
    return json.loads(done.stdout) if done.returncode == 0 else None


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
