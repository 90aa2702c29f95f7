"""The native door's later replies (coordination commands, kvd.state.coordcmds): in a turn of
several lone requests, one the coordinator answers at once (NO_QUORUM), one it answers later
and plain ones each get exactly their own reply, and a failed commit still fails the write's.
Driven through the door's message handling, without a loop: one turn, exactly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.targets import free_port
from kvd.doors.native import NativeDoor
from kvd.state.context import Context, Deferred
from kvd.state.node import Node
from shared import codec
from shared.errors import NoQuorum, StorageError

CLIENTS = [b"c1", b"c2", b"c3", b"c4", b"c5"]


@pytest.fixture
def door() -> Iterator[tuple[NativeDoor, list[Deferred]]]:
    """A door whose coordinator refuses CGET x at once and leaves every other one waiting."""
    node = Node("n1", "127.0.0.1:7700")
    waiting: list[Deferred] = []

    def coordinator(command: tuple) -> Deferred:
        answer = Deferred()
        if command == ("get", b"x"):
            answer.resolve(NoQuorum("no leader is known"))
        else:
            waiting.append(answer)
        return answer

    node.coordinator = coordinator
    made = NativeDoor(node, "127.0.0.1", free_port())
    yield made, waiting
    made.close()


def request(door: NativeDoor, client: bytes, rid: int, *argv: bytes) -> None:
    door._handle([client, codec.encode_request(rid, list(argv))], Context(now=1, wall=1))


def replies(door: NativeDoor) -> dict[bytes, object]:
    """Each client's last reply's value (a BATCH_REPLY: its values)."""
    got: dict[bytes, object] = {}
    for client, body in door.out:
        reply = codec.decode(body)
        got[client] = reply.value if isinstance(reply, codec.Reply) \
            else [r.value for r in reply]  # type: ignore[union-attr]
    return got


def test_a_turn_of_lone_requests_answers_each_once(door) -> None:
    door_, waiting = door
    ctx = Context(now=1, wall=1)
    request(door_, b"c0", 1, b"PING")
    door_._handle([b"c0", codec.encode_batch([(2, [b"PING"])])], ctx)  # runs the lone PING
    request(door_, CLIENTS[0], 3, b"CGET", b"x")  # refused at once
    request(door_, CLIENTS[1], 4, b"SET", b"k", b"v")  # waits for the turn's commit
    request(door_, CLIENTS[2], 5, b"CGET", b"y")  # answered later
    request(door_, CLIENTS[3], 6, b"CGET", b"x")
    request(door_, CLIENTS[4], 7, b"PING")
    door_._run_lone(ctx)
    door_.fail(StorageError("disk full"))  # the turn's commit failed: the SET's reply says so
    got = replies(door_)
    assert len(door_.out) == 6 and CLIENTS[2] not in got
    assert got[CLIENTS[0]][0] == got[CLIENTS[3]][0] == "NO_QUORUM"  # type: ignore[index]
    assert got[CLIENTS[1]][0] == StorageError.code  # type: ignore[index]
    assert got[CLIENTS[4]] == "PONG"
    door_.out.clear()
    waiting[0].resolve({"value": b"1", "revision": 2, "lease": 0})
    assert replies(door_) == {CLIENTS[2]: {"value": b"1", "revision": 2, "lease": 0}}
