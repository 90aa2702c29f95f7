"""A coordination workload for real-process fault tests: client threads, each on its own
node, increment counters by CGET + CAS and take turns on locks, recording every call and
reply as tests/linearizability.py `Op`s (times from one monotonic clock: all the threads are
in this process).

What a reply tells a client, and so how it is recorded:
- a value, or an error that is the state machine's answer (COMPARE_FAILED, LOCKED,
  NOT_HOLDER): the op took effect, at one instant between call and return;
- NO_QUORUM: refused before anything was proposed (kvd.consensus.submit): it never took
  effect, and is left out of the history — so a NO_QUORUM that did apply shows up as a
  history that is not linearizable;
- TRYAGAIN, or no answer in time (the node died, the leader changed): it may or may not take
  effect, now or later — recorded as an op that never returned.
A worker whose node does not answer moves on to the next one.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from kvsh.client import Client
from shared.errors import ServerError, Unreachable
from tests.linearizability import Op
from tests.procs import Kvd

CLIENT_TIMEOUT_S = 3.0
LEASE_TTL_MS = 120_000  # outlives the test: locks are released by UNLOCK only, never by expiry
HOLD_S = 0.005  # how long a holder keeps a lock: a little time for others to run into it
NOT_APPLIED = {"NO_QUORUM"}
UNKNOWN = {"TRYAGAIN"}


@dataclass
class Acquisition:
    """A LOCK acknowledged with a token, and when its holder first asked to UNLOCK it."""

    name: str
    lease: int
    token: int
    called: float  # the first LOCK of the tries that got it
    returned: float
    unlock_called: float | None = None


@dataclass
class Record:
    """Everything the workers saw; appended under `lock` (several threads)."""

    counters: list[Op] = field(default_factory=list)
    locks: list[Op] = field(default_factory=list)
    writes: list[tuple[str, int, int]] = field(default_factory=list)  # acked (key, value, rev)
    reads: list[tuple[str, int, int]] = field(default_factory=list)  # (key, value, revision)
    acquisitions: list[Acquisition] = field(default_factory=list)
    surprises: list[str] = field(default_factory=list)  # replies no correct node gives
    unanswered: list[tuple[float, str, str]] = field(default_factory=list)  # (when, who, why)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acked_after(self, t: float) -> int:
        """Acknowledged CAS increments called after `t`."""
        with self.lock:
            return sum(1 for op in self.counters
                       if op.name == "cas" and op.result and op.call > t)


class Worker(threading.Thread):
    """One client: sends to nodes[start], and to the next live one when that stops answering."""

    def __init__(self, name: str, nodes: list[Kvd], start: int, record: Record,
                 stop: threading.Event, seed: int) -> None:
        super().__init__(name=name, daemon=True)
        self.nodes, self.at, self.record, self.halt = nodes, start, record, stop
        self.rng = random.Random(seed)
        self.client: Client | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost
            self.error = exc
        finally:
            if self.client is not None:
                self.client.close()

    def work(self) -> None:
        raise NotImplementedError

    def send(self, *argv: object) -> tuple[str, object, float, float]:
        """("ok", value | "error", code | "unknown", why), with call and return times."""
        node = self.nodes[self.at % len(self.nodes)]
        if self.client is None:
            self.client = node.client(timeout=CLIENT_TIMEOUT_S)
        called = time.monotonic()
        try:
            got: tuple[str, object] = ("ok", self.client.call(*argv))
        except ServerError as exc:
            got = ("unknown" if exc.code in UNKNOWN else "error", exc.code)
        except Unreachable as exc:
            got = ("unknown", str(exc))
            self.client.close()
            self.client = None
            self.at += 1  # the next node; a dead one answers Unreachable at once, and is passed
        if got[0] == "unknown":
            with self.record.lock:
                self.record.unanswered.append((called, f"{self.name}@{node.name}", str(got[1])))
        return got[0], got[1], called, time.monotonic()

    def surprise(self, what: str) -> None:
        with self.record.lock:
            self.record.surprises.append(f"{self.name}: {what}")


class Counting(Worker):
    """CGET a counter, then CAS REV (the revision read) to the value plus one.

    A CAS by revision is a CAS by value here: every write adds one to the value it replaces,
    so values never repeat and each names one revision. The register model checks it as
    cas(key, value read, value + 1)."""

    def __init__(self, *args: object, keys: list[str]) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.keys = keys

    def work(self) -> None:
        while not self.halt.is_set():
            key = self.rng.choice(self.keys)
            kind, got, called, returned = self.send("CGET", key)
            if kind != "ok":
                continue  # a read that was not answered constrains nothing
            assert isinstance(got, dict)
            value, revision = int(got["value"]), got["revision"]
            self.add(Op(self.name, called, returned, "read", (key,), value))
            with self.record.lock:
                self.record.reads.append((key, value, revision))
            self.increment(key, value, revision)

    def increment(self, key: str, value: int, revision: int) -> None:
        kind, got, called, returned = self.send("CAS", key, "REV", revision, value + 1)
        args = (key, value, value + 1)
        if kind == "ok":
            assert isinstance(got, dict)
            self.add(Op(self.name, called, returned, "cas", args, True))
            with self.record.lock:
                self.record.writes.append((key, value + 1, got["revision"]))
        elif kind == "error" and got == "COMPARE_FAILED":
            self.add(Op(self.name, called, returned, "cas", args, False))
        elif kind == "unknown":
            self.add(Op(self.name, called, None, "cas", args))
        elif got not in NOT_APPLIED:
            self.surprise(f"CAS {key} answered {got}")

    def add(self, op: Op) -> None:
        with self.record.lock:
            self.record.counters.append(op)


class Locking(Worker):
    """Take a lock with this worker's lease, hold it a moment, UNLOCK; retry what was not
    answered until it is, so a lock it may hold is never left behind."""

    def __init__(self, *args: object, names: list[str]) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.names = names
        self.lease = 0

    def work(self) -> None:
        self.lease = self.settled("LEASE", "GRANT", LEASE_TTL_MS)["lease"]  # type: ignore
        while not self.halt.is_set():
            name = self.rng.choice(self.names)
            acquired = self.acquire(name)
            if acquired is not None:
                time.sleep(HOLD_S)  # workload pacing: the test waits on counts, not on this
                self.release(acquired)

    def settled(self, *argv: object) -> object:
        """A command sent until it is answered (any answer but a pending one)."""
        while True:
            kind, got, _, _ = self.send(*argv)
            if kind == "ok":
                return got
            if kind == "error" and got not in NOT_APPLIED:
                raise AssertionError(f"{argv} answered {got}")

    def acquire(self, name: str) -> Acquisition | None:
        first = None  # the acquisition happened after the first try, maybe at an unanswered one
        while True:
            kind, got, called, returned = self.send("LOCK", name, "LEASE", self.lease)
            first = first or called
            args = (name, self.lease)
            if kind == "unknown":
                self.add(Op(self.name, called, None, "lock", args))
                continue  # it may hold the lock now: ask again (the holder gets its token)
            if kind == "ok":
                token = got["token"]  # type: ignore[index]
                self.add(Op(self.name, called, returned, "lock", args, token))
                acquisition = Acquisition(name, self.lease, token, first, returned)
                with self.record.lock:
                    self.record.acquisitions.append(acquisition)
                return acquisition
            if got == "LOCKED":
                self.add(Op(self.name, called, returned, "lock", args, None))
                return None
            if got not in NOT_APPLIED:
                self.surprise(f"LOCK {name} answered {got}")
                return None

    def release(self, held: Acquisition) -> None:
        args = (held.name, self.lease)
        held.unlock_called = time.monotonic()  # the lock is free from some time after this
        while True:
            kind, got, called, returned = self.send("UNLOCK", held.name, "LEASE", self.lease)
            if kind == "unknown":
                self.add(Op(self.name, called, None, "unlock", args))
                continue
            if kind == "ok" or got == "NOT_HOLDER":
                self.add(Op(self.name, called, returned, "unlock", args, kind == "ok"))
                return
            if got not in NOT_APPLIED:
                self.surprise(f"UNLOCK {held.name} answered {got}")
                return

    def add(self, op: Op) -> None:
        with self.record.lock:
            self.record.locks.append(op)
