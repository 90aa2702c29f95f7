"""MULTI / EXEC / DISCARD on the node (kvd.state.transaction), sans-IO, and through the
native door with the Python client and kvsh."""

from __future__ import annotations

import pytest

from kvd.state import transaction
from kvd.state.node import Context, Node
from shared.client import Client
from shared.codec import Results, decode, encode_batch_reply, encode_reply
from shared.errors import KvError, NotInteger, ServerError
from tests.procs import Kvd
from tests.test_access import locked
from tests.test_kvsh import sh
from tests.test_node import Clock
from tests.test_node import clock as _clock
from tests.test_node import node as _node

clock, node = _clock, _node  # the fake clock and the node, as fixtures here too


def run(node: Node, clock: Clock, *argv: bytes | str, client: bytes = b"c",
        user=None) -> object:  # noqa: ANN001
    ctx = Context(now=clock.ms, client=client, request_id=1)
    ctx.user = user
    return node.execute([a if isinstance(a, bytes) else a.encode() for a in argv], ctx)


def code(value: object) -> str:
    assert isinstance(value, KvError), value
    return value.code


def test_queued_commands_run_at_exec_with_one_result_each(node: Node, clock: Clock) -> None:
    assert run(node, clock, "SET", "n", "x") == "OK"
    assert run(node, clock, "MULTI") == "OK"
    assert run(node, clock, "SET", "a", "1") == "QUEUED"
    assert run(node, clock, "INCR", "a") == "QUEUED"
    assert run(node, clock, "INCR", "n") == "QUEUED"  # fails only when it runs
    assert run(node, clock, "GET", "a") == "QUEUED"
    assert node.store.get(b"a", clock.ms) is None  # nothing ran yet
    results = run(node, clock, "EXEC")
    assert type(results) is Results
    assert results[:2] == ["OK", 2] and code(results[2]) == "NOT_INTEGER"
    assert results[3] == b"2"  # the others ran: nothing is rolled back, as in Redis
    assert code(run(node, clock, "EXEC")) == "TRANSACTION"  # it is over


def test_a_command_refused_while_queueing_spoils_the_transaction(node: Node,
                                                                  clock: Clock) -> None:
    for refused in (["SET", "a"], ["NOPE"], ["SET", "a", "b", "EX", "x"], ["WATCH", "p"],
                    ["CAS", "k", "REV", "0", "v"], ["SET", "k", "v" * 2000]):
        assert run(node, clock, "MULTI") == "OK"
        assert run(node, clock, "SET", "kept", "1") == "QUEUED"
        assert isinstance(run(node, clock, *refused), KvError), refused
        assert run(node, clock, "SET", "after", "1") == "QUEUED"  # still queueing
        assert code(run(node, clock, "EXEC")) == "EXECABORT"
        assert node.store.get(b"kept", clock.ms) is None and not node.changes


def test_multi_exec_discard_out_of_place(node: Node, clock: Clock) -> None:
    assert code(run(node, clock, "EXEC")) == "TRANSACTION"
    assert code(run(node, clock, "DISCARD")) == "TRANSACTION"
    assert run(node, clock, "MULTI") == "OK"
    assert code(run(node, clock, "MULTI")) == "TRANSACTION"  # not nested; still open
    assert run(node, clock, "SET", "a", "1") == "QUEUED"
    assert run(node, clock, "DISCARD") == "OK"
    assert node.store.get(b"a", clock.ms) is None
    assert code(run(node, clock, "MULTI", client=b"")) == "TRANSACTION"  # HTTP, Redis door


def test_one_clients_transaction_leaves_the_others_alone(node: Node, clock: Clock) -> None:
    assert run(node, clock, "MULTI", client=b"a") == "OK"
    ctx = Context(now=clock.ms)
    replies, wrote = node.execute_batch(
        [[1, [b"SET", b"k", b"v"]], [2, [b"GET", b"k"]], [3, [b"SET", b"k", b"w"]]], ctx,
        [b"b", b"b", b"a"])
    assert replies == [(1, "OK"), (2, b"v"), (3, "QUEUED")] and wrote == [0]
    assert run(node, clock, "GET", "k", client=b"b") == b"v"
    assert run(node, clock, "EXEC", client=b"a") == ["OK"]
    assert run(node, clock, "GET", "k", client=b"b") == b"w"


