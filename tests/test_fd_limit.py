"""A kvd that runs out of file descriptors says so, and its clients hear it promptly.

kvd runs under prlimit with a low open-file limit; the clients that connect past it are left
in the listen backlog, never greeted. They must get an error naming the cause within the
client's greeting bound, not a timeout; kvd must log it (rate-limited) and count it in INFO.
"""

from __future__ import annotations

import shutil
import time

import pytest

from kvd.doors.native import ACCEPT_LOG_S
from kvsh.client import Client
from shared.client import GREETING_S
from shared.errors import Unreachable
from tests.procs import Kvd, wait_for

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None,
                                reason="needs util-linux prlimit")


class LimitedKvd(Kvd):
    def __init__(self, *args, nofile: str, **kw) -> None:
        super().__init__(*args, **kw)
        self.nofile = nofile

    def argv(self) -> list[str]:
        return ["prlimit", f"--nofile={self.nofile}", *super().argv()]


def connect_many(port: int, n: int, timeout: float, stop_after: int = 0
                 ) -> tuple[list[Client], list[str]]:
    """Up to `n` clients that each PING once and stay connected, and the errors of those that
    failed (`stop_after` failures end it early)."""
    served: list[Client] = []
    failed: list[str] = []
    while len(served) + len(failed) < n and not (stop_after and len(failed) >= stop_after):
        client = Client("127.0.0.1", port, timeout=timeout)
        try:
            client.ping()
            served.append(client)
        except Unreachable as exc:
            failed.append(str(exc))
            client.close()
    return served, failed


def test_clients_past_the_descriptor_limit_get_a_prompt_error(tmp_path) -> None:
    limit = 64  # soft and hard: kvd cannot raise it
    node = LimitedKvd(tmp_path, "n1", nofile=f"{limit}:{limit}").start()
    first = node.client(timeout=5)
    served: list[Client] = []
    try:
        assert first.info()["open_files_limit"] == limit
        # More clients than descriptors; a client timeout well past the greeting bound, so
        # that an error that is a timeout would show in the message.
        started = time.monotonic()
        served, failed = connect_many(node.port, limit, timeout=4 * GREETING_S, stop_after=3)
        assert served and len(failed) == 3, (len(served), failed)
        assert all("did not greet within" in msg and "accept_failures" in msg
                   for msg in failed), failed
        # The clients already served still are, and hear about it.
        wait_for(lambda: first.info()["accept_failures"] > 0, what="INFO accept_failures")
        wait_for(lambda: "cannot accept connections" in node.stderr(), what="the log line")
        lines = node.stderr().count("cannot accept connections")
        assert lines <= 1 + (time.monotonic() - started) / ACCEPT_LOG_S  # rate-limited
    finally:
        for client in [first, *served]:
            client.close()
        node.stop()


def test_kvd_raises_its_soft_descriptor_limit_to_the_hard_one(tmp_path) -> None:
    node = LimitedKvd(tmp_path, "n1", nofile="64:4096").start()
    served: list[Client] = []
    try:
        with node.client() as c:
            assert c.info()["open_files_limit"] == 4096
        served, failed = connect_many(node.port, 100, timeout=5)
        assert not failed and len(served) == 100
        assert "open-file limit raised from 64 to 4096" in node.stderr()
    finally:
        for client in served:
            client.close()
        node.stop()
