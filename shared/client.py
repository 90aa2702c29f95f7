"""The kv Python client: the socket layer of the client side (the only shared module with sockets).

    from kvsh.client import connect    # the public import path
    with connect("127.0.0.1", 7700, timeout=5) as kv:
        kv.set("greeting", "hello", ex=60)
        kv.get("greeting")          # b"hello"
        kv.pipeline([["SET", "a", "1"], ["GET", "a"]])  # one BATCH on the wire
        for event in kv.watch("user:"):  # change events until you break out
            ...

With `server_key` (the node's CURVE public key, as `kvd start` prints it) the connection is
encrypted: the client makes a fresh key pair for every connection and proves nothing but that
it knows the node's public key (users are authenticated on top of it).

Keys and values are bytes; `str` arguments are UTF-8 encoded. Every call is bounded by the
timeout. Errors: `ServerError` (an error reply; `.code` is the server's stable code),
`Unreachable` (refused or down) and its subclass `Timeout` (no answer in time).
A DEALER socket lets several requests be in flight; replies are matched by request id, and a
late reply to a request that timed out is recognised and dropped.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from shared import codec
from shared.codec import Reply, ReplyKind
from shared.commands import COMMANDS
from shared.errors import ServerError, Timeout, Unreachable
from shared.keyring import server_key as checked_key

Arg = str | bytes | int | float
# Every kvd takes a message this big (its limit is max_value_size + 1 MiB). A bigger message is
# only sent once the node's own limit (INFO max_message_size) is known to take it: ZeroMQ drops
# an oversize frame unread and cuts the connection, which would leave us waiting for a reply
# that never comes. Learning the limit costs one INFO per connection, and only for big requests.
FRAME_FLOOR = 1024 * 1024
BATCH_BYTES = FRAME_FLOOR - 16  # a pipeline's BATCH messages: at most this, plus their header
# Once TCP is connected, a kvd's ZeroMQ I/O thread greets at once, however busy its loop is; a
# node that stays silent has not accepted the connection (out of descriptors) or is stopped.
GREETING_S = 1.0
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def _b(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    return str(arg).encode("utf-8", "surrogateescape")


def _bound(argv: list[bytes]) -> int:
    """At least the bytes `argv` takes in a packed message, with its request id: msgpack adds
    up to 5 bytes a string or an array header and 9 an id, 1 more for a BATCH item."""
    return sum(map(len, argv)) + 5 * len(argv) + 15


def value_of(reply: Reply) -> Any:
    """A reply's Python value; an error reply raises ServerError."""
    if reply.kind is ReplyKind.ERROR:
        code, message = reply.value  # type: ignore[misc]
        raise ServerError(str(code), str(message))
    return reply.value