def test_open_transactions_and_their_queues_are_bounded(node: Node, clock: Clock,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transaction, "MAX_OPEN", 3)
    monkeypatch.setattr(transaction, "MAX_QUEUED_BYTES", 100)
    for client in (b"1", b"2", b"3", b"4"):  # the fourth drops the longest-open one
        assert run(node, clock, "MULTI", client=client) == "OK"
    assert len(node.transactions) == 3 and node.transactions.dropped == 1
    assert code(run(node, clock, "EXEC", client=b"1")) == "TRANSACTION"
    assert run(node, clock, "EXEC", client=b"2") == []
    assert run(node, clock, "SET", "k", "v" * 60, client=b"3") == "QUEUED"
    assert code(run(node, clock, "SET", "k", "v" * 60, client=b"3")) == "TOO_LARGE"
    assert code(run(node, clock, "EXEC", client=b"3")) == "EXECABORT"


def test_a_queued_command_is_checked_for_the_users_permissions(node: Node,
                                                               clock: Clock) -> None:
    locked(node, clock)
    app = node.access.login(b"app", b"apppw", "127.0.0.1")
    assert run(node, clock, "MULTI", user=app) == "OK"
    assert run(node, clock, "SET", "app:1", "v", user=app) == "QUEUED"
    assert code(run(node, clock, "SET", "other", "v", user=app)) == "NOPERM"
    assert code(run(node, clock, "EXEC", user=app)) == "EXECABORT"
    assert run(node, clock, "MULTI", user=app) == "OK"
    assert run(node, clock, "SET", "app:1", "v", user=app) == "QUEUED"
    assert run(node, clock, "EXEC", user=app) == ["OK"]


def test_results_travel_as_their_own_reply_kind_with_errors_in_place() -> None:
    results = Results(["OK", 3, NotInteger("not a number"), [b"a", None], None, {"k": 1}])
    for frame in (encode_reply(7, results), encode_batch_reply([(7, results)])):
        reply = decode(frame)
        reply = reply[0] if isinstance(reply, list) else reply
        assert reply.request_id == 7 and not reply.is_error
        got = reply.value
        assert got[:2] == ["OK", 3] and got[3:] == [[b"a", None], None, {"k": 1}]
        assert isinstance(got[2], ServerError) and got[2].code == "NOT_INTEGER"


def test_a_transaction_through_the_python_client_and_kvsh(kvd: Kvd) -> None:
    with Client(port=kvd.port) as c:
        assert c.call("MULTI") == "OK"
        assert c.call("SET", "tx", "1") == "QUEUED"
        assert c.call("INCRBY", "tx", "41") == "QUEUED"
        assert c.call("EXEC") == ["OK", 42]
    with Client(port=kvd.port) as c:  # another connection: no transaction of the first's
        assert c.call("GET", "tx") == b"42"
        with pytest.raises(ServerError) as info:
            c.call("EXEC")
        assert info.value.code == "TRANSACTION"
    script = b"MULTI\nSET tx 1\nINCR tx\nSET tx\nEXEC\nGET tx\nMULTI\nINCR tx\nAPPEND tx x\n" \
             b"INCR tx\nEXEC\n"
    out = sh(kvd, input=script)
    lines = out.stdout.decode().splitlines()
    assert lines[:3] == ["OK", "QUEUED", "QUEUED"]
    assert lines[3].startswith("(error) WRONG_ARITY")  # sent all the same: the node spoils it
    assert lines[4].startswith("(error) EXECABORT") and lines[5] == "42"
    assert lines[6:10] == ["OK", "QUEUED", "QUEUED", "QUEUED"]
    assert lines[10:] == ["43", "3", "(error) NOT_INTEGER: INCR: the value of this key is not "
                          "an integer"]
    assert out.returncode == 2
