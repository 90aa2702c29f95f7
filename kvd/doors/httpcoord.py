"""The HTTP door's coordination routes, sans-IO: a request in, the coordination command to run
(the one command table's, through `Node.execute`) and how to render its answer out.

The shapes are the ones etcd's and Consul's users expect (README "Coordination" has the
table): a key with its revision under `/v1/coord/<key>`, a CAS as a conditional PUT
(`?rev=N`, 0: must not exist; `?prev=V`) answered 412 with the current revision and value
when the compare fails, leases as resources under `/v1/lease`, a lock's fencing token from
POST `/v1/lock/<name>?lease=ID` (409 when another lease holds it), an election under
`/v1/election/<name>` (POST campaigns, GET names the leader — with `?index=REV[&wait=MS]`, a
blocking query in Consul's shape: OBSERVE, answered once the leader is newer than REV —
DELETE resigns). A read of
nothing (a missing key, an election nobody stands in) is 404.

The answer comes once the Raft group has applied the command (`Held`): the door keeps the
connection's later responses behind it. NO_QUORUM and TRYAGAIN are 503 with Retry-After.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from kvd.doors.httpreply import HttpError, Response, error_response, json_response, jsonable
from kvd.state.context import Deferred
from shared.errors import KvError

PREFIXES = (b"/v1/coord/", b"/v1/lease", b"/v1/lock/", b"/v1/election/")
RETRY_AFTER_S = "1"  # an election takes about a second: then a leader may answer
# The state machine's codes (kvd.raft.coordcodec.Error) and the group's, as statuses.
STATUS_OF_CODE = {"NO_QUORUM": 503, "TRYAGAIN": 503, "COMPARE_FAILED": 412, "LOCKED": 409,
                  "NOT_HOLDER": 409, "NOT_CANDIDATE": 409, "NO_LEASE": 404, "BAD_COMMAND": 400,
                  "SYNTAX": 400, "NOT_INTEGER": 400, "WRONG_ARITY": 400, "TOO_LARGE": 413,
                  "NOAUTH": 401, "WRONGPASS": 401, "NOPERM": 403, "NO_SPACE": 507}

Render = Callable[[dict], Response]


@dataclass
class Held:
    """A response that comes when `answer` resolves (a dict, or a KvError)."""

    answer: Deferred
    render: Render

    def response(self, value: object) -> Response:
        return answer(value, self.render)


def answer(value: object, render: Render) -> Response:
    """A coordination command's answer (a dict, or a KvError) as a response."""
    if isinstance(value, KvError):
        return error(value)
    assert isinstance(value, dict)
    return render(value)


def error(exc: KvError) -> Response:
    status = STATUS_OF_CODE.get(exc.code, 400)
    headers = [("retry-after", RETRY_AFTER_S)] if status == 503 else []
    return error_response(status, exc.code, exc.message, headers, exc.details)


def route(method: str, path: bytes, query: dict[str, bytes],
          body: bytes) -> tuple[list[bytes], Render]:
    """The command for a request under PREFIXES, and how to render what it answers."""
    if path == b"/v1/lease":
        _allow(method, ("POST",))
        return [b"LEASE", b"GRANT", _need(query, "ttl_ms")], _plain
    kind, _, rest = path[4:].partition(b"/")
    name = unquote_to_bytes(rest)
    if not name:
        raise HttpError(400, "BAD_REQUEST", f"the {kind.decode()} is empty: "
                        f"/v1/{kind.decode()}/<name>")
    if kind == b"coord":
        return _coord(method, name, query, body)
    if kind == b"lease":
        _allow(method, ("GET", "PUT", "DELETE"))
        sub = {"GET": b"TTL", "PUT": b"KEEPALIVE", "DELETE": b"REVOKE"}[method]
        return [b"LEASE", sub, name], _plain
    if kind == b"lock":
        _allow(method, ("POST", "DELETE"))
        command = b"LOCK" if method == "POST" else b"UNLOCK"
        return [command, name, b"LEASE", _need(query, "lease")], _plain
    if kind == b"election":
        _allow(method, ("GET", "POST", "DELETE"))
        if method == "GET" and "index" in query:  # Consul's blocking query: OBSERVE
            wait = [b"TIMEOUT", query["wait"]] if "wait" in query else []
            return [b"OBSERVE", name, b"AFTER", query["index"], *wait], _plain
        if method == "GET":
            return [b"LEADER", name], _found("nobody stands in this election")
        if method == "POST":
            return [b"CAMPAIGN", name, body, b"LEASE", _need(query, "lease")], _plain
        return [b"RESIGN", name, b"LEASE", _need(query, "lease")], _plain
    raise HttpError(404, "NOT_FOUND", f"no route {path.decode('latin-1')} — see README "
                    "\"Coordination\"")


def _coord(method: str, key: bytes, query: dict[str, bytes],
           body: bytes) -> tuple[list[bytes], Render]:
    _allow(method, ("GET", "PUT", "DELETE"))
    if method == "GET":
        return [b"CGET", key], _found("no such coordination key", key)
    if method == "DELETE":
        return [b"CDEL", key], _plain
    lease = [b"LEASE", query["lease"]] if "lease" in query else []
    if "rev" in query and "prev" in query:
        raise HttpError(400, "BAD_REQUEST", "rev and prev exclude each other: compare on one")
    if "rev" in query:
        return [b"CAS", key, b"REV", query["rev"], body, *lease], _plain
    if "prev" in query:
        return [b"CAS", key, b"VALUE", query["prev"], body, *lease], _plain
    return [b"CSET", key, body, *lease], _plain


def _plain(reply: dict) -> Response:
    return json_response(jsonable(reply))


def _found(missing: str, key: bytes | None = None) -> Render:
    """A read's renderer: 404 when there is nothing (revision 0), else the reply (with the
    key it was asked for, when there is one)."""
    def render(reply: dict) -> Response:
        if not reply.get("revision"):
            return error_response(404, "NOT_FOUND", missing)
        return json_response(jsonable(reply if key is None else {"key": key, **reply}))

    return render


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise HttpError(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed here",
                        [("allow", ", ".join(allowed))])


def _need(query: dict[str, bytes], name: str) -> bytes:
    if name not in query:
        raise HttpError(400, "BAD_REQUEST", f"missing query parameter {name!r}")
    return query[name]