class Client:
    def __init__(self, host: str = "127.0.0.1", port: int = 7700, timeout: float = 5.0,
                 server_key: str | bytes | None = None, user: str | None = None,
                 password: str | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.server_key = checked_key(server_key) if server_key else None
        self.handshaken = False  # a handshake with the node has succeeded (with its key)
        # A MULTI is open on this connection (kept by kvsh from the replies it sees; a new
        # connection has none: the node keeps the queue by connection).
        self.in_transaction = False
        # Logged in on every (re)connection, before anything else is sent: a session is the
        # connection's, so a new socket must log in again.
        self.user = user
        self._password = password
        self.endpoint = f"tcp://{host}:{port}"
        self._ctx = zmq.Context.instance()
        self._ids = itertools.count(1)
        self._sock: zmq.Socket | None = None
        self._limit: int | None = None  # the node's max_message_size, once a request needed it
        self.last_rtt: float | None = None

    def clone(self, host: str | None = None, port: int | None = None,
              timeout: float | None = None, server_key: str | bytes | None = None) -> Client:
        """A new client with the same credentials (and server key, unless another is given),
        to this node or another."""
        return Client(host or self.host, port or self.port,
                      self.timeout if timeout is None else timeout,
                      server_key or self.server_key, self.user,
                      self._password)

    # -- connection ------------------------------------------------------------------------

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            if self.server_key is not None:
                public, secret = zmq.curve_keypair()  # ephemeral: one per connection
                sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_key)
                sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
                sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
            monitor = sock.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED
                | HANDSHAKE_FAILED
            )
            try:
                sock.connect(self.endpoint)
                self._await_handshake(monitor)
            except BaseException:
                monitor.close(linger=0)
                sock.close(linger=0)
                raise
            sock.disable_monitor()
            monitor.close(linger=0)
            self._sock = sock
            self.handshaken = True
            if self.user is not None:
                self._login(sock)
        return self._sock

    def _login(self, sock: zmq.Socket) -> None:
        rid = next(self._ids)
        sock.send(codec.encode_request(rid, [b"AUTH", self.user.encode(),  # type: ignore
                                             (self._password or "").encode()]))
        try:
            value_of(self._await({rid})[rid])
        except BaseException:
            self.reset()
            raise

    def _await_handshake(self, monitor: zmq.Socket) -> None:
        """Fail fast on a refused connection, as redis-cli does, instead of timing out; and on
        a connection the node took but never greets (GREETING_S)."""
        deadline, connected = time.monotonic() + self.timeout, False
        while (left := deadline - time.monotonic()) > 0:
            if not monitor.poll(left * 1000):
                break
            parsed = parse_monitor_message(monitor.recv_multipart())
            event = parsed["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return
            if event & HANDSHAKE_FAILED:
                self._handshake_failed(event, parsed["value"])
                continue
            if event == zmq.EVENT_CONNECT_RETRIED:
                raise Unreachable(
                    f"cannot connect to {self.host}:{self.port} (refused) — is kvd running? "
                    "Start one with: kvd start"
                )
            if event == zmq.EVENT_CONNECTED and deadline - time.monotonic() > GREETING_S:
                deadline, connected = time.monotonic() + GREETING_S, True
        if connected:
            raise Timeout(
                f"{self.host}:{self.port} took the connection but did not greet within "
                f"{GREETING_S:g}s — kvd cannot accept more connections (out of file "
                "descriptors? see its log and INFO accept_failures) or is stopped"
            )
        raise Timeout(f"no answer from {self.host}:{self.port} within {self.timeout:g}s"
                      + self._key_hint())

    def _handshake_failed(self, event: int, value: int) -> None:
        """Say why the ZeroMQ handshake failed, as far as it can be told."""
        where = f"{self.host}:{self.port}"
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            raise Unreachable(
                f"{where} does not encrypt (no CURVE): connect without a server key"
                if self.server_key is not None else
                f"{where} encrypts its connections (CURVE): give its server key "
                "(--server-key KEY or KV_SERVER_KEY; `kvd start` prints it, `kvd secret key "
                "FILE` too)")
        if self.server_key is not None:
            raise Unreachable(f"the handshake with {where} failed" + self._key_hint())
        # A node that encrypts often closes before our side has read which mechanism it
        # speaks: the same failure without the detail (ZeroMQ then retries, as if refused).
        raise Unreachable(f"the handshake with {where} failed — if the node encrypts (CURVE), "
                          "give its server key (--server-key KEY or KV_SERVER_KEY)")

    def _key_hint(self) -> str:
        if self.server_key is None:
            return ""
        return (f" — a wrong server key looks exactly like this: is {self.server_key.decode()} "
                "the node's? (`kvd secret key FILE` prints it from the cluster secret)")

    def reset(self) -> None:
        """Drop the socket (and anything queued on it); the next call reconnects."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self.in_transaction = False
        self._limit = None  # the next connection may reach a node configured otherwise

    def close(self) -> None:
        self.reset()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------

    def execute(self, *argv: Arg) -> Reply:
        """Send one command; return the typed reply (error replies included, not raised)."""
        rid = next(self._ids)
        sock = self._socket()
        frame = codec.encode_request(rid, [_b(a) for a in argv])
        if len(frame) > FRAME_FLOOR and (refused := self._refuse(rid, len(frame))):
            return refused
        started = time.monotonic()
        sock.send(frame)
        reply = self._await({rid})[rid]
        self.last_rtt = time.monotonic() - started
        return reply

    def call(self, *argv: Arg) -> Any:
        """Send one command; return its value or raise ServerError."""
        return value_of(self.execute(*argv))

    def pipeline(self, commands: Iterable[Iterable[Arg]], batch: bool = True) -> list[Reply]:
        """Send many commands at once; replies come back in order.

        With `batch` (the default) the commands travel as BATCH messages of about
        BATCH_BYTES each, answered by one BATCH_REPLY each: one message per batch
        instead of one per command.
        """
        argvs = [[_b(a) for a in command] for command in commands]
        sock = self._socket()
        if any(_bound(argv) > BATCH_BYTES for argv in argvs):
            self._learn_limit()  # before anything is in flight: _await drops stray replies
        ids: list[int] = []
        refused: dict[int, Reply] = {}
        group: list[tuple[int, list[bytes]]] = []
        size = 0
        for argv in argvs:
            rid = next(self._ids)
            ids.append(rid)
            bound = _bound(argv)
            if bound > BATCH_BYTES:  # a big one travels alone, if the node takes it
                frame = (codec.encode_batch([(rid, argv)]) if batch
                         else codec.encode_request(rid, argv))
                if reply := self._refuse(rid, len(frame)):
                    refused[rid] = reply
                else:
                    sock.send(frame)
                continue
            if not batch:
                sock.send(codec.encode_request(rid, argv))
                continue
            if group and (size + bound > BATCH_BYTES or len(group) >= codec.MAX_BATCH):
                sock.send(codec.encode_batch(group))
                group, size = [], 0
            group.append((rid, argv))
            size += bound
        if group:
            sock.send(codec.encode_batch(group))
        replies = self._await(set(ids) - refused.keys()) | refused
        return [replies[rid] for rid in ids]

    def _learn_limit(self) -> int:
        """The node's largest message (INFO max_message_size); 0 when it does not say."""
        if self._limit is None:
            self._limit = int(self.info().get("max_message_size", 0))
        return self._limit

    def _refuse(self, rid: int, size: int) -> Reply | None:
        """The TOO_LARGE reply for a message of `size` bytes the node would drop unread, or
        None when it takes it (or does not say what it takes: then it is sent as before)."""
        limit = self._learn_limit()
        if not limit or size <= limit:
            return None
        return Reply(rid, ReplyKind.ERROR, [
            "TOO_LARGE", f"request of {size} bytes is over the limit of {limit} bytes per "
            f"message of {self.host}:{self.port} (max_value_size + 1 MiB); not sent — send "
            "less per request, or raise max_value_size"])

    def _await(self, wanted: set[int]) -> dict[int, Reply]:
        sock = self._sock
        assert sock is not None
        got: dict[int, Reply] = {}
        deadline = time.monotonic() + self.timeout
        while len(got) < len(wanted):
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(left * 1000):
                self.reset()  # whatever is still queued would only confuse the next call
                raise Timeout(
                    f"no reply from {self.host}:{self.port} within {self.timeout:g}s — "
                    "is kvd running? (kvd status)" + self._key_hint()
                )
            msg = codec.decode(sock.recv())
            for reply in msg if isinstance(msg, list) else [msg]:
                if isinstance(reply, Reply) and reply.request_id in wanted:
                    got[reply.request_id] = reply
                elif isinstance(reply, Reply) and reply.request_id == 0 and reply.is_error:
                    value_of(reply)  # the server could not even read our request: raise it
                # anything else is a late reply to a request that already timed out
        return got

    # -- WATCH -----------------------------------------------------------------------------

    def watch(self, prefix: Arg, since: int | None = None, poll_s: float = 0.5,
              resume: bool = True, silence_s: float = 3.5) -> Iterator[dict]:
        """Yield change events under `prefix` (dicts: key, value, deleted, origin, cursor).

        The first item is the server's acknowledgement (`watching`, `cursor`, `history`).
        The server sends a heartbeat every second (swallowed here). With `resume`, when
        nothing arrives for `silence_s` (the daemon went away or restarted), the stream
        yields one `{"lost": message}` notice, reconnects and resubscribes FROM the last
        cursor it saw, and yields the new acknowledgement: `history` says whether the missed
        events were replayed or the prefix's current state comes first ("reset").
        When the server ends the stream with `LAGGED` (we read too slowly to keep up), it
        resubscribes FROM the cursor the server named and yields the new acknowledgement with
        `lagged`: that cursor; without `resume`, it raises ServerError (code LAGGED).
        Closing the iterator (or breaking out of the loop) cancels the stream on the server.
        """
        cursor, rid, lost, lagged = since, None, False, None
        try:
            while True:
                try:
                    rid, ack = self._subscribe(prefix, cursor)
                except Unreachable as exc:
                    if not resume or cursor is None:
                        raise
                    if not lost:
                        lost = True
                        yield {"lost": exc.message}
                    time.sleep(poll_s)  # a retry interval while the daemon is away
                    continue
                lost = False
                if cursor is None:
                    cursor = ack["cursor"]
                if lagged is not None:
                    ack, lagged = {**ack, "lagged": lagged}, None
                yield ack
                for event in self._events(rid, poll_s, silence_s if resume else None):
                    if "error" in event:  # the server ended the stream
                        rid = None
                        if event["error"] != "LAGGED" or not resume:
                            raise ServerError(str(event["error"]), str(event.get("message")))
                        lagged = cursor = event["cursor"]
                        break
                    cursor = event["cursor"]
                    yield event
                if lagged is not None:
                    continue  # resubscribe on the same connection: it is fine, we were slow
                lost = True
                self.reset()
                yield {"lost": f"no word from {self.host}:{self.port} for {silence_s:g}s — "
                               "resuming when it is back"}
        finally:
            if self._sock is not None and rid is not None:
                self._sock.send(codec.encode_cancel(rid), zmq.NOBLOCK)

    def _subscribe(self, prefix: Arg, since: int | None) -> tuple[int, dict]:
        argv = ["WATCH", prefix] + ([] if since is None else ["FROM", since])
        rid = next(self._ids)
        sock = self._socket()
        sock.send(codec.encode_request(rid, [_b(a) for a in argv]))
        return rid, value_of(self._await({rid})[rid])

    def _events(self, rid: int, poll_s: float, silence_s: float | None) -> Iterator[dict]:
        """Events of one subscription until it falls silent (never, without `silence_s`)."""
        sock = self._sock
        assert sock is not None
        heard = time.monotonic()
        while True:
            if not sock.poll(poll_s * 1000):
                if silence_s is not None and time.monotonic() - heard > silence_s:
                    return
                continue
            msg = codec.decode(sock.recv())
            if isinstance(msg, codec.Event) and msg.request_id == rid:
                heard = time.monotonic()
                if not msg.event.get("heartbeat"):
                    yield msg.event

    # -- the command API -------------------------------------------------------------------

    def ping(self, message: Arg | None = None) -> Any:
        return self.call("PING") if message is None else self.call("PING", message)

    def get(self, key: Arg) -> bytes | None:
        return self.call("GET", key)

    def set(self, key: Arg, value: Arg, ex: int | None = None, px: int | None = None,
            nx: bool = False, xx: bool = False) -> bool:
        """True when set; False when NX/XX was not met."""
        argv: list[Arg] = ["SET", key, value]
        if ex is not None:
            argv += ["EX", ex]
        if px is not None:
            argv += ["PX", px]
        if nx:
            argv.append("NX")
        if xx:
            argv.append("XX")
        return self.call(*argv) == "OK"

    def delete(self, *keys: Arg) -> int:
        return self.call("DEL", *keys)

    def mget(self, *keys: Arg) -> list[bytes | None]:
        return self.call("MGET", *keys)

    def mset(self, mapping: dict[Arg, Arg]) -> None:
        self.call("MSET", *[x for kv in mapping.items() for x in kv])

    def exists(self, *keys: Arg) -> int:
        return self.call("EXISTS", *keys)

    def expire(self, key: Arg, seconds: int) -> bool:
        return self.call("EXPIRE", key, seconds) == 1

    def ttl(self, key: Arg) -> int:
        return self.call("TTL", key)

    def keys(self, pattern: Arg = "*") -> list[bytes]:
        return self.call("KEYS", pattern)

    def scan(self, cursor: int = 0, match: Arg | None = None, count: int | None = None
             ) -> tuple[int, list[bytes]]:
        argv: list[Arg] = ["SCAN", cursor]
        if match is not None:
            argv += ["MATCH", match]
        if count is not None:
            argv += ["COUNT", count]
        next_cursor, keys = self.call(*argv)
        return int(next_cursor), keys

    def scan_iter(self, match: Arg | None = None, count: int = 100) -> Iterator[bytes]:
        cursor = 0
        while True:
            cursor, keys = self.scan(cursor, match, count)
            yield from keys
            if cursor == 0:
                return

    def dbsize(self) -> int:
        return self.call("DBSIZE")

    def info(self) -> dict:
        return self.call("INFO")

    def members(self) -> list[dict]:
        return self.call("MEMBERS")

    def observe(self, election: Arg, after: int | None = None,
                timeout_ms: int | None = None) -> dict:
        """OBSERVE: the election's leader (value, lease, revision; value None: no leader), at
        once without `after`, else once its revision is past `after` or `timeout_ms` (server
        default 30 s) has passed. The reply is awaited that much longer than `timeout`."""
        argv: list[Arg] = ["OBSERVE", election]
        if after is not None:
            argv += ["AFTER", after]
        if timeout_ms is not None:
            argv += ["TIMEOUT", timeout_ms]
        waits = COMMANDS["OBSERVE"].waits
        assert waits is not None
        with self.waiting(timeout_ms if timeout_ms is not None else waits[1]):
            return self.call(*argv)

    @contextmanager
    def waiting(self, wait_ms: int) -> Iterator[None]:
        """Replies awaited `wait_ms` longer than `timeout` in this block: a long poll."""
        usual = self.timeout
        self.timeout = usual + wait_ms / 1000
        try:
            yield
        finally:
            self.timeout = usual


def connect(host: str = "127.0.0.1", port: int = 7700, timeout: float = 5.0,
            server_key: str | bytes | None = None, user: str | None = None,
            password: str | None = None) -> Client:
    """A client for one kvd; the connection is made (and checked) on first use. With
    `server_key` (the node's CURVE public key) the connection is encrypted; with `user` it
    logs in (AUTH) on every connection it makes."""
    return Client(host, port, timeout, server_key, user, password)
