"""Real processes for integration tests: kvd nodes on free loopback ports, and kvsh runs.

Every process started here is tracked and stopped (SIGTERM, then SIGKILL) by the fixtures,
also when the test fails. Nothing sleeps and hopes: readiness is polled with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.targets import free_port  # one copy, shared with the benchmark suite
from kvsh.client import Client
from shared.errors import ServerError, Unreachable

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 20.0


def env_for(home: Path) -> dict[str, str]:
    """An environment whose platformdirs paths all live under `home` (tests never touch ~)."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_STATE_HOME=str(home / "state"),
        XDG_CACHE_HOME=str(home / "cache"),
        PYTHONUNBUFFERED="1",
    )
    return env


def wait_for(predicate: Callable[[], object], deadline_s: float = DEADLINE_S,
             what: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy; fail with `what` at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(0.02)  # a polling interval, not a guess at how long something takes


class Kvd:
    """One kvd in the foreground, as a child process of the test."""

    def __init__(self, home: Path, name: str, extra: list[str] | None = None,
                 port: int | None = None, data_dir: Path | None = None,
                 server_key: str | None = None) -> None:
        """`server_key`: the node's CURVE key when it encrypts (its clients need it)."""
        self.home = home
        self.name = name
        self.port = port or free_port()
        self.gossip_port = self.port + 1
        self.resp_port = free_port()
        self.http_port = free_port()
        self.data_dir = data_dir or home / "nodes" / name
        self.extra = extra or []
        self.server_key = server_key
        self.proc: subprocess.Popen | None = None
        self.stderr_path = home / f"{name}.stderr"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "kvd", "start", "--foreground", "--name", self.name,
            "--port", str(self.port), "--gossip-port", str(self.gossip_port),
            "--resp-port", str(self.resp_port), "--http-port", str(self.http_port),
            "--data-dir", str(self.data_dir), *self.extra,
        ]

    def start(self, wait: bool = True) -> Kvd:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.argv(), env=env_for(self.home), stdout=err,
                                         stderr=err, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"kvd {self.name} exited {self.proc.returncode}:\n"
                                     f"{self.stderr()}")
            try:
                with self.client(timeout=0.5) as c:
                    return c.ping() == "PONG"
            except ServerError as exc:  # users exist: an answer all the same
                return exc.code == "NOAUTH"
            except Unreachable:
                return False

        wait_for(ready, what=f"kvd {self.name} to answer PING")

    def client(self, timeout: float = 5.0, user: str | None = None,
               password: str | None = None) -> Client:
        return Client("127.0.0.1", self.port, timeout=timeout, server_key=self.server_key,
                      user=user, password=password)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = DEADLINE_S) -> int:
        """SIGTERM and wait; SIGKILL if it does not go. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"kvd {self.name} ignored SIGTERM:\n{self.stderr()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_kvsh(home: Path, port: int, *args: str, input: bytes | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kvsh", "--port", str(port), *args],
        input=input, capture_output=True, env=env_for(home), timeout=timeout,
    )


def info(node: Kvd) -> dict:
    with node.client() as c:
        return c.info()


def statuses(node: Kvd) -> dict[str, str]:
    """Each member's status as `node` sees it."""
    with node.client() as c:
        return {m["name"]: m["status"] for m in c.members()}


@contextlib.contextmanager
def running(home: Path, name: str, extra: list[str] | None = None) -> Iterator[Kvd]:
    """A started node for a whole module's tests; stopped (or killed) at the end, pass or fail."""
    kvd = Kvd(home, name, extra)
    try:
        yield kvd.start()
    finally:
        try:
            kvd.stop()
        finally:
            kvd.kill()


def send_and_close(port: int, data: bytes, timeout: float = 5.0) -> None:
    """Send `data` to a port, close our side, read whatever comes back until the node closes:
    what a hostile or broken client does. Connection errors are the node's right."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        sock.close()
