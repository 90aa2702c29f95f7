"""The connection as the shell shows it: which node, how big the cluster, how fast, up or not.

A `Monitor` thread asks the node for INFO every few seconds with its own client (sockets stay
with one thread) and keeps a `LinkState` current, so the toolbar can say the node went away —
and that it is back — while the user sits at the prompt. `check()` is one step of that loop,
callable directly by tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import KvError


@dataclass
class LinkState:
    host: str
    port: int
    up: bool | None = None  # None: not known yet
    name: str = ""
    members: int = 0
    rtt_ms: float | None = None
    error: str = ""
    leader: str = ""  # the consensus group's leader, from INFO raft_leader ("" unknown)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def saw(self, rtt_s: float | None) -> None:
        """A command just got an answer."""
        self.up = True
        self.error = ""
        if rtt_s is not None:
            self.rtt_ms = rtt_s * 1000

    def lost(self, error: str) -> None:
        self.up = False
        self.error = error


class Monitor:
    def __init__(self, state: LinkState, connect: Callable[[], object], interval_s: float = 2.0,
                 on_change: Callable[[], None] | None = None) -> None:
        self.state = state
        self._connect = connect
        self._client = None
        self.interval_s = interval_s
        self.on_change = on_change
        self._wake = threading.Event()
        self._stop = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def check(self) -> None:
        """Ask INFO once and update the state."""
        with self._lock:
            before = (self.state.up, self.state.name, self.state.members)
            try:
                if self._client is None:
                    self._client = self._connect()
                started = time.monotonic()
                info = self._client.info()  # type: ignore[attr-defined]
            except KvError as exc:
                self._drop()
                self.state.lost(exc.message)
            else:
                self.state.saw(time.monotonic() - started)
                self.state.name = str(info.get("name", ""))
                self.state.members = int(info.get("members", 0) or 0)
                self.state.leader = str(info.get("raft_leader", "") or "")
        if self.on_change and before != (self.state.up, self.state.name, self.state.members):
            self.on_change()

    def retarget(self, state: LinkState, connect: Callable[[], object]) -> None:
        with self._lock:
            self._drop()
            self.state, self._connect = state, connect
        self.poke()

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()  # type: ignore[attr-defined]
            self._client = None

    def poke(self) -> None:
        """Check now rather than at the next interval."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kvsh-link", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self.check()
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self._drop()
