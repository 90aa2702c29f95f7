"""The load generator behind `kvd bench`: one client process's socket layer (it imports zmq).

A worker owns one DEALER connected to every endpoint and keeps up to `pipeline` requests in
flight: whenever replies free slots, it refills them at once. With `batch`, the refill travels
as one BATCH message (the protocol-level coalescing of PROTOCOL.md), otherwise as one REQUEST
message per command. `pipeline=1` is the sequential mode: one request, one round trip.
ZeroMQ hands a DEALER's messages to its connections in turn, so with several endpoints (the
nodes of a cluster) every client spreads its messages round-robin over all of them, and a
reply comes back from whichever node took the message.

It speaks the kv wire protocol directly instead of going through shared.client because the
bench must cost the server as little client CPU as possible on a machine where both share two
cores: replies are only unpacked, not turned into Reply objects. The raw ceiling server in
bench/ speaks the same messages, so every target is driven by exactly this code.

Latency is measured per request, from the moment its message is handed to ZeroMQ to the moment
its reply is read, in nanoseconds.
"""

from __future__ import annotations

import random
import time
from array import array
from dataclasses import dataclass

import msgpack
import zmq

from shared.codec import MsgType, ReplyKind

REPLY_TIMEOUT_MS = 10_000
PREBUILT = 200_000  # keyspaces up to this size get their argv lists built in advance
PROGRESS_EVERY = 1024  # replies between two updates of the shared progress counter
_REQUEST, _BATCH = int(MsgType.REQUEST), int(MsgType.BATCH)
_REPLY, _BATCH_REPLY = int(MsgType.REPLY), int(MsgType.BATCH_REPLY)
_ERROR = int(ReplyKind.ERROR)
_NOBLOCK = int(zmq.NOBLOCK)  # an int: pyzmq's Flag enum costs on every call


@dataclass(frozen=True)
class Workload:
    """What one client sends: `requests` commands drawn from `ops` over `keyspace` keys."""

    ops: str  # "set", "get" or "mixed" (half and half)
    requests: int
    pipeline: int = 1
    batch: bool = True
    keyspace: int = 100_000
    value_size: int = 100
    seed: int = 0


@dataclass
class ClientResult:
    done: int
    errors: int
    started: float  # time.perf_counter(), comparable across processes on one machine
    finished: float
    latencies_ns: array  # one per reply, in arrival order


KEY_PREFIX = b"key:"
KEY_DIGITS = 12  # every key is KEY_PREFIX and this many digits: patchable in place


def key_of(n: int) -> bytes:
    """Key number n as 16 bytes (the size the targets are stated for)."""
    return b"key:%012d" % n


class Commands:
    """An endless stream of argv lists for a workload; deterministic per seed.

    For keyspaces up to PREBUILT every argv is built once and drawn at random, so the client
    spends its CPU on the wire, not on formatting keys (it shares two cores with the server).
    In "mixed", a key's number says its op (odd: SET, even: GET), so a key is only ever
    written or only ever read.
    """

    def __init__(self, w: Workload) -> None:
        self._rand = random.Random(w.seed)
        self._value = b"v" * w.value_size
        self._keyspace = w.keyspace
        self._ops = w.ops
        self._argvs = ([self._argv(n) for n in range(w.keyspace)]
                       if w.keyspace <= PREBUILT else None)
        self._digits: dict[bytes, list[bytes]] = {}  # by op: the key digits of its keys

    def _argv(self, n: int) -> list[bytes]:
        op = self._ops
        if op == "mixed":
            op = "set" if n & 1 else "get"
        if op == "set":
            return [b"SET", key_of(n), self._value]
        return [b"GET", key_of(n)]

    def take(self, k: int) -> list[list[bytes]]:
        if self._argvs is not None:
            return self._rand.choices(self._argvs, k=k)
        return [self._argv(self._rand.randrange(self._keyspace)) for _ in range(k)]

    def digits(self, op: bytes, k: int) -> list[bytes]:
        """The KEY_DIGITS digits of `k` keys drawn at random from the keys that `op` (b"SET",
        b"GET") takes in this workload."""
        if self._ops != "mixed":
            first, step = 0, 1
        else:
            first, step = (1 if op == b"SET" else 0), 2
        count = len(range(first, self._keyspace, step))
        if self._argvs is None:
            rand = self._rand.randrange
            return [b"%012d" % (first + step * rand(count)) for _ in range(k)]
        pool = self._digits.get(op)
        if pool is None:
            pool = self._digits[op] = [b"%012d" % n for n in range(first, self._keyspace, step)]
        return self._rand.choices(pool, k=k)


