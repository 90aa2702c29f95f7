"""The servers the suite measures, each a child process in its own temp dir on a free port.

Every target is started by the suite and stopped by it (SIGTERM, then SIGKILL), by PID: the
suite never touches a process it did not start. Readiness is polled with a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from kvsh.client import Client
from shared.errors import KvError

ROOT = Path(__file__).resolve().parent.parent
READY_S = 30.0


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port whose successor (kvd's default gossip port) is free too.

    A port is free only until someone binds it, so this process never hands out a port (or
    its successor) twice: one node's HTTP port must not be the next one's gossip port.
    """
    for _ in range(200):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535 or {port, port + 1} & _handed_out:
                continue
            try:
                with socket.socket() as b:
                    b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            _handed_out.update((port, port + 1))
            return port
    raise RuntimeError("no pair of free ports on loopback")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _poll(ready, what: str, proc: subprocess.Popen, log: Path) -> None:
    end = time.monotonic() + READY_S
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > end:
            raise RuntimeError(f"{what} not ready within {READY_S:g}s")
        time.sleep(0.05)


class Target:
    """A server process; `endpoint` is what the load generator connects to."""

    label = "?"
    server_key: str | None = None  # its CURVE key, when it encrypts (kvd --cluster-secret-file)

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = home / f"{self.label}.log"

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
            env[var] = str(self.home / var.lower())
        return env

    def start(self) -> Target:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv(), env=self.env(), stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL, cwd=self.home)
        _poll(self.ready, self.label, self.proc, self.log)
        return self

    def ready(self) -> bool:
        try:
            with Client("127.0.0.1", self.port, timeout=0.5, server_key=self.server_key) as c:
                return c.ping() == "PONG"
        except KvError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Raw(Target):
    label = "raw"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.rawserver", str(self.port)]


class RawLoop(Raw):
    """The raw ceiling's dict in the shape of kvd's loop (see bench.rawserver)."""

    label = "raw-loop"

    def argv(self) -> list[str]:
        return [*super().argv(), "--loop"]


class Kvd(Target):
    def __init__(self, home: Path, fsync: str, name: str | None = None,
                 join: list[str] | None = None, secret: Path | None = None) -> None:
        """`secret`: a cluster secret file; the node then encrypts (CURVE) and clients use
        its server key."""
        self.label = name or f"kvd-{fsync}"
        self.fsync = fsync
        self.join = join or []
        self.secret = secret
        if secret is not None:
            from kvd.config import read_keyring

            self.server_key = read_keyring(secret).current.public.decode()
        super().__init__(home)
        self.data_dir = home / "data" / self.label
        self.resp_port = free_port()  # the Redis door, for redis-benchmark (bench.resp)
        self.http_port = free_port()

    def argv(self) -> list[str]:
        joins = [a for j in self.join for a in ("--join", j)]
        return [sys.executable, "-m", "kvd", "start", "--foreground", "--name", self.label,
                "--port", str(self.port), "--gossip-port", str(self.port + 1),
                "--data-dir", str(self.data_dir), "--fsync", self.fsync,
                "--log-level", "warning", "--resp-port", str(self.resp_port),
                "--http-port", str(self.http_port), *joins,
                *(["--cluster-secret-file", str(self.secret)] if self.secret else [])]

    def info(self) -> dict:
        with Client("127.0.0.1", self.port, timeout=10, server_key=self.server_key) as c:
            return c.info()


class Redis(Target):
    """redis-server with AOF fsync everysec, as the targets are stated against."""

    label = "redis"

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("redis-server") and shutil.which("redis-benchmark")
                    and shutil.which("redis-cli"))

    def argv(self) -> list[str]:
        return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--dir", str(self.home), "--protected-mode", "no"]

    def cli(self, *args: str, input: bytes | None = None) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], input=input,
                             capture_output=True, timeout=300, check=True)
        return out.stdout.decode()

    def ready(self) -> bool:
        try:
            return self.cli("PING").strip() == "PONG"
        except subprocess.CalledProcessError:
            return False

    def version(self) -> str:
        for line in self.cli("INFO", "server").splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return "?"
