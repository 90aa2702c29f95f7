"""The console's static route on a live kvd: its three files with their content types and
security headers, nothing else under /console/ (no path traversal), no cross-origin reads of
the API, and /v1/members carrying what the cluster view needs (members' HTTP doors, digests)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator

import pytest

from kvd.doors import static
from tests.procs import Kvd, running


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kvd]:
    with running(tmp_path_factory.mktemp("console"), "c1") as kvd:
        yield kvd


def call(node: Kvd, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
    try:
        conn.request(method, target)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw_status(node: Kvd, target: bytes) -> int:
    """The status for a target sent byte for byte (http.client would normalise `..`)."""
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize(("target", "kind"), [
    ("/", "text/html; charset=utf-8"),
    ("/console/index.html", "text/html; charset=utf-8"),
    ("/console/console.css", "text/css; charset=utf-8"),
    ("/console/console.js", "text/javascript; charset=utf-8"),
])
def test_files_with_their_types_and_security_headers(node: Kvd, target: str, kind: str) -> None:
    status, headers, body = call(node, "GET", target)
    assert status == 200 and headers["content-type"] == kind and body
    assert headers["content-security-policy"] == static.CSP
    assert "script-src 'self'" in static.CSP and "'unsafe-inline'" not in static.CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in headers


def test_the_page_loads_only_its_own_files(node: Kvd) -> None:
    page = call(node, "GET", "/")[2].decode()
    assert '<script src="/console/console.js"' in page and "<script>" not in page
    assert "http://" not in page and "https://" not in page  # no CDN


@pytest.mark.parametrize("target", [
    b"/console/x", b"/console/", b"/console/../kvd.toml", b"/console/%2e%2e/kvd.toml",
    b"/console/..%2fpyproject.toml", b"/console//etc/passwd", b"/console/console.js/",
    b"/index.html",
])
def test_anything_else_is_not_found(node: Kvd, target: bytes) -> None:
    assert raw_status(node, target) == 404


def test_other_methods_are_refused(node: Kvd) -> None:
    status, headers, _ = call(node, "POST", "/")
    assert status == 405 and headers["allow"] == "GET"


def test_no_route_answers_cross_origin(node: Kvd) -> None:
    """The console talks to its own node only (connect-src 'self'): no route opens the API to
    other sites' scripts."""
    assert "connect-src 'self';" in static.CSP
    for target in ("/v1/info", "/v1/members", "/v1/kv?prefix=", "/health", "/metrics",
                   "/v1/kv/nope"):
        assert "access-control-allow-origin" not in call(node, "GET", target)[1], target


def test_members_carry_the_http_door_and_digest(node: Kvd) -> None:
    (me,) = json.loads(call(node, "GET", "/v1/members")[2])
    assert me["self"] and me["http"] == f"http://127.0.0.1:{node.http_port}"
    info = json.loads(call(node, "GET", "/v1/info")[2])
    assert me["digest"] == info["digest"] and me["digest_age_ms"] == 0


def test_listing_with_meta_carries_size_and_ttl(node: Kvd) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
    try:
        for target, body in (("/v1/kv/meta:a", b"12345"), ("/v1/kv/meta:b?ttl=100", b"xy")):
            conn.request("PUT", target, body=body)
            assert conn.getresponse().read() == b'{"ok":true}\n'
    finally:
        conn.close()
    page = json.loads(call(node, "GET", "/v1/kv?prefix=meta:&meta=1")[2])
    items = {item["key"]: item for item in page["items"]}
    assert items["meta:a"] == {"key": "meta:a", "size": 5, "ttl_ms": None}
    assert items["meta:b"]["size"] == 2 and 0 < items["meta:b"]["ttl_ms"] <= 100_000
    assert "value" not in items["meta:a"]