class Prepared:
    """A BATCH packed once whose keys are rewritten before every send, as redis-benchmark
    rewrites its random-key placeholders: the client pays for a draw and a join instead of
    packing the batch anew (a third of its CPU when it shares the machine with the server),
    and yet every request draws its key from the whole keyspace.

    Keys have a fixed width, so the frame is kept as its constant pieces with each key's digits
    between them: `parts[1::2]` are the digits. The items are grouped by op (all SETs, then
    all GETs), so each op's digits are one slice, replaced in one assignment.
    """

    def __init__(self, commands: Commands, first_id: int, n: int) -> None:
        self.commands = commands
        argvs = sorted(commands.take(n), key=lambda argv: argv[0])  # grouped by op
        pack = msgpack.Packer(use_bin_type=True).pack
        # A msgpack array is its header and its items one after the other, so the frame is
        # [1, BATCH, items]'s header followed by each item packed on its own.
        head = bytearray(pack([1, _BATCH, []])[:-1]) + _array_header(n)
        parts: list[bytes] = []
        self.runs: list[tuple[bytes, slice, int]] = []  # op, its digits in parts, how many
        for i, argv in enumerate(argvs):
            packed = pack([first_id + 1 + i, argv])
            at = packed.index(argv[1]) + len(KEY_PREFIX)  # the id and op name cannot hold it
            parts += [bytes(head + packed[:at]), packed[at:at + KEY_DIGITS]]
            head = bytearray(packed[at + KEY_DIGITS:])
            if not self.runs or self.runs[-1][0] != argv[0]:
                self.runs.append((argv[0], slice(2 * i + 1, None, 2), 0))
            op, run, count = self.runs[-1]
            self.runs[-1] = (op, slice(run.start, 2 * i + 2, 2), count + 1)
        parts.append(bytes(head))
        self.parts = parts

    def next_frame(self) -> bytes:
        """The frame with fresh random keys."""
        parts, digits = self.parts, self.commands.digits
        for op, run, count in self.runs:
            parts[run] = digits(op, count)
        return b"".join(parts)


def _array_header(n: int) -> bytes:
    packed = msgpack.packb([None] * n)
    return packed[:len(packed) - n]  # each None is one byte (0xc0)


