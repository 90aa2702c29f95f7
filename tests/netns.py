"""Real network partitions: kvd nodes in network namespaces joined by a bridge, links cut.

Needs root and iproute2 (`ip netns`, veth, bridge); `namespaces` skips with the reason
otherwise. Every namespace, link and process made here is removed at the end, pass or fail.
The test process stays in its own namespace and talks to the nodes through `ip netns exec`
(a Python one-liner with the kv client), so it never touches the host's network.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import ROOT, env_for

PORT = 7700


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
        self.routes: list[tuple[int, int]] = []  # (in node i, a blackhole to node j)

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

    def split(self, side: list[int]) -> None:
        """Cut the nodes of `side` off from the others while they still reach one another
        (`cut` takes a node off the bridge, so it isolates each node it is given): every node
        drops what it would send across, by a blackhole route per node of the other side."""
        rest = [j for j in range(len(self.nodes)) if j not in side]
        for i in side:
            for j in rest:
                for a, b in ((i, j), (j, i)):
                    _ip("-n", self.nodes[a], "route", "add", "blackhole", f"{self.ip_of(b)}/32")
                    self.routes.append((a, b))

    def heal(self) -> None:
        """Undo `split`."""
        while self.routes:
            a, b = self.routes.pop()
            _ip("-n", self.nodes[a], "route", "del", "blackhole", f"{self.ip_of(b)}/32")

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


@contextlib.contextmanager
def namespaces(n: int) -> Iterator[tuple[Net, list[subprocess.Popen]]]:
    """`n` linked namespaces and the list the nodes started in them go into; all gone after."""
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    net = Net(n)
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


def _run_in(net: Net, i: int, home: Path, code: str, timeout: float = 30) -> object:
    """Run `code` (which prints one JSON document) inside node i's namespace."""
    done = subprocess.run(["ip", "netns", "exec", net.nodes[i], sys.executable, "-c", code],
                          capture_output=True, env=env_for(home), timeout=timeout, cwd=ROOT)
    return json.loads(done.stdout) if done.returncode == 0 else None


def ask(net: Net, i: int, home: Path, expr: str) -> object:
    """Evaluate `expr` with `c`, a kv client of node i, inside its namespace (None: it
    raised)."""
    code = ("import json,sys; from kvsh.client import Client\n"
            f"c = Client({net.ip_of(i)!r}, {PORT}, timeout=2)\n"
            f"print(json.dumps({expr}, default=lambda b: b.decode()))")
    return _run_in(net, i, home, code)


def command(net: Net, i: int, home: Path, *argv: str, timeout: float = 8) -> tuple[str, object]:
    """One command to node i: ("ok", value), ("error", the server's code), or
    ("unreachable", why) when no answer came within `timeout` seconds."""
    code = ("import json; from kvsh.client import Client\n"
            "from shared.errors import ServerError, Unreachable\n"
            f"c = Client({net.ip_of(i)!r}, {PORT}, timeout={timeout})\n"
            f"try: got = ['ok', c.call(*{list(argv)!r})]\n"
            "except ServerError as e: got = ['error', e.code]\n"
            "except Unreachable as e: got = ['unreachable', str(e)]\n"
            "print(json.dumps(got, default=lambda b: b.decode()))")
    got = _run_in(net, i, home, code, timeout + 20)
    assert isinstance(got, list), f"the client in {net.nodes[i]} failed"
    return got[0], got[1]
