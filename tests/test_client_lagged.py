"""The Python client and kvsh's REPL when the node ends a WATCH with LAGGED: they resubscribe
FROM the cursor the node named and say so (`lagged` in the new acknowledgement, one notice
line in the shell); without `resume` the client raises.

The node is scripted here (a ROUTER in a thread), so the exact sequence is pinned; the node's
side is tested against a real kvd in test_watch_lag.py."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import pytest
import zmq
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from kvsh.client import Client
from kvsh.printer import Printer
from kvsh.repl import Shell
from shared import codec
from shared.errors import ServerError
from tests.procs import free_port


def change(cursor: int, key: bytes) -> dict:
    return {"cursor": cursor, "key": key, "value": b"v", "deleted": False, "origin": "n1",
            "stamp": 1, "expires_at": 0}


class ScriptedNode:
    """Answers each WATCH with the next scripted (ack, events) and records the requests."""

    def __init__(self, script: list[tuple[dict, list[dict]]]) -> None:
        self.port = free_port()
        self.requests: list[list[bytes]] = []
        self.router = zmq.Context.instance().socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(f"tcp://127.0.0.1:{self.port}")
        self._script = script
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.router.poll(50):
                continue
            client, body = self.router.recv_multipart()
            msg = codec.decode(body)
            if not isinstance(msg, codec.Request):
                continue  # a CANCEL
            self.requests.append(msg.argv)
            ack, events = self._script.pop(0)
            self.router.send_multipart([client, codec.encode_reply(msg.request_id, ack)])
            for event in events:
                self.router.send_multipart([client, codec.encode_event(msg.request_id, event)])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.router.close()


@pytest.fixture
def lagging_node() -> Iterator[ScriptedNode]:
    lagged = {"error": "LAGGED", "cursor": 12, "message": "fell behind — resume FROM 12"}
    node = ScriptedNode([
        ({"watching": b"u:", "cursor": 10, "history": "live"},
         [change(11, b"u:1"), change(12, b"u:2"), lagged]),
        ({"watching": b"u:", "cursor": 20, "history": "reset"}, [change(20, b"u:1")]),
    ])
    yield node
    node.close()


def test_the_client_resumes_from_the_cursor_lagged_names(lagging_node: ScriptedNode) -> None:
    with Client("127.0.0.1", lagging_node.port, timeout=5) as client:
        stream = client.watch("u:", poll_s=0.05)
        items = [next(stream) for _ in range(5)]
        stream.close()
    assert [i.get("cursor") for i in items] == [10, 11, 12, 20, 20]
    resumed = items[3]
    assert resumed["lagged"] == 12 and resumed["history"] == "reset"
    assert lagging_node.requests == [[b"WATCH", b"u:"], [b"WATCH", b"u:", b"FROM", b"12"]]


def test_without_resume_lagged_is_raised(lagging_node: ScriptedNode) -> None:
    with Client("127.0.0.1", lagging_node.port, timeout=5) as client:
        stream = client.watch("u:", poll_s=0.05, resume=False)
        assert [next(stream)["cursor"] for _ in range(3)] == [10, 11, 12]
        with pytest.raises(ServerError) as info:
            next(stream)
    assert info.value.code == "LAGGED" and "FROM 12" in info.value.message


class StopAfter(Printer):
    """A plain printer that presses Ctrl-C once it has printed the change at `cursor`."""

    def __init__(self, cursor: int, stream: io.StringIO) -> None:
        super().__init__("plain", stream)
        self.cursor = cursor

    def event(self, event: dict) -> None:
        super().event(event)
        if "key" in event and event["cursor"] == self.cursor:
            raise KeyboardInterrupt


def test_the_repl_resumes_after_lagged_and_says_so_in_one_line(
        lagging_node: ScriptedNode, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    with create_pipe_input() as inp:
        shell = Shell(Client("127.0.0.1", lagging_node.port, timeout=5), StopAfter(20, out),
                      history=InMemoryHistory(), input=inp, output=DummyOutput(), monitor=False)
        shell.run_line("WATCH u:")
    notices = capsys.readouterr().err.splitlines()  # plain mode: notices on stderr
    assert notices == ["-- watch fell behind after cursor 12 (reading too slowly); resumed from "
                       "there (history gone: current state first)"]
    changes = [line.split("\t")[0] for line in out.getvalue().splitlines() if "\t" in line]
    assert changes == ["11", "12", "20"]
    assert lagging_node.requests[1] == [b"WATCH", b"u:", b"FROM", b"12"]
    assert out.getvalue().splitlines()[-1] == "stopped; resume with: WATCH u: FROM 20"
