"""PATCH /v1/kv/<key>?ttl=S | ?persist on a live kvd: the expiry changes, the value does not
travel and is not replaced (a write made meanwhile stays), a missing key is 404."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from tests.procs import Kvd, running


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kvd]:
    with running(tmp_path_factory.mktemp("ttl"), "t1") as kvd:
        yield kvd


def call(node: Kvd, method: str, target: str,
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
    try:
        conn.request(method, target, body=body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def pttl(node: Kvd, key: str) -> int:
    with node.client() as c:
        return c.call("PTTL", key)


def test_ttl_sets_the_expiry_and_keeps_the_value(node: Kvd) -> None:
    with node.client() as c:
        c.set("p/k", "v1")
    status, headers, body = call(node, "PATCH", "/v1/kv/p/k?ttl=100")
    assert (status, json.loads(body)) == (200, {"ok": True})
    assert headers["content-type"] == "application/json"
    assert 99_000 < pttl(node, "p/k") <= 100_000
    assert call(node, "GET", "/v1/kv/p/k")[2] == b"v1"


def test_a_write_between_is_not_lost(node: Kvd) -> None:
    """What the console's old GET-then-PUT lost: the PATCH carries no value to write back."""
    with node.client() as c:
        c.set("p/race", "old")
        c.set("p/race", "new")  # as if written after the console had read "old"
    assert call(node, "PATCH", "/v1/kv/p/race?ttl=50")[0] == 200
    assert call(node, "GET", "/v1/kv/p/race")[2] == b"new"


def test_persist_removes_the_expiry(node: Kvd) -> None:
    with node.client() as c:
        c.set("p/persist", "v", ex=60)
    status, _, body = call(node, "PATCH", "/v1/kv/p/persist?persist")
    assert (status, json.loads(body)) == (200, {"ok": True})
    assert pttl(node, "p/persist") == -1
    assert call(node, "PATCH", "/v1/kv/p/persist?persist")[0] == 200  # none to remove: fine


@pytest.mark.parametrize("query", ["ttl=5", "persist"])
def test_a_missing_key_is_404(node: Kvd, query: str) -> None:
    status, _, body = call(node, "PATCH", f"/v1/kv/p/none?{query}")
    assert status == 404 and json.loads(body)["error"]["code"] == "NOT_FOUND"
    assert call(node, "GET", "/v1/kv/p/none")[0] == 404  # and it was not created


@pytest.mark.parametrize("query", ["", "ttl=0", "ttl=-1", "ttl=x", "ttl=5&persist"])
def test_bad_queries_are_400_and_change_nothing(node: Kvd, query: str) -> None:
    with node.client() as c:
        c.set("p/bad", "v", ex=60)
    status, _, body = call(node, "PATCH", f"/v1/kv/p/bad?{query}")
    assert status == 400 and json.loads(body)["error"]["code"] == "BAD_REQUEST", body
    assert 0 < pttl(node, "p/bad") <= 60_000


def test_allow_names_patch(node: Kvd) -> None:
    status, headers, _ = call(node, "POST", "/v1/kv/p/k")
    assert status == 405 and "PATCH" in headers["allow"]
