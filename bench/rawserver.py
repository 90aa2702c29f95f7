"""The raw ceiling: the least a Python + ZeroMQ key-value server can do per request.

A ROUTER around a dict that speaks just enough of the kv protocol (REQUEST and BATCH of SET,
GET and PING) for kv's load generator to drive it. No validation, no versions, no log, no
replication: whatever kvd spends beyond this is the price of being a real store. Its socket
calls are the cheapest pyzmq offers (plain int flags, two recv/send calls instead of the
*_multipart helpers), the same ones kvd's loop uses, so the ceiling is not an easy one.

    python -m bench.rawserver PORT
"""

from __future__ import annotations

import sys

import msgpack
import zmq

REQUEST, REPLY, BATCH, BATCH_REPLY = 1, 2, 3, 4
STATUS, BYTES, NIL = 0, 1, 3


def serve(port: int) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.SNDHWM, 0)
    router.setsockopt(zmq.RCVHWM, 0)
    router.bind(f"tcp://127.0.0.1:{port}")
    data: dict[bytes, bytes] = {}
    pack, unpack = msgpack.Packer(use_bin_type=True).pack, msgpack.unpackb
    recv, send = router.recv, router.send
    sndmore = int(zmq.SNDMORE)

    def run(argv: list[bytes]) -> tuple[int, object]:
        name = argv[0]
        if name == b"SET":
            data[argv[1]] = argv[2]
            return STATUS, "OK"
        if name == b"GET":
            value = data.get(argv[1])
            return (NIL, None) if value is None else (BYTES, value)
        return STATUS, "PONG"

    # No SIGTERM handler: a Python handler would only run once a blocking recv returns, so
    # the default action (exit at once) is what lets the suite stop an idle ceiling.
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


if __name__ == "__main__":
    serve(int(sys.argv[1]))
