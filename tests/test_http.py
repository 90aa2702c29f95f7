"""The HTTP door through real clients: urllib, http.client, raw sockets and curl against a live
kvd; every route of the contract, the bad input it must survive, SSE with resumption, writes
seen through the other doors and on another node. The router is also fuzzed sans-IO."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.procs import Kvd, info, running, send_and_close, wait_for

redis = pytest.importorskip("redis", reason="redis-py is a test dependency: pip install -e .[test]")

MAX_VALUE = 4096
HEADER_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kvd]:
    """One node for the tests that only need a door to talk to (each uses its own keys)."""
    home = tmp_path_factory.mktemp("http")
    config = home / "kvd.toml"
    config.write_text(f"max_value_size = {MAX_VALUE}\nhttp_header_timeout = {HEADER_TIMEOUT_S}\n")
    with running(home, "h1", ["--config", str(config)]) as kvd:
        yield kvd


# -- helpers ---------------------------------------------------------------------------------


def call(node: Kvd, method: str, target: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get_json(node: Kvd, target: str) -> object:
    status, headers, body = call(node, "GET", target)
    assert status == 200 and headers["content-type"] == "application/json", (status, body)
    return json.loads(body)


def error_of(status_headers_body: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    """(status, code) of a JSON error, checking its shape."""
    status, headers, body = status_headers_body
    assert headers["content-type"] == "application/json", headers
    doc = json.loads(body)
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message"}, doc
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
    return status, doc["error"]["code"]


def raw(node: Kvd, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", node.http_port), timeout=timeout)


def read_response(f) -> tuple[int, dict[str, str], bytes]:  # noqa: ANN001 - a binary file
    """One response off a buffered socket file (content-length or chunked framing)."""
    line = f.readline()
    assert line.startswith(b"HTTP/1.1 "), line
    status = int(line.split()[1])
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, headers, f.read(int(headers["content-length"]))
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while size := int(f.readline().strip(), 16):
            body += f.read(size)
            f.readline()
        f.readline()
    return status, headers, body


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a socket timeout fails the test."""
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def still_serves(node: Kvd) -> None:
    status, _, body = call(node, "GET", "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def b64(data: bytes) -> dict[str, str]:
    return {"base64": base64.b64encode(data).decode()}


class Sse:
    """A Server-Sent Events reader on http.client: events as dicts, comments as strings."""

    def __init__(self, node: Kvd, target: str, headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
        self.conn.request("GET", target, headers=headers or {})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        assert self.resp.getheader("content-type") == "text/event-stream"
        self.comments: list[str] = []

    def next(self) -> dict[str, str]:
        """The next event (fields id, event, data); comments seen on the way are kept."""
        fields: dict[str, str] = {}
        while True:
            line = self.resp.readline()
            assert line, "the stream ended"
            text = line.decode().rstrip("\n")
            if not text:
                if fields:
                    return fields
            elif text.startswith(":"):
                self.comments.append(text[1:].strip())
            else:
                name, _, value = text.partition(":")
                fields[name] = value.removeprefix(" ")

    def change(self) -> dict:
        ev = self.next()
        assert "event" not in ev, ev
        data = json.loads(ev["data"])
        assert set(data) == {"op", "key", "value", "origin", "cursor"}, data
        assert ev["id"] == str(data["cursor"]), ev
        return data

    def close(self) -> None:
        self.conn.close()


# -- /v1/kv ----------------------------------------------------------------------------------


def test_key_routes_put_get_delete_with_slashes_and_any_bytes(node: Kvd) -> None:
    for target, key in (("/v1/kv/kr/plain", b"kr/plain"), ("/v1/kv/kr/a/b/c", b"kr/a/b/c"),
                        ("/v1/kv/kr/sp%20ace%2Fslash", b"kr/sp ace/slash"),
                        ("/v1/kv/kr/%FF%00%C3%A9", b"kr/\xff\x00\xc3\xa9")):
        value = b"v\x00\xff" + key
        assert call(node, "PUT", target, value)[0] == 200
        status, headers, body = call(node, "GET", target)
        assert (status, headers["content-type"], body) == (200, "application/octet-stream",
                                                           value)
        with node.client() as c:  # the path is the key, byte for byte
            assert c.get(key) == value
        assert json.loads(call(node, "DELETE", target)[2]) == {"deleted": 1}
        assert json.loads(call(node, "DELETE", target)[2]) == {"deleted": 0}
        assert error_of(call(node, "GET", target)) == (404, "NOT_FOUND")


def test_a_transaction_in_one_request(node: Kvd) -> None:
    """POST /v1/txn: MULTI ... EXEC in one call, one result each, errors in place; a command
    refused while queueing runs nothing and is named by its index."""
    def txn(commands: object) -> tuple[int, dict[str, str], bytes]:
        return call(node, "POST", "/v1/txn", json.dumps({"commands": commands}).encode())

    status, _, body = txn([["SET", "tx/a", "1"], ["INCRBY", "tx/a", "41"],
                           ["SET", "tx/w", "word"], ["INCR", "tx/w"],
                           ["SET", "tx/bin", b64(b"\xff\x00")], ["GET", "tx/bin"]])
    assert status == 200, body
    results = json.loads(body)["results"]
    assert results[:3] == [{"value": "OK"}, {"value": 42}, {"value": "OK"}]
    assert results[3]["error"]["code"] == "NOT_INTEGER"
    assert results[4:] == [{"value": "OK"}, {"value": b64(b"\xff\x00")}]
    status, _, body = txn([["SET", "tx/b", "1"], ["SET", "tx/b"]])
    assert status == 400 and json.loads(body)["error"]["command"] == 1, body
    assert call(node, "GET", "/v1/kv/tx/b")[0] == 404  # nothing ran
    status, _, body = txn([["WATCH", "tx/"]])
    assert status == 400 and json.loads(body)["error"]["code"] == "TRANSACTION", body
    for bad in (b"[", b"{}", b'{"commands": []}', b'{"commands": [[]]}',
                b'{"commands": [["SET", 1, 2]]}', b'{"commands": [["GET", {"base64": "!"}]]}'):
        assert error_of(call(node, "POST", "/v1/txn", bad)) == (400, "BAD_REQUEST"), bad
    assert error_of(call(node, "GET", "/v1/txn"))[0] == 405
    assert call(node, "GET", "/v1/kv/tx/a")[2] == b"42"


def test_put_nx_xx_and_ttl(node: Kvd) -> None:
    assert error_of(call(node, "PUT", "/v1/kv/cond?xx", b"1")) == (412, "PRECONDITION_FAILED")
    assert call(node, "GET", "/v1/kv/cond")[0] == 404
    assert (call(node, "PUT", "/v1/kv/cond?nx", b"1")[0], call(node, "GET", "/v1/kv/cond")[2]) \
        == (200, b"1")
    assert error_of(call(node, "PUT", "/v1/kv/cond?nx", b"2"))[0] == 412
    assert (call(node, "PUT", "/v1/kv/cond?xx", b"3")[0], call(node, "GET", "/v1/kv/cond")[2]) \
        == (200, b"3")
    assert error_of(call(node, "PUT", "/v1/kv/cond?nx&xx", b"4"))[0] == 400
    status, _, body = call(node, "PUT", "/v1/kv/cond?ttl=100", b"5")
    assert (status, json.loads(body)) == (200, {"ok": True})
    with node.client() as c:
        assert c.get("cond") == b"5" and 0 < c.ttl("cond") <= 100
    assert error_of(call(node, "PUT", "/v1/kv/cond?ttl=soon", b"6"))[0] == 400
    assert error_of(call(node, "PUT", "/v1/kv/", b"x")) == (400, "BAD_REQUEST")


def test_a_listing_pages_until_its_cursor_is_null_and_names_every_key_once(node: Kvd) -> None:
    keys = {f"ls/{i:03d}".encode() for i in range(60)} | {b"ls/\xff\xfe", b"ls/*[?]"}
    with node.client() as c:
        c.mset({k: b"v:" + k for k in keys} | {b"lt/outside": b"x", b"ls/bin": b"\x80\x81"})
    keys.add(b"ls/bin")

    def as_bytes(k: object) -> bytes:
        return base64.b64decode(k["base64"]) if isinstance(k, dict) else k.encode()

    seen, cursor, pages = [], None, 0
    while True:
        doc = get_json(node, "/v1/kv?prefix=ls/&limit=7" + (f"&cursor={cursor}" if cursor else ""))
        assert set(doc) == {"keys", "cursor"}
        seen += [as_bytes(k) for k in doc["keys"]]
        cursor, pages = doc["cursor"], pages + 1
        if cursor is None:
            break
    assert sorted(seen) == sorted(keys) and pages > 1  # each key once; more than one page
    assert {"base64": base64.b64encode(b"ls/\xff\xfe").decode()} in get_json(
        node, "/v1/kv?prefix=ls/%FF")["keys"]
    items, cursor = [], None
    while True:
        doc = get_json(node, "/v1/kv?prefix=ls/&limit=25&values=1"
                       + (f"&cursor={cursor}" if cursor else ""))
        assert set(doc) == {"items", "cursor"}
        items += doc["items"]
        cursor = doc["cursor"]
        if cursor is None:
            break
    got = {as_bytes(i["key"]): i["value"] for i in items}
    assert len(items) == len(got) == len(keys)
    assert got[b"ls/bin"] == b64(b"\x80\x81") and got[b"ls/001"] == "v:ls/001"
    assert got[b"ls/\xff\xfe"] == b64(b"v:ls/\xff\xfe")
    assert get_json(node, "/v1/kv?prefix=nothing-here/") == {"keys": [], "cursor": None}
    assert error_of(call(node, "GET", "/v1/kv?limit=0"))[0] == 400
    assert error_of(call(node, "GET", "/v1/kv?cursor=-1"))[0] == 400


# -- node routes -----------------------------------------------------------------------------


def test_info_members_and_health(node: Kvd) -> None:
    doc = get_json(node, "/v1/info")
    assert doc["name"] == "h1" and doc["http_port"] == node.http_port
    with node.client() as c:
        assert doc["keys"] == c.dbsize()
    members = get_json(node, "/v1/members")
    assert [(m["name"], m["status"], m["self"]) for m in members] == [("h1", "alive", True)]
    status, headers, body = call(node, "GET", "/health")
    assert (status, headers["content-type"], json.loads(body)) == (200, "application/json",
                                                                   {"status": "ok"})


def test_metrics_parse_with_prometheus_own_parser(node: Kvd) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with node.client() as c:
        c.set("metric:a", "1")
        c.get("metric:a")
    status, headers, body = call(node, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert all(n.startswith(("kv_", "process_", "python_")) for n in families), list(families)

    def value(sample: str, /, **labels: str) -> float:
        return next(s.value for f in families.values() for s in f.samples
                    if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("kv_up") == 1
    assert value("kv_info", name="h1") == 1
    assert families["kv_commands"].type == "counter"
    assert {s.labels["command"] for s in families["kv_commands"].samples} >= {"SET", "GET"}
    assert value("kv_commands_total", command="SET") >= 1
    assert families["kv_loop_turn_seconds"].type == "histogram"
    samples = families["kv_loop_turn_seconds"].samples
    assert {s.name for s in samples} == {"kv_loop_turn_seconds_bucket",
                                        "kv_loop_turn_seconds_count", "kv_loop_turn_seconds_sum"}
    assert value("kv_loop_turn_seconds_bucket", le="+Inf") == value("kv_loop_turn_seconds_count")
    assert value("kv_members", status="alive") == 1
    assert value("kv_connected_clients", door="http") >= 1  # this scrape's own connection
    for name in ("kv_uptime_seconds", "kv_expiring_keys", "kv_tombstones", "kv_memory_rss_bytes",
                 "kv_log_bytes", "kv_log_fsyncs", "kv_gossip_dropped"):
        assert name in families, name
    # kv_keys is the live key count: DBSIZE, with nothing written in between
    with node.client() as c:
        dbsize = c.dbsize()
    families = {f.name: f for f in text_string_to_metric_families(
        call(node, "GET", "/metrics")[2].decode())}
    assert value("kv_keys") == dbsize > 0


def test_metrics_of_a_two_node_cluster(kvd_factory: Callable[..., Kvd]) -> None:
    """What only a cluster (and an error) shows: lag per peer, anti-entropy, compactions."""
    from prometheus_client.parser import text_string_to_metric_families

    from shared.errors import ServerError

    a = kvd_factory("a")
    b = kvd_factory("b", extra=["--join", a.address])
    with a.client() as c:
        with pytest.raises(ServerError):
            c.call("GET")  # wrong arity: an error reply, counted by its code
        c.set("m2/k", "v")
    wait_for(lambda: call(b, "GET", "/v1/kv/m2/k")[2] == b"v", what="the write to reach b")

    def families() -> dict:
        text = call(a, "GET", "/metrics")[2].decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    def lag_of_b() -> bool:
        fams = families()
        return [s.labels for s in fams["kv_replication_lag_seconds"].samples] == [{"peer": "b"}]

    wait_for(lag_of_b, what="a to list b's replication lag")
    fams = families()
    errors = {s.labels["code"]: s.value for s in fams["kv_command_errors"].samples
              if s.name == "kv_command_errors_total"}
    assert errors.get("WRONG_ARITY", 0) >= 1, errors
    for name in ("kv_log_compactions", "kv_antientropy_rounds", "kv_antientropy_keys_pulled",
                 "kv_antientropy_keys_pushed", "kv_gossip_dropped"):
        assert fams[name].type == "counter", name
        assert [s.name for s in fams[name].samples] == [f"{name}_total"], name
    assert fams["kv_replication_lag_seconds"].type == "gauge"
    (alive,) = [s.value for s in fams["kv_members"].samples if s.labels["status"] == "alive"]
    assert alive == 2


def test_gossip_dropped_counts_the_clusters_drops_only() -> None:
    """Sans-IO: INFO has other `dropped_` keys (the native door's `dropped_replies`); the
    metric is the cluster's dropped peer messages and nothing else."""
    from prometheus_client.parser import text_string_to_metric_families

    from kvd.cluster.cluster import Cluster
    from kvd.cluster.settings import Settings
    from kvd.doors import metrics
    from kvd.state.hlc import wall_ms
    from kvd.state.node import Node
    from shared.codec import MsgType, Peer

    node = Node("m1", "127.0.0.1:1")
    cluster = Cluster(node, "127.0.0.1:2", Settings(), wall_ms())
    node.info_sources.append(lambda: {"dropped_replies": 1000})  # as the native door says
    for _ in range(3):
        cluster.receive(Peer(MsgType.HEARTBEAT, "another", "x", {}), wall_ms())
    cluster.receive(Peer(MsgType.GOSSIP, "kv", "stranger", {}), wall_ms())
    cluster.count_bad("malformed")
    text = metrics.render(metrics.Collector(node, lambda: None)).decode()
    (dropped,) = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                  if s.name == "kv_gossip_dropped_total"]
    assert dropped == 5


# -- the simple routes ------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed "
                    "(apt-get install curl): the curl commands of the README cannot be run")
def test_the_simple_routes_exactly_as_curl_users_type_them(node: Kvd) -> None:
    base = f"http://localhost:{node.http_port}"

    def curl(*args: str) -> tuple[str, str]:
        done = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True,
                              text=True, timeout=30)
        body, _, code = done.stdout.rpartition("\n")
        return code, body

    assert curl(f"{base}/set?key=myKey&value=myValue") == ("200", "OK")
    assert curl(f"{base}/get?key=myKey") == ("200", "myValue")
    assert curl(f"{base}/get?key=noSuchKey")[0] == "404"
    assert curl("-X", "POST", "-H", "Content-Type: application/json",
                "-d", '{"key": "jsonKey", "value": "from json"}', f"{base}/put") == ("200", "OK")
    assert curl("-X", "POST", "-d", "key=formKey&value=from+form", f"{base}/put") == ("200", "OK")
    assert curl(f"{base}/get?key=jsonKey") == ("200", "from json")
    assert curl(f"{base}/get?key=formKey") == ("200", "from form")
    assert curl("-X", "DELETE", f"{base}/delete?key=myKey") == ("200", "OK")
    assert curl("-X", "DELETE", f"{base}/delete?key=myKey")[0] == "404"
    assert curl("-X", "PUT", "--data-binary", "via curl", f"{base}/v1/kv/curl/k")[0] == "200"
    assert curl(f"{base}/v1/kv/curl/k") == ("200", "via curl")
    code, body = curl(f"{base}/v1/kv?prefix=curl/")
    assert (code, json.loads(body)) == ("200", {"keys": ["curl/k"], "cursor": None})


def test_the_simple_routes_through_urllib(node: Kvd) -> None:
    base = f"http://127.0.0.1:{node.http_port}"
    with urllib.request.urlopen(f"{base}/set?key=u%20k&value=%E2%9C%93") as r:
        assert (r.status, r.read()) == (200, b"OK")
    with urllib.request.urlopen(f"{base}/get?key=u%20k") as r:
        assert r.read() == "✓".encode()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{base}/get?key=u-missing")
    assert missing.value.code == 404
    assert json.loads(missing.value.read())["error"]["code"] == "NOT_FOUND"
    assert call(node, "POST", "/put", json.dumps({"key": "uj", "value": "1"}).encode(),
                {"Content-Type": "application/json; charset=utf-8"})[::2] == (200, b"OK")
    assert call(node, "POST", "/put", b"key=uf&value=2",
                {"Content-Type": "application/x-www-form-urlencoded"})[::2] == (200, b"OK")
    with node.client() as c:
        assert c.mget("uj", "uf") == [b"1", b"2"]
    for body, kind in ((b'{"key": "k"}', "application/json"), (b"[1, 2]", "application/json"),
                       (b'{"key": 1, "value": "v"}', "application/json"),
                       (b"not json", "application/json"), (b"key=only", "text/plain")):
        assert error_of(call(node, "POST", "/put", body, {"Content-Type": kind})) == (
            400, "BAD_REQUEST"), body
    assert error_of(call(node, "GET", "/set?key=k"))[0] == 400
    assert call(node, "DELETE", "/delete?key=uj")[::2] == (200, b"OK")
    assert error_of(call(node, "DELETE", "/delete?key=uj")) == (404, "NOT_FOUND")


def test_json_that_python_cannot_take_is_a_400_not_a_dead_node(node: Kvd) -> None:
    """Nesting past Python's recursion limit, and lone surrogates, which UTF-8 cannot hold."""
    for body in (b"[" * 3000, b'{"key": "\\ud800", "value": "v"}',
                 b'{"key": "k", "value": "\\udfff"}'):
        status, code = error_of(call(node, "POST", "/put", body,
                                     {"Content-Type": "application/json"}))
        assert (status, code) == (400, "BAD_REQUEST"), body
    still_serves(node)


# -- errors --------------------------------------------------------------------------------


def test_unknown_routes_wrong_methods_and_bad_encoding(node: Kvd) -> None:
    assert error_of(call(node, "GET", "/nope")) == (404, "NOT_FOUND")
    assert error_of(call(node, "GET", "/v1/kvx")) == (404, "NOT_FOUND")
    for method, target, allow in (("POST", "/health", "GET"), ("PUT", "/metrics", "GET"),
                                  ("GET", "/put", "POST"), ("GET", "/delete?key=x", "DELETE"),
                                  ("POST", "/v1/kv/k", "GET, PUT, DELETE, PATCH"),
                                  ("DELETE", "/v1/kv", "GET")):
        result = call(node, method, target)
        assert error_of(result) == (405, "METHOD_NOT_ALLOWED"), (method, target)
        assert result[1]["allow"] == allow
    for target in ("/v1/kv/bad%zz", "/v1/kv/bad%4", "/get?key=%g1", "/v1/kv?prefix=%",
                   "/v1/kv?prefix=%FF%"):
        assert error_of(call(node, "GET", target)) == (400, "BAD_REQUEST"), target


def test_a_body_over_max_value_size_is_refused_before_it_is_sent(node: Kvd) -> None:
    sock = raw(node)
    # 100 MB announced, 10 bytes sent: the 413 cannot wait for the rest
    sock.sendall(b"PUT /v1/kv/huge HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
                 + b"x" * 10)
    status, code = error_of(read_response(sock.makefile("rb")))
    assert (status, code) == (413, "TOO_LARGE")
    sock.close()
    chunked = raw(node)  # no Content-Length to judge by: refused once the body outgrows it,
    chunk = b"x" * 1000  # not buffered to its end (which never comes here)
    chunked.sendall(b"PUT /v1/kv/huge HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"%x\r\n%b\r\n" % (len(chunk), chunk) * 5)
    assert error_of(read_response(chunked.makefile("rb")))[0] == 413
    chunked.close()
    assert call(node, "GET", "/v1/kv/huge")[0] == 404
    assert call(node, "PUT", "/v1/kv/huge", b"x" * MAX_VALUE)[0] == 200  # the limit itself fits
    still_serves(node)


def test_headers_over_16_kib_get_431_and_a_target_over_8_kib_gets_414(node: Kvd) -> None:
    big = "a" * (17 * 1024)
    assert error_of(call(node, "GET", "/health", headers={"X-Big": big}))[0] == 431
    many = {f"X-H{i}": "b" * 100 for i in range(200)}  # 20 KiB in small headers
    assert error_of(call(node, "GET", "/health", headers=many))[0] == 431
    assert error_of(call(node, "GET", "/v1/kv/" + "k" * (9 * 1024)))[0] == 414
    sock = raw(node)  # a request line that never ends: refused once it is too long
    sock.sendall(b"GET /v1/kv/" + b"k" * (20 * 1024))
    assert read_response(sock.makefile("rb"))[0] == 414
    sock.close()
    assert call(node, "GET", "/v1/kv/" + "k" * 1000)[0] == 404  # long but allowed
    still_serves(node)


def test_garbage_gets_400_and_the_node_still_serves(node: Kvd) -> None:
    for garbage in (b"\x00\xff\xfe garbage\r\n\r\n", b"GET\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
                    b"GET / HTTP/1.1\r\nbad header line\r\n\r\n"):
        sock = raw(node)
        sock.sendall(garbage)
        status, code = error_of(read_response(sock.makefile("rb")))
        assert (status, code) == (400, "BAD_REQUEST"), garbage
        assert until_closed(sock) == b""
        sock.close()
    still_serves(node)


def test_a_slowloris_client_is_closed_after_the_header_timeout(node: Kvd) -> None:
    before = info(node)["http_timeouts"]
    sock = raw(node)
    sock.settimeout(0.05)  # a polling step while trickling, not a guess at the timeout
    sock.sendall(b"GET /health HTTP/1.1\r\n")
    deadline = time.monotonic() + 20 * HEADER_TIMEOUT_S
    closed = False
    while not closed and time.monotonic() < deadline:
        try:
            sock.sendall(b"X")  # one header byte at a time, never the end of the headers
            closed = sock.recv(1024) == b""
        except TimeoutError:
            continue
        except OSError:  # reset: closed as well
            closed = True
        still_serves(node)  # everyone else is served meanwhile
    assert closed, "the trickling client was never closed"
    assert info(node)["http_timeouts"] > before
    sock.close()


def test_expect_100_continue_gets_100_then_the_response(node: Kvd) -> None:
    sock = raw(node)
    f = sock.makefile("rb")
    sock.sendall(b"PUT /v1/kv/continued HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    assert read_response(f)[0] == 100  # before any of the body was sent
    sock.sendall(b"hello")
    status, _, body = read_response(f)
    assert (status, json.loads(body)) == (200, {"ok": True})
    sock.sendall(b"PUT /v1/kv/continued HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    assert read_response(f)[0] == 413  # too big: refused instead of a 100
    sock.close()
    assert call(node, "GET", "/v1/kv/continued")[2] == b"hello"


def test_chunked_request_bodies(node: Kvd) -> None:
    sock = raw(node)
    f = sock.makefile("rb")
    sock.sendall(b"PUT /v1/kv/chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabc\r\n")
    sock.sendall(b"4\r\n\x00\xff\r\n\r\n0\r\n\r\n")
    assert read_response(f)[0] == 200
    sock.sendall(b"GET /v1/kv/chunky HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection
    assert read_response(f)[::2] == (200, b"abc\x00\xff\r\n")
    sock.close()


def test_pipelined_requests_are_answered_in_order(node: Kvd) -> None:
    sock = raw(node)
    requests = b"".join(
        b"PUT /v1/kv/pipe/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%d" % (
            i, len(b"%d" % i), i) + b"GET /v1/kv/pipe/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
        for i in range(50))
    sock.sendall(requests + b"GET /v1/kv/pipe/none HTTP/1.1\r\nHost: x\r\n\r\n")
    f = sock.makefile("rb")
    for i in range(50):
        assert read_response(f)[0] == 200
        assert read_response(f)[::2] == (200, b"%d" % i)
    assert read_response(f)[0] == 404
    sock.close()


def test_connection_close_and_http_1_0_end_the_connection(node: Kvd) -> None:
    for request in (b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    b"GET /health HTTP/1.0\r\n\r\n"):
        sock = raw(node)
        sock.sendall(request)
        got = until_closed(sock)  # a client reading to EOF is not left waiting
        assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b'{"status":"ok"}\n'), got
        sock.close()


# -- SSE -------------------------------------------------------------------------------------


def put(node: Kvd, key: str, value: bytes) -> None:
    assert call(node, "PUT", f"/v1/kv/{key}", value)[0] == 200


def test_watch_streams_writes_under_its_prefix_only(node: Kvd) -> None:
    sse = Sse(node, "/v1/watch?prefix=w1/")
    put(node, "w1/a", b"1")
    put(node, "other/a", b"x")
    with node.client() as c:  # another door's writes are changes too
        c.set(b"w1/\xff", b"\xfe")
        c.delete("w1/a", "other/a")
    put(node, "w1/b", b"2")
    events = [sse.change() for _ in range(4)]
    assert [(e["op"], e["key"], e["value"]) for e in events] == [
        ("set", "w1/a", "1"), ("set", b64(b"w1/\xff"), b64(b"\xfe")), ("del", "w1/a", None),
        ("set", "w1/b", "2")]
    assert all(e["origin"] == "h1" for e in events)
    cursors = [int(e["cursor"]) for e in events]  # strings: JavaScript's numbers stop at 2**53
    assert cursors == sorted(set(cursors))
    sse.close()


def test_last_event_id_resumes_exactly_after_that_event(node: Kvd) -> None:
    first = Sse(node, "/v1/watch?prefix=w2/")
    for i in range(6):
        put(node, f"w2/{i}", b"%d" % i)
    seen = [first.change() for _ in range(3)]
    first.close()  # gone after the third event, as a browser tab dropping off
    put(node, "w2/6", b"6")  # written while nobody listened
    resumed = Sse(node, "/v1/watch?prefix=w2/", {"Last-Event-ID": str(seen[-1]["cursor"])})
    rest = [resumed.change() for _ in range(4)]
    keys = [e["key"] for e in seen + rest]
    assert keys == [f"w2/{i}" for i in range(7)]  # no loss, no duplicate
    put(node, "w2/7", b"7")
    live = resumed.change()
    assert live["key"] == "w2/7"  # and then live
    resumed.close()
    again = Sse(node, f"/v1/watch?prefix=w2/&from={live['cursor']}")
    put(node, "w2/8", b"8")
    assert again.change()["key"] == "w2/8"  # `from=` is the same resumption
    again.close()


def test_a_cursor_the_history_no_longer_holds_resets_with_the_current_state(node: Kvd) -> None:
    put(node, "w3/a", b"1")
    put(node, "w3/b", b"2")
    assert call(node, "DELETE", "/v1/kv/w3/b")[0] == 200
    sse = Sse(node, "/v1/watch?prefix=w3/&from=1")
    reset = sse.next()
    assert reset["event"] == "reset" and "reason" in json.loads(reset["data"])
    state = sse.change()
    assert (state["op"], state["key"], state["value"]) == ("set", "w3/a", "1")
    put(node, "w3/c", b"3")
    assert sse.change()["key"] == "w3/c"  # the deleted w3/b was not in the state
    sse.close()


def test_an_expiry_reaches_the_stream_as_op_expired_without_an_id(node: Kvd) -> None:
    sse = Sse(node, "/v1/watch?prefix=w5/")
    with node.client() as c:
        c.set("w5/brief", "x", px=50)
    written = sse.change()
    assert (written["op"], written["key"]) == ("set", "w5/brief")
    expired = sse.next()  # the store reclaims it within the socket's timeout
    assert "id" not in expired, expired  # not a change of the history: no resume point
    assert json.loads(expired["data"]) | {"cursor": 0} == {
        "op": "expired", "key": "w5/brief", "value": None, "origin": None, "cursor": 0}
    sse.close()
    resumed = Sse(node, "/v1/watch?prefix=w5/", {"Last-Event-ID": str(written["cursor"])})
    put(node, "w5/after", b"1")
    assert resumed.change()["key"] == "w5/after"  # nothing replayed between the two
    resumed.close()


def test_an_idle_stream_hears_heartbeats(node: Kvd) -> None:
    sse = Sse(node, "/v1/watch?prefix=w4-quiet/")
    wait_for(lambda: sse.resp.readline() == b": heartbeat\n", what="a heartbeat comment")
    put(node, "w4-quiet/k", b"v")
    assert sse.change()["key"] == "w4-quiet/k"
    sse.close()


# -- every door, every node -----------------------------------------------------------------


def test_a_write_through_http_is_seen_through_every_door_and_on_another_node(
        kvd_factory: Callable[..., Kvd]) -> None:
    a = kvd_factory("a")
    b = kvd_factory("b", extra=["--join", a.address])
    assert call(a, "PUT", "/v1/kv/door/x%FF", "héllo".encode())[0] == 200
    assert call(a, "GET", "/set?key=door/simple&value=1")[2] == b"OK"
    with a.client() as c:
        assert c.get(b"door/x\xff") == "héllo".encode() and c.get("door/simple") == b"1"
    r = redis.Redis(port=a.resp_port, socket_timeout=10)
    assert r.get(b"door/x\xff") == "héllo".encode()
    r.set("door/from-resp", "r")  # and the other way round
    assert call(a, "GET", "/v1/kv/door/from-resp")[2] == b"r"
    wait_for(lambda: call(b, "GET", "/v1/kv/door/x%FF")[2] == "héllo".encode(),
             what="the HTTP write to reach b")

    def simple_on_b() -> bool:  # written after the first: it may arrive a moment later
        with b.client() as c:
            return c.get("door/simple") == b"1"

    wait_for(simple_on_b, what="the simple route's write to reach b")


CONCURRENT = 200
EACH = 5  # PUT + GET pairs on every connection


def test_200_concurrent_keep_alive_requests(node: Kvd) -> None:
    """200 connections open at once (a barrier holds each until all are), each doing its
    requests on the one kept-alive connection."""
    results: dict[tuple[int, int], tuple[int, bytes]] = {}
    errors: list[BaseException] = []
    all_open = threading.Barrier(CONCURRENT, timeout=60)
    ports: set[tuple[int, int]] = set()  # (thread, local port): the connection was never new

    def exchange(conn: http.client.HTTPConnection, t: int, i: int) -> None:
        body = b"%d-%d" % (t, i)
        conn.request("PUT", f"/v1/kv/cc/{t}/{i}", body=body)
        put_status = conn.getresponse()
        put_status.read()
        conn.request("GET", f"/v1/kv/cc/{t}/{i}")
        resp = conn.getresponse()
        results[(t, i)] = (put_status.status, resp.read())
        assert resp.getheader("connection") is None  # kept alive
        ports.add((t, conn.sock.getsockname()[1]))

    def worker(t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=30)
        try:
            exchange(conn, t, 0)  # connected and served ...
            all_open.wait()  # ... and held open until every other one is too
            for i in range(1, EACH):
                exchange(conn, t, i)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
            all_open.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(t,), daemon=True)
               for t in range(CONCURRENT)]
    deadline = time.monotonic() + 90
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "requests still unanswered after 90 s"
    assert not errors, errors[:3]
    assert results == {(t, i): (200, b"%d-%d" % (t, i))
                       for t in range(CONCURRENT) for i in range(EACH)}
    assert len(ports) == CONCURRENT  # one connection per thread, all its requests on it
    with node.client() as c:
        assert sum(1 for _ in c.scan_iter(match="cc/*")) == CONCURRENT * EACH


def test_an_sse_reader_that_stops_reading_is_dropped_and_others_are_served(
        kvd_factory: Callable[..., Kvd]) -> None:
    """A reader with a tiny receive buffer that never reads: once 32 MiB (OUTPUT_LIMIT) wait
    for it, it is closed and counted; a reading watcher and plain requests go on."""
    node = kvd_factory("slow")
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    stuck.settimeout(30)
    stuck.connect(("127.0.0.1", node.http_port))
    stuck.sendall(b"GET /v1/watch?prefix=slow/ HTTP/1.1\r\nhost: x\r\n\r\n")
    live = Sse(node, "/v1/watch?prefix=live/")
    wait_for(lambda: info(node)["http_streams"] == 2, what="both streams to open")
    value = b"v" * (4 << 20)
    with node.client(timeout=30) as c:
        for i in range(40):  # 160 MiB at most; the limit is passed after about 9
            c.set(b"slow/%d" % i, value)
            if info(node)["http_dropped_slow"]:
                break
    assert info(node)["http_dropped_slow"] == 1, info(node)
    assert info(node)["http_streams"] == 1
    put(node, "live/a", b"1")
    assert live.change()["key"] == "live/a"  # the reader that reads is still served
    still_serves(node)
    live.close()
    stuck.settimeout(10)
    got = 0
    while chunk := stuck.recv(1 << 20):  # what was in flight, then the end: closed
        got += len(chunk)
    assert 0 < got < 32 << 20
    stuck.close()


# -- hypothesis ----------------------------------------------------------------------------


def test_the_router_never_raises_whatever_the_request() -> None:
    """Sans-IO: any method, target, headers and body get a Response or a Stream."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from kvd.doors.httproutes import Response, Router, Stream
    from kvd.state.context import Context
    from kvd.state.hlc import HybridClock
    from kvd.state.node import Node

    node = Node("n1", "127.0.0.1:1", HybridClock(lambda: 1_000_000), max_value=1024)
    router = Router(node, lambda: (True, ""), lambda: b"")
    paths = st.sampled_from([b"/v1/kv/", b"/v1/kv", b"/v1/watch", b"/v1/info", b"/v1/members",
                             b"/health", b"/metrics", b"/set", b"/get", b"/put", b"/delete",
                             b"/", b"", b"*", b"/v1/kv/a/b", b"/v1/kv/%FF", b"/v1/kv/%"])
    params = st.lists(st.tuples(
        st.sampled_from([b"key", b"value", b"prefix", b"limit", b"cursor", b"values", b"ttl",
                         b"nx", b"xx", b"from", b"%", b"&", b"="]),
        st.one_of(st.binary(max_size=12), st.sampled_from(
            [b"1", b"0", b"-1", b"99999999999999999999", b"%FF", b"%zz", b"a%", b"\xff"]))),
        max_size=5)
    targets = st.builds(lambda p, q, extra: p + (b"?" + b"&".join(k + b"=" + v for k, v in q)
                                                 if q else b"") + extra,
                        paths, params, st.binary(max_size=6))
    bodies = st.one_of(st.binary(max_size=64), st.sampled_from(
        [b'{"key": "k", "value": "v"}', b'{"key": "\\ud800", "value": "v"}', b"[" * 2000,
         b'{"key": 1}', b"key=k&value=v", b"key=%FF&value=%zz", b"null", b'"s"']))
    headers = st.dictionaries(
        st.sampled_from([b"content-type", b"last-event-id", b"accept", b"x-any"]),
        st.one_of(st.binary(max_size=12), st.sampled_from(
            [b"application/json", b"application/x-www-form-urlencoded", b"1", b"0",
             b"18446744073709551616"])), max_size=3)
    methods = st.one_of(st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"]),
                        st.text(max_size=8))

    text = st.lists(st.sampled_from(["a", "/", "é", "\x00", "\ud800", "\udfff", "\U0001f600"]),
                    max_size=4).map("".join)
    json_doc = st.one_of(st.fixed_dictionaries({"key": text, "value": text}),
                         st.dictionaries(st.sampled_from(["key", "value", "x"]),
                                         st.one_of(text, st.integers(), st.none())))
    json_puts = st.tuples(st.just("POST"), st.just(b"/put"),
                          st.just({b"content-type": b"application/json"}),
                          st.one_of(json_doc.map(lambda d: json.dumps(d).encode()),
                                    st.integers(0, 3000).map(lambda n: b"[" * n + b"]" * n)))
    requests = st.one_of(st.tuples(methods, targets, headers, bodies), json_puts)

    @settings(max_examples=400, deadline=None)
    @given(requests)
    def check(request: tuple[str, bytes, dict[bytes, bytes], bytes]) -> None:
        method, target, hdrs, body = request
        result = router.handle(method, target, hdrs, body, Context(now=1_000_000, wall=1))
        assert isinstance(result, Response | Stream)
        if isinstance(result, Response):
            assert 200 <= result.status < 600 and isinstance(result.body, bytes)
            if result.status >= 400:
                assert set(json.loads(result.body)["error"]) == {"code", "message"}

    check()


def test_random_bytes_on_the_port_never_cost_the_node(node: Kvd) -> None:
    """Hypothesis throws bytes (and half-requests) at the live port; after each, the node
    answers a well-behaved client and its data is intact."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    put(node, "fuzz/safe", b"1")
    pieces = st.one_of(st.binary(max_size=64), st.sampled_from(
        [b"GET ", b"PUT ", b"POST ", b"/v1/kv/fuzz/x", b"/put", b"/v1/watch?prefix=",
         b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", b"Host: x\r\n", b"Content-Length: 3\r\n",
         b"Content-Length: 99999999\r\n", b"Transfer-Encoding: chunked\r\n",
         b"Expect: 100-continue\r\n", b"Content-Type: application/json\r\n", b"\r\n",
         b"5\r\nhello\r\n", b"0\r\n\r\n", b"ffffffffff\r\n", b"\x00", b"%", b"[[[["]))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(pieces, max_size=10))
    def throw(parts: list[bytes]) -> None:
        send_and_close(node.http_port, b"".join(parts))
        assert call(node, "GET", "/v1/kv/fuzz/safe")[::2] == (200, b"1")

    throw()
    still_serves(node)
    assert Path(node.data_dir).exists()


class _SmallDiskKvd(Kvd):
    """A kvd whose files cannot grow past 64 KiB (RLIMIT_FSIZE): a full disk, on demand."""

    def argv(self) -> list[str]:
        return ["prlimit", f"--fsize={64 * 1024}", *super().argv()]


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit to make "
                    "the log unwritable")
def test_health_is_503_with_a_reason_while_the_log_cannot_be_written(tmp_path: Path) -> None:
    node = _SmallDiskKvd(tmp_path, "full", ["--fsync", "always"]).start()
    try:
        still_serves(node)
        status = 200
        for i in range(1000):  # 1000 x 1 KB is well past the limit
            status, _, body = call(node, "PUT", f"/v1/kv/fill/{i}", b"v" * 1000)
            if status != 200:
                break
        assert status == 503 and json.loads(body)["error"]["code"] == "IO_ERROR", body
        assert call(node, "GET", f"/v1/kv/fill/{i}")[0] == 404  # refused, not applied
        assert call(node, "GET", "/v1/kv/fill/0")[2] == b"v" * 1000  # reads go on
        status, _, body = call(node, "GET", "/health")
        doc = json.loads(body)
        assert (status, doc["status"]) == (503, "unavailable") and doc["reason"], doc
    finally:
        node.stop()