def connect(*endpoints: str, server_key: str | None = None) -> tuple[zmq.Context, zmq.Socket]:
    """A DEALER connected to every endpoint, each of which has answered a PING (so timing
    starts on live links). A connection's queue exists from connect() on, so the PINGs, one
    per connection in turn, reach every endpoint once. With `server_key` (the nodes' CURVE
    public key; a cluster shares one) every connection is encrypted, as a client's would be."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    if server_key:
        public, secret = zmq.curve_keypair()
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    for endpoint in endpoints:
        sock.connect(endpoint)
    for _ in endpoints:
        sock.send(msgpack.packb([1, _REQUEST, 0, [b"PING"]]))
    for _ in endpoints:
        if not sock.poll(REPLY_TIMEOUT_MS):
            sock.close()
            ctx.term()
            raise TimeoutError(f"no answer from {', '.join(endpoints)} within "
                               f"{REPLY_TIMEOUT_MS / 1000:g}s")
        sock.recv()
    return ctx, sock


def run(sock: zmq.Socket, w: Workload, progress=None) -> ClientResult:
    """Drive one workload to completion on a connected socket.

    `progress`, when given, is a shared counter (multiprocessing.Value) bumped now and then.
    """
    commands = Commands(w)
    pack = msgpack.Packer(use_bin_type=True).pack
    unpack = msgpack.unpackb
    clock = time.perf_counter_ns
    # In flight, by the id of a message's first request: (sent at, requests in it). A BATCH
    # is answered by one BATCH_REPLY in request order, so its first id finds it.
    inflight: dict[int, tuple[int, int]] = {}
    lat = array("q")
    sent = done = errors = reported = 0
    window, total, batch = max(1, w.pipeline), w.requests, w.batch
    # A full batch is packed once and its keys rewritten before each send (Prepared): the
    # client shares the machine with the server, and packing every batch anew cost it about
    # a third of its CPU. Only one full batch is ever in flight (it fills the window), so it
    # keeps its request ids, and its replies still find it.
    prepared = Prepared(commands, 0, window) if batch and window > 1 and total >= window else None
    rid = window  # ids past the prepared batch's for the batches built on the go
    poller = zmq.Poller()  # one for the run: Socket.poll would build a new one per call
    poller.register(sock, zmq.POLLIN)
    started = time.perf_counter()
    while done < total:
        free = min(window - (sent - done), total - sent)
        if free > 0:
            if prepared is not None and free == window:
                frame = prepared.next_frame()
                inflight[1] = (clock(), free)
                sock.send(frame)
            elif batch and free > 1:
                items = [[rid + i, argv] for i, argv in enumerate(commands.take(free), 1)]
                inflight[rid + 1] = (clock(), free)
                sock.send(pack([1, _BATCH, items]))
                rid += free
            else:
                for argv in commands.take(free):
                    rid += 1
                    inflight[rid] = (clock(), 1)
                    sock.send(pack([1, _REQUEST, rid, argv]))
            sent += free
        if not poller.poll(REPLY_TIMEOUT_MS):
            raise TimeoutError(f"no reply within {REPLY_TIMEOUT_MS / 1000:g}s "
                               f"({sent - done} requests in flight)")
        while True:  # drain; zmq.Again is cheaper than asking EVENTS (a poll(2)) each time
            try:
                frame = sock.recv(_NOBLOCK)
            except zmq.Again:
                break
            now = clock()
            msg = unpack(frame)
            if msg[1] == _REPLY:
                lat.append(now - inflight.pop(msg[2])[0])
                errors += msg[3] == _ERROR
                done += 1
            elif msg[1] == _BATCH_REPLY:
                items = msg[2]
                t0, n = inflight.pop(items[0][0])
                lat.extend(array("q", [now - t0]) * n)
                errors += [item[1] for item in items].count(_ERROR)
                done += n
        if progress is not None and done - reported >= PROGRESS_EVERY:
            with progress.get_lock():
                progress.value += done - reported
            reported = done
    finished = time.perf_counter()
    if progress is not None and done > reported:
        with progress.get_lock():
            progress.value += done - reported
    return ClientResult(done, errors, started, finished, lat)


def run_paired(socks: list[zmq.Socket], w: Workload) -> list[ClientResult]:
    """Sequential requests taking turns over several servers: the same command to each in
    a row, one at a time. Every server then sees the same moments of a noisy machine, so the
    ratio of their latencies holds even when the absolute figures wander between runs."""
    commands = Commands(w)
    pack, unpack, clock = msgpack.Packer(use_bin_type=True).pack, msgpack.unpackb, \
        time.perf_counter_ns
    pollers = []
    for sock in socks:
        pollers.append(zmq.Poller())
        pollers[-1].register(sock, zmq.POLLIN)
    lats = [array("q") for _ in socks]
    errors = [0] * len(socks)
    for rid in range(1, w.requests + 1):
        frame = pack([1, _REQUEST, rid, commands.take(1)[0]])
        for i, sock in enumerate(socks):
            t0 = clock()
            sock.send(frame)
            if not pollers[i].poll(REPLY_TIMEOUT_MS):
                raise TimeoutError(f"no reply within {REPLY_TIMEOUT_MS / 1000:g}s")
            msg = unpack(sock.recv())
            lats[i].append(clock() - t0)
            errors[i] += msg[3] == _ERROR
    # Each server's busy time is what its own requests took: its throughput figure.
    return [ClientResult(w.requests, e, 0.0, sum(lat) / 1e9, lat)
            for lat, e in zip(lats, errors, strict=True)]


def worker(endpoints: list[str], w: Workload, start, progress, results,
           server_key: str | None = None) -> None:
    """Entry point of one client process: connect, wait for the start signal, run, report."""
    ctx, sock = connect(*endpoints, server_key=server_key)
    try:
        start.wait()
        result = run(sock, w, progress)
        results.put((result.done, result.errors, result.started, result.finished,
                     result.latencies_ns.tobytes()))
    except Exception as exc:  # the parent must hear about it instead of waiting forever
        results.put(exc)
    finally:
        sock.close()
        ctx.term()
