"""The raw ceiling: the least a Python + ZeroMQ key-value server can do per request.

A ROUTER around a dict that speaks just enough of the kv protocol (REQUEST and BATCH of SET,
GET and PING) for kv's load generator to drive it. No validation, no versions, no log, no
replication: whatever kvd spends beyond this is the price of being a real store. Its socket
calls are the cheapest pyzmq offers (plain int flags, two recv/send calls instead of the
*_multipart helpers), the same ones kvd's loop uses, so the ceiling is not an easy one.

`--loop` runs the same dict in the shape of kvd's loop (kvd.loop) instead of a blocking
recv/send cycle: poll the ROUTER beside the other sockets a node owns (its monitor and its
gossip SUB), drain what is queued, then send the turn's replies. A daemon that waits on several
sockets and timers, and commits a turn's writes before it answers, cannot have the plain
cycle; this second ceiling measures what that shape costs by itself, so the suite can split
kvd's distance from the raw ceiling into the loop's share and kvd's own work.

    python -m bench.rawserver PORT [--loop]
"""

from __future__ import annotations

import sys

import msgpack
import zmq

REQUEST, REPLY, BATCH, BATCH_REPLY = 1, 2, 3, 4
STATUS, BYTES, NIL = 0, 1, 3
MAX_DRAIN = 4096


def serve(port: int, loop: bool = False) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.SNDHWM, 0)
    router.setsockopt(zmq.RCVHWM, 0)
    router.bind(f"tcp://127.0.0.1:{port}")
    data: dict[bytes, bytes] = {}
    pack, unpack = msgpack.Packer(use_bin_type=True).pack, msgpack.unpackb

    def run(argv: list[bytes]) -> tuple[int, object]:
        name = argv[0]
        if name == b"SET":
            data[argv[1]] = argv[2]
            return STATUS, "OK"
        if name == b"GET":
            value = data.get(argv[1])
            return (NIL, None) if value is None else (BYTES, value)
        return STATUS, "PONG"

    def answer(body: bytes) -> bytes:  # for the loop shape; the cycle below has it inline
        msg = unpack(body)
        if msg[1] == REQUEST:
            kind, value = run(msg[3])
            return pack([1, REPLY, msg[2], kind, value])
        out = []
        for rid, argv in msg[2]:
            kind, value = run(argv)
            out.append([rid, kind, value])
        return pack([1, BATCH_REPLY, out])

    if loop:
        _turns(ctx, router, answer)
    # No SIGTERM handler: a Python handler would only run once a blocking recv returns, so
    # the default action (exit at once) is what lets the suite stop an idle ceiling.
    recv, send = router.recv, router.send
    sndmore = int(zmq.SNDMORE)
    while True:
        client = recv()
        msg = unpack(recv())
        send(client, sndmore)
        if msg[1] == REQUEST:
            kind, value = run(msg[3])
            send(pack([1, REPLY, msg[2], kind, value]))
        else:
            out = []
            for rid, argv in msg[2]:
                kind, value = run(argv)
                out.append([rid, kind, value])
            send(pack([1, BATCH_REPLY, out]))


def _turns(ctx: zmq.Context, router: zmq.Socket, answer) -> None:
    """kvd.loop's loop shape around `answer`, with its socket calls and flags."""
    nb, snd = int(zmq.NOBLOCK), int(zmq.SNDMORE | zmq.NOBLOCK)
    more, events, pollin = int(zmq.RCVMORE), int(zmq.EVENTS), int(zmq.POLLIN)
    monitor = router.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    sub = ctx.socket(zmq.SUB)  # a node's gossip subscriber: polled, idle when alone
    poller = zmq.Poller()
    for sock in (router, monitor, sub):
        poller.register(sock, zmq.POLLIN)
    while True:
        ready = dict(poller.poll(100))
        out = []
        for i in range(MAX_DRAIN if router in ready else 0):
            if i == 1 and not router.get(events) & pollin:
                break
            try:
                frames = [router.recv(nb), router.recv(nb)]
            except zmq.Again:
                break
            while router.get(more):
                frames.append(router.recv(nb))
            out.append([frames[0], answer(frames[1])])
        for client, reply in out:
            router.send(client, snd)
            router.send(reply, nb)
        if monitor in ready:
            while True:
                try:
                    monitor.recv_multipart(nb)
                except zmq.Again:
                    break


if __name__ == "__main__":
    serve(int(sys.argv[1]), loop="--loop" in sys.argv[2:])
