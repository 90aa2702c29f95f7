"""The HTTP ceiling: the most a single-threaded Python + h11 server does per request.

One selector, one `h11.Connection` per client, no routes, no store, no log: GET is answered
with a fixed 100-byte body (the size of bench.httpdoor's values), PUT reads its body and answers
`{"ok":true}`, both with the headers kvd's HTTP door sends (server, content-type,
content-length). Whatever kvd's door spends beyond this is the price of routing into a real
node. Keep-alive and pipelined requests work the way h11 has them: a cycle ends, the next
starts.

The cheap shortcuts are deliberate, since this is a ceiling: a connection's responses are
written with a blocking `sendall` (bench clients read every answer, so the kernel buffer never
fills) and a broken request simply closes the connection.

    python -m bench.h11echo PORT
"""

from __future__ import annotations

import selectors
import socket
import sys

import h11

READ_CHUNK = 64 * 1024
GET_BODY = b"v" * 100
PUT_BODY = b'{"ok":true}\n'
SERVER = ("server", "h11echo")


def _response(body: bytes, content_type: str) -> list[h11.Event]:
    headers = [SERVER, ("content-type", content_type), ("content-length", str(len(body)))]
    return [h11.Response(status_code=200, headers=headers, reason=b"OK"), h11.Data(data=body),
            h11.EndOfMessage()]


ANSWERS = {b"GET": _response(GET_BODY, "application/octet-stream"),
           b"PUT": _response(PUT_BODY, "application/json")}


def serve(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=128)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    # No SIGTERM handler: the default action (exit at once) is how bench.httpdoor stops it.
    while True:
        for key, _ in sel.select():
            if key.data is None:
                _accept(listener, sel)
            elif not _serve(key.fileobj, key.data):  # type: ignore[arg-type]
                sel.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]


def _accept(listener: socket.socket, sel: selectors.BaseSelector) -> None:
    try:
        sock, _ = listener.accept()
    except BlockingIOError:
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(True)  # recv only runs when the selector says readable
    sel.register(sock, selectors.EVENT_READ, h11.Connection(h11.SERVER))


def _serve(sock: socket.socket, conn: h11.Connection) -> bool:
    """Read what arrived and answer every request it completes; False: close the socket."""
    try:
        data = sock.recv(READ_CHUNK)
    except OSError:
        return False
    conn.receive_data(data)
    out = bytearray()
    method = b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            if event is h11.PAUSED:
                if conn.our_state is not h11.DONE:
                    break
                conn.start_next_cycle()
            elif type(event) is h11.Request:
                method = event.method
            elif type(event) is h11.EndOfMessage:
                for answer in ANSWERS.get(method, ANSWERS[b"GET"]):
                    out += conn.send(answer)
            elif type(event) is h11.ConnectionClosed:
                return False
    except h11.ProtocolError:
        return False
    if out:
        try:
            sock.sendall(out)
        except OSError:
            return False
    return conn.our_state is not h11.MUST_CLOSE


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    serve(int(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
