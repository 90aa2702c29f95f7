"""A WATCH consumer that stops reading (issue 12, item 3): it is never skipped ahead. It gets
every change in order up to the point where the node's history no longer holds what it
missed, then one `LAGGED` error event naming the last cursor it was sent; `WATCH prefix FROM`
that cursor resumes without loss (here: the current state first).

Before the fix the node dropped the events its queue to the watcher could not take and sent
the later ones: the cursors jumped and nothing said so."""

from __future__ import annotations

import time

import zmq

from shared import codec
from tests.procs import Kvd

KEYS = 1000  # the writer overwrites these keys, so a reset's current state stays small
CHUNK = 20_000  # writes per pipeline
MAX_WRITES = 1_500_000  # far beyond what the queues hold: the watcher must have lagged by then


def slow_watcher(port: int) -> zmq.Socket:
    """A DEALER that holds few messages in its own queues, so the node's queue to it fills
    after a bounded number of writes."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 100)
    sock.setsockopt(zmq.RCVBUF, 64 * 1024)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def receive(sock: zmq.Socket, deadline_s: float = 20.0) -> codec.Event | codec.Reply:
    if not sock.poll(deadline_s * 1000):
        raise AssertionError(f"nothing from the node within {deadline_s}s")
    return codec.decode(sock.recv())  # type: ignore[return-value]


def changes(sock: zmq.Socket, rid: int, after: int):
    """The stream's change events (heartbeats skipped), checking they come without a gap,
    until the event that is not a change (the LAGGED error), which it returns."""
    expected = after + 1
    while True:
        msg = receive(sock)
        assert isinstance(msg, codec.Event) and msg.request_id == rid, msg
        event = msg.event
        if event.get("heartbeat"):
            # A heartbeat says where the node stands; it must not be ahead of what we got.
            assert event["cursor"] < expected, (
                f"the node is at cursor {event['cursor']} but the stream stopped at "
                f"{expected - 1} with no notice")
            continue
        if "key" not in event:
            return event, expected - 1
        # The watch is on "": every change the node applies has the next cursor.
        assert event["cursor"] == expected, (
            f"cursor jumped from {expected - 1} to {event['cursor']} with no notice")
        expected += 1


def write_until_lagged(kvd: Kvd) -> int:
    with kvd.client(timeout=30) as writer:
        written = 0
        while written < MAX_WRITES:
            writer.pipeline([["SET", b"k%04d" % (i % KEYS), b"%d" % i]
                             for i in range(written, written + CHUNK)])
            written += CHUNK
            info = writer.info()
            if info.get("watchers_lagged") or info["dropped_replies"]:
                return written
    raise AssertionError(f"{MAX_WRITES} writes and the watcher that stopped reading never lagged")


def test_a_watcher_that_stops_reading_gets_lagged_then_resumes_without_loss(kvd: Kvd) -> None:
    watcher = slow_watcher(kvd.port)
    try:
        watcher.send(codec.encode_request(1, [b"WATCH", b""]))
        ack = receive(watcher)
        assert isinstance(ack, codec.Reply) and ack.value["history"] == "live"  # type: ignore
        write_until_lagged(kvd)  # meanwhile the watcher reads nothing

        lagged, last = changes(watcher, 1, ack.value["cursor"])  # type: ignore[index]
        assert lagged["error"] == "LAGGED" and lagged["cursor"] == last, lagged
        assert f"FROM {last}" in lagged["message"]
        with kvd.client() as kv:
            info = kv.info()
            assert info["watchers_lagged"] == 1 and info["watchers"] == 0
            assert info["dropped_replies"] == 0
            final = dict(zip([b"k%04d" % i for i in range(KEYS)],
                             kv.mget(*[b"k%04d" % i for i in range(KEYS)]), strict=True))

        # FROM the named cursor: what it missed fell out of the history, so the current
        # state of the prefix comes first, and it is the final state.
        watcher.send(codec.encode_request(2, [b"WATCH", b"", b"FROM", b"%d" % last]))
        resumed = receive(watcher)
        assert isinstance(resumed, codec.Reply) and resumed.value["history"] == "reset"  # type: ignore
        state: dict[bytes, bytes] = {}
        deadline = time.monotonic() + 20
        while len(state) < KEYS and time.monotonic() < deadline:
            msg = receive(watcher)
            assert isinstance(msg, codec.Event) and msg.request_id == 2
            if not msg.event.get("heartbeat"):
                state[msg.event["key"]] = msg.event["value"]
        assert state == final
    finally:
        watcher.close(linger=0)


def test_a_watcher_that_reads_again_in_time_catches_up_and_is_live_again(kvd: Kvd) -> None:
    """Behind, but by less than the history: it gets everything, in order, then heartbeats."""
    watcher = slow_watcher(kvd.port)
    try:
        watcher.send(codec.encode_request(1, [b"WATCH", b""]))
        ack = receive(watcher)
        assert isinstance(ack, codec.Reply)
        with kvd.client(timeout=30) as writer:
            written = 0
            while not ((info := writer.info()).get("watchers_behind") or info["dropped_replies"]):
                assert written < MAX_WRITES, "the watcher that stopped reading never fell behind"
                writer.pipeline([["SET", b"k%04d" % (i % KEYS), b"v"] for i in range(1000)])
                written += 1000
            # Behind by at most a pipeline; more than a pump's worth, less than the history.
            writer.pipeline([["SET", b"k%04d" % (i % KEYS), b"v"] for i in range(6000)])
        expected = ack.value["cursor"] + written + 6000  # type: ignore[index]
        last = ack.value["cursor"]  # type: ignore[index]
        while True:
            msg = receive(watcher)
            assert isinstance(msg, codec.Event) and "error" not in msg.event, msg
            if msg.event.get("heartbeat"):  # some were queued before it fell behind
                assert msg.event["cursor"] <= last, "a heartbeat ahead of the events received"
                if msg.event["cursor"] == last == expected:
                    break  # everything arrived, and it is live again
                continue
            assert msg.event["cursor"] == last + 1
            last += 1
        with kvd.client() as kv:
            info = kv.info()
        assert (info["watchers_behind"], info["watchers_lagged"], info["dropped_replies"]) == \
            (0, 0, 0)
    finally:
        watcher.close(linger=0)
