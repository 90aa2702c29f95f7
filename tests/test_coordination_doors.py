"""The coordination commands through the Redis and HTTP doors, on real nodes: redis-py (RESP2
and RESP3), redis-cli, raw sockets and http.client against a group of one, then a group of
three (a follower forwards; a node left alone answers NO_QUORUM or TRYAGAIN). Replies that
come later keep their place in a pipeline; MULTI refuses them; a client that leaves with a
reply pending costs the node nothing; garbage arguments get error replies."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.procs import Kvd, info, running, wait_for
from tests.test_consensus_live import three_voters

redis = pytest.importorskip("redis", reason="redis-py is a test dependency: pip install -e .[test]")

COORDINATION = ["CGET", "CSET", "CDEL", "CAS", "LEASE", "LOCK", "UNLOCK", "CAMPAIGN", "LEADER",
                "RESIGN"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kvd]:
    """A group of one, leading (each test uses its own keys)."""
    with running(tmp_path_factory.mktemp("coorddoors"), "c1") as kvd:
        wait_for(lambda: info(kvd)["raft_role"] == "leader", what="a group of one to lead")
        yield kvd


def resp(node: Kvd, protocol: int = 2) -> redis.Redis:
    return redis.Redis(port=node.resp_port, protocol=protocol, socket_timeout=15)


def as_map(reply: object) -> dict:
    """A map reply as a dict: RESP3 gives one, RESP2 a flat array."""
    if isinstance(reply, dict):
        return reply
    assert isinstance(reply, list) and len(reply) % 2 == 0, reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def raw_resp(node: Kvd) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.resp_port), timeout=15)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def until_closed(sock: socket.socket) -> bytes:
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def http_call(node: Kvd, method: str, target: str, body: bytes | None = None
              ) -> tuple[int, dict[str, str], object]:
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=15)
    try:
        conn.request(method, target, body=body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(r.read())
    finally:
        conn.close()


def error_code(doc: object) -> str:
    """The code of a JSON error, checking its shape."""
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
    return doc["error"]["code"]


# -- RESP -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_speaks_every_coordination_command(node: Kvd, protocol: int) -> None:
    r, k = resp(node, protocol), f"cfg{protocol}"
    first = as_map(r.execute_command("CSET", k, "v1"))[b"revision"]
    got = as_map(r.execute_command("CGET", k))
    assert got == {b"value": b"v1", b"revision": first, b"lease": 0}
    second = as_map(r.execute_command("CAS", k, "REV", first, "v2"))[b"revision"]
    assert second > first
    with pytest.raises(redis.ResponseError, match=r"^COMPARE_FAILED .*revision"):
        r.execute_command("CAS", k, "REV", first, "v3")
    assert as_map(r.execute_command("CAS", k, "VALUE", "v2", "v4"))[b"revision"] > second
    l1 = as_map(r.execute_command("LEASE", "GRANT", 60000))[b"lease"]
    l2 = as_map(r.execute_command("LEASE", "GRANT", 60000))[b"lease"]
    t1 = as_map(r.execute_command("LOCK", f"job{protocol}", "LEASE", l1))[b"token"]
    with pytest.raises(redis.ResponseError, match=r"^LOCKED "):
        r.execute_command("LOCK", f"job{protocol}", "LEASE", l2)
    as_map(r.execute_command("UNLOCK", f"job{protocol}", "LEASE", l1))
    t2 = as_map(r.execute_command("LOCK", f"job{protocol}", "LEASE", l2))[b"token"]
    assert t2 > t1  # fencing tokens only go up
    won = as_map(r.execute_command("CAMPAIGN", f"el{protocol}", "me", "LEASE", l1))
    assert won[b"leader"] in (True, 1) and won[b"value"] == b"me"
    assert as_map(r.execute_command("LEADER", f"el{protocol}"))[b"lease"] == l1
    as_map(r.execute_command("RESIGN", f"el{protocol}", "LEASE", l1))
    assert as_map(r.execute_command("LEASE", "REVOKE", l2))[b"revoked"] == l2
    assert as_map(r.execute_command("CDEL", k))[b"deleted"] == 1


def test_redis_py_pipeline_mixes_coordination_and_plain_commands_in_order(node: Kvd) -> None:
    pipe = resp(node).pipeline(transaction=False)
    for i in range(20):
        pipe.execute_command("CSET", f"p{i}", i)
        pipe.set(f"plain{i}", i)
        pipe.execute_command("CGET", f"p{i}")
        pipe.get(f"plain{i}")
    replies = pipe.execute()
    for i in range(20):
        cset, ok, cget, plain = replies[4 * i: 4 * i + 4]
        assert ok is True and plain == b"%d" % i
        assert as_map(cget) == {b"value": b"%d" % i, b"revision": as_map(cset)[b"revision"],
                                b"lease": 0}


def test_raw_pipeline_quit_answers_after_what_is_pending(node: Kvd) -> None:
    sock = raw_resp(node)
    sock.sendall(b"CSET q 1\r\nPING\r\nCGET q\r\nCGET\r\nLOCK q\r\nECHO x\r\nQUIT\r\nPING\r\n")
    got = until_closed(sock)  # QUIT: the replies before it, +OK, then the end
    replies = got.split(b"\r\n")
    assert replies[:4] == [b"*2", b"$8", b"revision", replies[3]] and replies[3][:1] == b":"
    rest = got[got.index(b"+PONG"):]
    assert rest.startswith(b"+PONG\r\n*6\r\n$5\r\nvalue\r\n$1\r\n1\r\n")
    assert rest.endswith(b"-ERR wrong number of arguments for 'cget' command\r\n"
                         b"-ERR LOCK needs the lease that holds it \xe2\x80\x94 usage: LOCK name "
                         b"[LEASE id]\r\n$1\r\nx\r\n+OK\r\n")
    sock.close()


def test_multi_refuses_coordination_and_exec_aborts(node: Kvd) -> None:
    sock = raw_resp(node)
    sock.sendall(b"MULTI\r\nSET m 1\r\nCSET m 1\r\nEXEC\r\nGET m\r\n")
    got = b""
    while not got.endswith(b"$-1\r\n"):
        got += sock.recv(65536)
    assert got.startswith(b"+OK\r\n+QUEUED\r\n-ERR Command not allowed inside a transaction: "
                          b"CSET goes through the Raft group")
    assert got.endswith(b"-EXECABORT Transaction discarded because of previous errors.\r\n"
                        b"$-1\r\n")
    sock.close()


def test_a_client_gone_with_replies_pending_costs_nothing(node: Kvd) -> None:
    for i in range(30):
        sock = raw_resp(node)
        sock.sendall(b"CSET gone%d x\r\nCGET gone%d\r\nPING\r\n" % (i, i))
        if i % 2:  # half reset the connection (RST), half close it politely
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00"
                            b"\x00\x00")
        sock.close()
    assert resp(node).ping() is True
    assert as_map(resp(node).execute_command("CGET", "gone29"))[b"value"] in (b"x", None)
    assert info(node)["resp_internal_errors"] == 0


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli(node: Kvd) -> None:
    def cli(*args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(node.resp_port), *args],
                              capture_output=True, timeout=30, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert cli("CSET", "cli", "hello").startswith("revision\n")
    assert cli("CGET", "cli").split("\n")[:2] == ["value", "hello"]
    assert "value hello" in cli("-3", "CGET", "cli")  # RESP3: a map, shown key value
    assert cli("CAS", "cli", "REV", "0", "x").startswith("COMPARE_FAILED")
    assert "unknown command" not in cli("COMMAND", "INFO", "CGET")


@settings(max_examples=120, deadline=None)
@given(name=st.sampled_from(COORDINATION), args=st.lists(st.one_of(
    st.binary(max_size=12), st.sampled_from([b"REV", b"VALUE", b"LEASE", b"GRANT", b"TTL",
                                             b"KEEPALIVE", b"REVOKE", b"-1", b"0", b"99999",
                                             b"9223372036854775808"])), max_size=6))
def test_garbage_arguments_get_error_replies_and_the_node_serves_on(
        node: Kvd, name: str, args: list[bytes]) -> None:
    r = resp(node)
    try:
        reply = r.execute_command(name, *args)
    except redis.ResponseError as exc:
        assert str(exc) and "internal error" not in str(exc)
    else:
        assert isinstance(as_map(reply), dict)
    assert r.ping() is True
    r.close()


# -- HTTP -------------------------------------------------------------------------------------


_PARAMS = st.sampled_from(["rev", "prev", "lease", "ttl_ms", "index", "wait", "x"])
_VALUES = st.one_of(st.sampled_from(["0", "-1", "1", "abc", "", "9223372036854775808",
                                     "99999999999", "%00", "%ff"]),
                    st.text(alphabet="0123456789abc%", max_size=6))


@settings(max_examples=120, deadline=None)
@given(method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH"]),
       path=st.sampled_from(["/v1/coord/", "/v1/lease", "/v1/lease/", "/v1/lock/",
                             "/v1/election/"]),
       name=st.text(alphabet="ab1%/", max_size=6),
       query=st.lists(st.tuples(_PARAMS, _VALUES), max_size=3),
       body=st.binary(max_size=8))
def test_garbage_coordination_requests_get_json_errors_and_the_node_serves_on(
        node: Kvd, method: str, path: str, name: str, query: list[tuple[str, str]],
        body: bytes) -> None:
    """Any method, name, query and body on the coordination routes: a JSON answer with a
    status under 500 (503 only as NO_QUORUM/TRYAGAIN, which a group of one never is), and
    the next request is served."""
    # the last wait wins: a blocking query (GET election ?index=) answers within 50 ms
    target = path + name + "?" + "&".join([*(f"{k}={v}" for k, v in query), "wait=50"])
    status, _, doc = http_call(node, method, target, body)
    assert status < 500, (target, status, doc)
    if status >= 400:
        error_code(doc)
    assert http_call(node, "GET", "/health")[0] == 200


def test_http_cas_statuses_and_error_shapes(node: Kvd) -> None:
    assert error_code(http_call(node, "GET", "/v1/coord/h%2Fcfg")[2]) == "NOT_FOUND"
    status, _, doc = http_call(node, "PUT", "/v1/coord/h%2Fcfg?rev=0", b"v1")
    assert status == 200
    rev = doc["revision"]  # type: ignore[index]
    status, _, doc = http_call(node, "PUT", "/v1/coord/h%2Fcfg?rev=0", b"v2")
    assert status == 412 and error_code(doc) == "COMPARE_FAILED"
    assert doc["error"]["revision"] == rev and doc["error"]["value"] == "v1"  # type: ignore
    status, _, doc = http_call(node, "PUT", "/v1/coord/h%2Fcfg?prev=v1", b"v2")
    assert status == 200 and doc["revision"] > rev  # type: ignore[index,operator]
    assert http_call(node, "GET", "/v1/coord/h%2Fcfg")[2] == {
        "key": "h/cfg", "value": "v2", "revision": doc["revision"], "lease": 0}  # type: ignore
    assert http_call(node, "DELETE", "/v1/coord/h%2Fcfg")[2] == {"deleted": 1}
    for method, target, status in (("PATCH", "/v1/coord/x", 405), ("GET", "/v1/lease", 405),
                                   ("POST", "/v1/lease", 400), ("POST", "/v1/lock/x", 400),
                                   ("PUT", "/v1/coord/x?rev=1&prev=a", 400),
                                   ("PUT", "/v1/coord/x?rev=-1", 400),
                                   ("GET", "/v1/lease/12345678", 404)):
        got, _, doc = http_call(node, method, target, b"")
        assert got == status, (method, target, doc)
        error_code(doc)


def test_http_lease_lock_fencing_and_election(node: Kvd) -> None:
    def grant() -> int:
        status, _, doc = http_call(node, "POST", "/v1/lease?ttl_ms=60000")
        assert status == 200 and doc["ttl"] == 60000  # type: ignore[index]
        return doc["lease"]  # type: ignore[index]

    l1, l2 = grant(), grant()
    t1 = http_call(node, "POST", f"/v1/lock/hjob?lease={l1}")[2]["token"]  # type: ignore
    status, _, doc = http_call(node, "POST", f"/v1/lock/hjob?lease={l2}")
    assert status == 409 and error_code(doc) == "LOCKED"
    assert doc["error"]["holder"] == l1  # type: ignore[index]
    assert http_call(node, "DELETE", f"/v1/lock/hjob?lease={l1}")[0] == 200
    t2 = http_call(node, "POST", f"/v1/lock/hjob?lease={l2}")[2]["token"]  # type: ignore
    assert t2 > t1
    assert http_call(node, "PUT", f"/v1/lease/{l1}")[2]["lease"] == l1  # type: ignore[index]
    assert http_call(node, "GET", f"/v1/lease/{l2}")[2]["keys"] == []  # type: ignore[index]

    assert http_call(node, "GET", "/v1/election/hsched")[0] == 404
    won = http_call(node, "POST", f"/v1/election/hsched?lease={l1}", b"node-1")[2]
    queued = http_call(node, "POST", f"/v1/election/hsched?lease={l2}", b"node-2")[2]
    assert won["leader"] is True and queued["leader"] is False  # type: ignore[index]
    assert http_call(node, "GET", "/v1/election/hsched")[2]["value"] == "node-1"  # type: ignore
    assert http_call(node, "DELETE", f"/v1/election/hsched?lease={l1}")[0] == 200
    assert http_call(node, "GET", "/v1/election/hsched")[2]["value"] == "node-2"  # type: ignore
    assert http_call(node, "DELETE", f"/v1/lease/{l2}")[2] == {"revoked": l2}
    assert http_call(node, "GET", "/v1/election/hsched")[0] == 404  # its lease ended
    # a blocking query (OBSERVE): the state newer than index, or the same one after wait ms
    gone = http_call(node, "GET", "/v1/election/hsched?index=0")[2]
    assert gone["value"] is None and gone["revision"] > 0  # type: ignore[index]
    status, _, same = http_call(node, "GET",
                                f"/v1/election/hsched?index={gone['revision']}&wait=300")
    assert status == 200 and same == gone
    l3 = grant()
    won = http_call(node, "POST", f"/v1/election/hsched?lease={l3}", b"node-3")[2]
    newer = http_call(node, "GET", f"/v1/election/hsched?index={gone['revision']}")[2]
    assert newer["value"] == "node-3" and newer["revision"] == won["revision"]  # type: ignore
    assert http_call(node, "GET", "/v1/election/hsched?index=x")[0] == 400
    status, _, doc = http_call(node, "DELETE", f"/v1/lease/{l2}")
    assert status == 404 and error_code(doc) == "NO_LEASE"


def test_http_keep_alive_pipeline_answers_in_order(node: Kvd) -> None:
    from tests.test_http import read_response

    sock = socket.create_connection(("127.0.0.1", node.http_port), timeout=15)
    requests = b"".join(
        b"PUT /v1/coord/hp%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d" % (i, i % 10)
        + b"PUT /v1/kv/hp%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d" % (i, i % 10)
        + b"GET /v1/coord/hp%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
        + b"GET /v1/kv/hp%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(15))
    sock.sendall(requests + b"GET /v1/coord/none HTTP/1.1\r\nHost: x\r\n\r\n")
    f = sock.makefile("rb")
    for i in range(15):
        status, _, put = read_response(f)
        assert status == 200 and "revision" in json.loads(put)
        assert read_response(f)[0] == 200
        status, _, got = read_response(f)
        assert status == 200 and json.loads(got)["value"] == str(i % 10)
        assert read_response(f)[::2] == (200, b"%d" % (i % 10))
    assert read_response(f)[0] == 404
    sock.close()


# -- a group of three -------------------------------------------------------------------------


def test_three_nodes_followers_forward_and_a_lone_node_says_no_quorum(
        kvd_factory: Callable[..., Kvd]) -> None:
    nodes, leader = three_voters(kvd_factory)
    follower, other = [n for n in nodes if n is not leader]

    def cset_on_follower() -> object:
        try:
            return as_map(resp(follower, 3).execute_command("CSET", "fw", "1"))
        except redis.exceptions.TryAgainError:  # between leaders yet (redis-py drops the code)
            return None
        except redis.ResponseError as exc:
            assert str(exc).startswith("NO_QUORUM"), exc
            return None

    rev = wait_for(cset_on_follower, what="a CSET forwarded by a follower")[b"revision"]  # type: ignore
    got = http_call(other, "GET", "/v1/coord/fw")[2]
    assert got["value"] == "1" and got["revision"] == rev  # type: ignore[index]
    sock = raw_resp(follower)  # forwarded: answered turns later, plain replies wait behind
    sock.sendall(b"CSET fw2 a\r\nSET x 1\r\nCGET fw2\r\nGET x\r\nQUIT\r\n")
    got = until_closed(sock)
    assert got.startswith(b"*2\r\n$8\r\nrevision\r\n:")
    assert got.split(b"\r\n", 4)[4].startswith(b"+OK\r\n*6\r\n$5\r\nvalue\r\n$1\r\na\r\n")
    assert got.endswith(b"$1\r\n1\r\n+OK\r\n")
    sock.close()

    for n in nodes:
        if n is not follower:
            n.kill()
    sock = raw_resp(follower)  # a command that may wait for an answer, and a client gone
    sock.sendall(b"CSET fw 2\r\n")
    sock.close()

    def refused() -> bytes | None:
        # A raw socket: redis-py reads TRYAGAIN as its own cluster error, without the code.
        with raw_resp(follower) as s:
            s.sendall(b"CSET fw 3\r\n")
            line = s.makefile("rb").readline()
        return line.split()[0] if line.startswith(b"-") else None

    assert wait_for(refused, deadline_s=30, what="RESP to refuse") in (b"-NO_QUORUM",
                                                                        b"-TRYAGAIN")
    status, headers, doc = http_call(follower, "PUT", "/v1/coord/fw", b"4")
    assert status == 503 and headers["retry-after"] == "1"
    assert error_code(doc) in ("NO_QUORUM", "TRYAGAIN")
    assert resp(follower).set("plain", "on") is True  # the keyspace is served as ever
    assert info(follower)["resp_internal_errors"] == 0
