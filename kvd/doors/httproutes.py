"""The HTTP door's routes, sans-IO: a parsed request in, a response (or an SSE stream) out.

Every route turns into the node's commands (`Node.execute`, the path every door shares), so a
write here is a write everywhere: logged in the turn, replicated, seen by WATCH and by the
Redis door's notifications. Keys in paths and queries are percent-encoded bytes; everything
after `/v1/kv/` is the key, slashes included. JSON carries a key or value that is not UTF-8 as
`{"base64": ...}`. Errors are `{"error": {"code", "message"}}` with a fitting status.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_to_bytes

from kvd.doors import httpcoord, static
from kvd.doors.httpreply import (
    HttpError,
    Response,
    error_response,
    json_response,
    jsonable,
    text_response,
    unwire,
    wire,
)
from kvd.state.context import Context, Deferred
from kvd.state.node import Node
from kvd.state.users import User
from shared.errors import KvError

NO_STORE = ("cache-control", "no-store")
YES = (b"1", b"true")


@dataclass
class Stream:
    """A route that answers with Server-Sent Events: the door keeps the connection and sends
    `first` (replayed or current state), then every change under `prefix` as it commits."""

    prefix: bytes
    first: list[dict]
    reset: bool  # the history no longer held what `from` asked for: the state came first


_STATUS_OF_CODE = {"NOT_INTEGER": 400, "SYNTAX": 400, "WRONG_ARITY": 400, "TOO_LARGE": 413,
                   "IO_ERROR": 503, "NOT_FLOAT": 400, "OVERFLOW": 400, "NO_SUCH_KEY": 404,
                   "NOAUTH": 401, "WRONGPASS": 401, "NOPERM": 403}
# Answered without logging in: what load balancers, scrapers and the console's own files need
# (the console shows its login form when the API answers 401).
OPEN_PATHS = {b"/health", b"/metrics", b"/v1/login", b"/v1/logout"}
CHALLENGE = ("www-authenticate", 'Basic realm="kv", charset="UTF-8"')
SESSION_COOKIE = "kv_session"
SESSION_S = 12 * 3600  # a console login lasts this long (the user's deletion ends it sooner)
MAX_CONSOLE_SESSIONS = 10_000


def glob_escape(prefix: bytes) -> bytes:
    out = bytearray()
    for c in prefix:
        if c in b"*?[]\\":
            out.append(0x5C)
        out.append(c)
    return bytes(out)


class Router:
    """Routes a request to the node. `health` says whether the node can serve writes;
    `metrics` renders the Prometheus text."""

    def __init__(self, node: Node, health: Callable[[], tuple[bool, str]],
                 metrics: Callable[[], bytes]) -> None:
        self.node = node
        self.health = health
        self.metrics = metrics
        # Console logins: random session id -> (user name, monotonic expiry). Only the name is
        # kept, so a user deleted (or whose record changes) is looked up afresh every time.
        self.sessions: dict[str, tuple[bytes, float]] = {}

    def handle(self, method: str, target: bytes, headers: dict[bytes, bytes], body: bytes,
               ctx: Context) -> Response | Stream | httpcoord.Held:
        try:
            path, query = _split(target)
            if static.is_console(path):
                return _console(method, path)
            ctx.user = None
            if self.node.locked and path not in OPEN_PATHS:
                ctx.user = self._authenticate(headers, ctx.source)
            if path.startswith(httpcoord.PREFIXES):
                return self._coordinate(method, path, query, body, ctx)
            route = _ROUTES.get(path)
            if route is None:
                if path.startswith(b"/v1/kv/"):
                    return self._key(method, unquote_to_bytes(path[7:]), query, body, ctx)
                raise HttpError(404, "NOT_FOUND", f"no route {path.decode('latin-1')} — see "
                                "README \"HTTP API\"")
            allowed, name = route
            if method not in allowed:
                raise HttpError(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed here",
                                [("allow", ", ".join(allowed))])
            return getattr(self, name)(query, body, headers, ctx)
        except HttpError as exc:
            return error_response(exc.status, exc.code, exc.message,
                                  _challenge(exc.headers, headers))
        except KvError as exc:
            status = _STATUS_OF_CODE.get(exc.code, 400)
            return error_response(status, exc.code, exc.message,
                                  _challenge([CHALLENGE] if status == 401 else [], headers))

    # -- who is asking ----------------------------------------------------------------------

    def _authenticate(self, headers: dict[bytes, bytes], source: str) -> User:
        """The user of a request: HTTP Basic, a Bearer token (kvd user token) or the console's
        session cookie; 401 without one."""
        access = self.node.access
        scheme, _, credentials = headers.get(b"authorization", b"").strip().partition(b" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == b"basic":
            try:
                name, sep, password = base64.b64decode(credentials, validate=True).partition(b":")
            except ValueError:
                sep = b""
            if not sep:
                raise HttpError(401, "NOAUTH", "malformed Basic credentials: base64 of "
                                "user:password", [CHALLENGE])
            return access.login(name, password, source)
        if scheme == b"bearer":
            return access.bearer(credentials, source)
        session = self._session_of(headers)
        if session is not None:
            return session
        raise HttpError(401, "NOAUTH", "authentication required — HTTP Basic (curl -u USER), "
                        "a Bearer token (kvd user token NAME) or the console's login",
                        [CHALLENGE])

    def _session_of(self, headers: dict[bytes, bytes]) -> User | None:
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name != SESSION_COOKIE:
                continue
            found = self.sessions.get(value)
            if found is not None and found[1] > time.monotonic():
                return self.node.users.get(found[0])
        return None

    def login(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        """The console's login: JSON {"user", "password"} in, an HttpOnly session cookie out
        (an EventSource cannot send an Authorization header; a cookie it sends itself)."""
        if not self.node.locked:
            return json_response({"user": None, "open": True})
        try:
            data = json.loads(body)
            name, password = data["user"].encode(), data["password"].encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            raise HttpError(400, "BAD_REQUEST", 'send JSON {"user": .., "password": ..}') \
                from None
        user = self.node.access.login(name, password, ctx.source)
        session = secrets.token_urlsafe(32)
        self.sessions[session] = (user.name, time.monotonic() + SESSION_S)
        if len(self.sessions) > MAX_CONSOLE_SESSIONS:
            del self.sessions[next(iter(self.sessions))]
        response = json_response(jsonable(user.describe()))
        response.headers.append(("set-cookie", f"{SESSION_COOKIE}={session}; HttpOnly; "
                                 f"SameSite=Strict; Path=/; Max-Age={SESSION_S}"))
        return response

    def logout(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE:
                self.sessions.pop(value, None)
        response = json_response({"ok": True})
        response.headers.append(("set-cookie", f"{SESSION_COOKIE}=; HttpOnly; "
                                 "SameSite=Strict; Path=/; Max-Age=0"))
        return response

    def whoami(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        """Who the console is logged in as (null on an open node): it greys out what the
        user may not do."""
        user = ctx.user
        return json_response(None if user is None else jsonable(user.describe()))

    def _run(self, ctx: Context, *argv: bytes) -> object:
        reply = self.node.execute(list(argv), ctx)
        if isinstance(reply, KvError):
            raise reply
        return reply

    def _coordinate(self, method: str, path: bytes, query: dict, body: bytes,
                    ctx: Context) -> Response | httpcoord.Held:
        """A coordination route (kvd.doors.httpcoord): its answer comes later."""
        argv, render = httpcoord.route(method, path, query, body)
        ctx.deferrable = True
        try:
            reply = self.node.execute(argv, ctx)
        finally:
            ctx.deferrable = False  # the turn's context goes on to other requests
        if isinstance(reply, KvError):
            return httpcoord.error(reply)
        if type(reply) is not Deferred:  # OBSERVE with a newer state at hand answers at once
            return httpcoord.answer(reply, render)
        return httpcoord.Held(reply, render)

    # -- /v1/kv ---------------------------------------------------------------------------

    def _key(self, method: str, key: bytes, query: dict, body: bytes, ctx: Context) -> Response:
        if not key:
            raise HttpError(400, "BAD_REQUEST", "the key is empty: PUT /v1/kv/<key>")
        if method == "GET":
            value = self._run(ctx, b"GET", key)
            if value is None:
                raise HttpError(404, "NOT_FOUND", "no such key")
            return Response(200, value, "application/octet-stream")  # type: ignore[arg-type]
        if method == "PUT":
            argv = [b"SET", key, body]
            if "ttl" in query:
                argv += [b"EX", query["ttl"]]
            if "nx" in query and "xx" in query:
                raise HttpError(400, "BAD_REQUEST", "nx and xx exclude each other")
            argv += [b"NX"] if "nx" in query else [b"XX"] if "xx" in query else []
            if self._run(ctx, *argv) is None:
                raise HttpError(412, "PRECONDITION_FAILED",
                                "the key exists (nx)" if "nx" in query else "no such key (xx)")
            return json_response({"ok": True})
        if method == "DELETE":
            return json_response({"deleted": self._run(ctx, b"DEL", key)})
        if method == "PATCH":
            return self._expiry(key, query, ctx)
        raise HttpError(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed on a key",
                        [("allow", "GET, PUT, DELETE, PATCH")])

    def _expiry(self, key: bytes, query: dict, ctx: Context) -> Response:
        """PATCH `?ttl=S` (EXPIRE) or `?persist` (PERSIST): the expiry alone. A PUT would
        carry the whole value there and back, and lose a write landing in between; this is
        one command in one turn, logged and replicated like any other write."""
        if ("ttl" in query) == ("persist" in query):
            raise HttpError(400, "BAD_REQUEST", "PATCH a key with ?ttl=SECONDS or ?persist")
        if "persist" in query:
            # PERSIST answers 0 both for a key without expiry and for no key: ask first (the
            # same turn, so nothing comes in between).
            if self._run(ctx, b"EXISTS", key) == 0:
                raise HttpError(404, "NOT_FOUND", "no such key")
            self._run(ctx, b"PERSIST", key)
            return json_response({"ok": True})
        if query["ttl"] == b"0":  # Redis's EXPIRE key 0 deletes the key: not what a TTL edit means
            raise HttpError(400, "BAD_REQUEST", "ttl must be 1 or more; ?persist removes the "
                            "expiry")
        ttl = _int(query["ttl"], "ttl", 1, 1 << 62)
        if self._run(ctx, b"EXPIRE", key, str(ttl).encode()) == 0:
            raise HttpError(404, "NOT_FOUND", "no such key")
        return json_response({"ok": True})

    def list_keys(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        prefix = query.get("prefix", b"")
        limit = _int(query.get("limit", b"100"), "limit", 1, 10_000)
        cursor = _int(query.get("cursor", b"0"), "cursor", 0, 1 << 62)
        found: list[bytes] = []
        while True:  # a SCAN step may find none under the prefix: go on to the limit or the end
            nxt, keys = self._run(ctx, b"SCAN", str(cursor).encode(), b"MATCH",  # type: ignore
                                  glob_escape(prefix) + b"*", b"COUNT", str(limit).encode())
            found += keys
            cursor = int(nxt)
            if cursor == 0 or len(found) >= limit:
                break
        found.sort()
        page: dict = {"cursor": None if cursor == 0 else str(cursor)}
        values, meta = query.get("values") in YES, query.get("meta") in YES
        if not (values or meta):
            page["keys"] = [wire(k) for k in found]
            return json_response(page)
        items: list[dict] = [{"key": wire(k)} for k in found]
        if values and found:
            for item, v in zip(items, self._run(ctx, b"MGET", *found), strict=True):  # type: ignore
                item["value"] = wire(v)
        if meta:
            for item, k in zip(items, found, strict=True):
                item.update(self._meta(k, ctx))
        page["items"] = items
        return json_response(page)

    def _meta(self, key: bytes, ctx: Context) -> dict:
        """A key's size in bytes and its time to live (ms; null: no expiry), for `meta=1`."""
        ttl = self._run(ctx, b"PTTL", key)
        return {"size": self._run(ctx, b"STRLEN", key),
                "ttl_ms": ttl if isinstance(ttl, int) and ttl >= 0 else None}

    def watch(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Stream:
        prefix = query.get("prefix", b"")
        if ctx.user is not None and not ctx.user.reads_prefix(prefix):
            raise HttpError(403, "NOPERM", "watching this prefix needs read permission on "
                            "every key under it (a pattern like 'prefix*')")
        since = headers.get(b"last-event-id") or query.get("from")
        hub = self.node.watches
        if since is None:
            return Stream(prefix, [], False)
        cursor = _int(since, "from (Last-Event-ID)", 0, 1 << 63)
        replay = hub.since(cursor, prefix)
        if replay is not None:
            return Stream(prefix, replay, False)
        state = [{"cursor": hub.cursor, "key": k, "value": e.value, "deleted": False,
                  "origin": e.origin} for k, e in self.node.live_items(prefix, ctx.now)]
        return Stream(prefix, state, True)

    # -- node -----------------------------------------------------------------------------

    def info(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        return json_response(jsonable(self._run(ctx, b"INFO")))

    def members(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        return json_response(jsonable(self._run(ctx, b"MEMBERS")))

    def health_check(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        ok, reason = self.health()
        if ok:
            return json_response({"status": "ok"})
        return json_response({"status": "unavailable", "reason": reason}, 503)

    def prometheus(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        return Response(200, self.metrics(), "text/plain; version=0.0.4; charset=utf-8")

    # -- /v1/txn: MULTI ... EXEC in one request --------------------------------------------

    def txn(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        """POST {"commands": [["SET", "a", "1"], ["INCR", "n"]]}: the commands run as one
        MULTI ... EXEC on this node, nothing else between them (kvd.state.transaction); one
        result each, `{"value": ...}` or `{"error": {...}}`. A command refused while queueing
        runs nothing: 400 with its error and its index. Arguments are strings, or
        {"base64": ...} for bytes that are not UTF-8."""
        commands = _txn_commands(body)
        node, client = self.node, b"\x00http-txn"  # the transaction lives inside this call
        ctx.client = client
        try:
            refused = node.execute([b"MULTI"], ctx)
            if isinstance(refused, KvError):
                raise refused
            for i, argv in enumerate(commands):
                queued = node.execute(argv, ctx)
                if isinstance(queued, KvError):
                    node.transactions.discard(client)
                    return error_response(_STATUS_OF_CODE.get(queued.code, 400), queued.code,
                                          f"command {i}: {queued.message}",
                                          details={"command": i})
            results = node.execute([b"EXEC"], ctx)
        finally:
            node.transactions.open.pop(client, None)
            ctx.client = b""
        if isinstance(results, KvError):
            raise results
        return json_response({"results": [
            {"error": {"code": r.code, "message": r.message}} if isinstance(r, KvError)
            else {"value": jsonable(r)} for r in results]})  # type: ignore[union-attr]

    # -- the simple routes older key-value services offered -------------------------------

    def simple_set(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        key, value = _need(query, "key"), _need(query, "value")
        self._run(ctx, b"SET", key, value)
        return text_response(b"OK")

    def simple_get(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        value = self._run(ctx, b"GET", _need(query, "key"))
        if value is None:
            raise HttpError(404, "NOT_FOUND", "no such key")
        return Response(200, value, "application/octet-stream")  # type: ignore[arg-type]

    def simple_put(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind == b"application/json":
            try:
                doc = json.loads(body)
                key, value = doc["key"], doc["value"]
            # RecursionError: nesting deeper than the interpreter's limit ("[" * 1000)
            except (ValueError, KeyError, TypeError, RecursionError):
                raise HttpError(400, "BAD_REQUEST", 'the body must be JSON {"key": ..., '
                                '"value": ...}') from None
            if not isinstance(key, str) or not isinstance(value, str):
                raise HttpError(400, "BAD_REQUEST", "key and value must be strings")
            try:
                k, v = key.encode(), value.encode()
            except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON, not UTF-8
                raise HttpError(400, "BAD_REQUEST", "key and value must be valid Unicode "
                                "(no lone surrogates)") from None
        else:
            form = _query(body)
            k, v = _need(form, "key"), _need(form, "value")
        self._run(ctx, b"SET", k, v)
        return text_response(b"OK")

    def simple_delete(self, query: dict, body: bytes, headers: dict, ctx: Context) -> Response:
        if self._run(ctx, b"DEL", _need(query, "key")) == 0:
            raise HttpError(404, "NOT_FOUND", "no such key")
        return text_response(b"OK")


_ROUTES: dict[bytes, tuple[tuple[str, ...], str]] = {
    b"/v1/kv": (("GET",), "list_keys"),
    b"/v1/txn": (("POST",), "txn"),
    b"/v1/login": (("POST",), "login"),
    b"/v1/logout": (("POST",), "logout"),
    b"/v1/whoami": (("GET",), "whoami"),
    b"/v1/watch": (("GET",), "watch"),
    b"/v1/info": (("GET",), "info"),
    b"/v1/members": (("GET",), "members"),
    b"/health": (("GET",), "health_check"),
    b"/metrics": (("GET",), "prometheus"),
    b"/set": (("GET",), "simple_set"),
    b"/get": (("GET",), "simple_get"),
    b"/put": (("POST",), "simple_put"),
    b"/delete": (("DELETE",), "simple_delete"),
}


def _txn_commands(body: bytes) -> list[list[bytes]]:
    """/v1/txn's body: {"commands": [[name, arg, ...], ...]}, each argument a string or
    {"base64": ...}."""
    bad = HttpError(400, "BAD_REQUEST", 'send JSON {"commands": [["SET", "key", "value"], '
                    '...]}: each command a list of strings (or {"base64": ...})')
    try:
        commands = json.loads(body)["commands"]
    # RecursionError: nesting deeper than the interpreter's limit ("[" * 1000)
    except (ValueError, KeyError, TypeError, RecursionError):
        raise bad from None
    if not isinstance(commands, list) or not commands:
        raise bad
    out: list[list[bytes]] = []
    for command in commands:
        if not isinstance(command, list) or not command:
            raise bad
        argv = [unwire(arg) for arg in command]
        if None in argv:
            raise bad
        out.append(argv)  # type: ignore[arg-type]
    return out


def _console(method: str, path: bytes) -> Response:
    found = static.lookup(path)
    if found is None:
        raise HttpError(404, "NOT_FOUND", "the console's files are /console/index.html, "
                        "console.css and console.js")
    if method != "GET":
        raise HttpError(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed here",
                        [("allow", "GET")])
    body, kind = found
    return Response(200, body, kind, list(static.HEADERS))


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _split(target: bytes) -> tuple[bytes, dict[str, bytes]]:
    path, _, raw = target.partition(b"?")
    if not path.startswith(b"/") or _BAD_ESCAPE.search(path):
        raise HttpError(400, "BAD_REQUEST", "the target must be a path, percent-encoded")
    return path, _query(raw)


def _query(raw: bytes) -> dict[str, bytes]:
    if _BAD_ESCAPE.search(raw):
        raise HttpError(400, "BAD_REQUEST", "the query is not valid percent-encoding")
    try:
        text = raw.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                          encoding="latin-1", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "BAD_REQUEST", "the query is not valid percent-encoding") from None
    return {k: v.encode("latin-1") for k, v in pairs}


def _need(query: dict[str, bytes], name: str) -> bytes:
    if name not in query:
        raise HttpError(400, "BAD_REQUEST", f"missing query parameter {name!r}")
    return query[name]


def _int(raw: bytes, name: str, low: int, high: int) -> int:
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise HttpError(400, "BAD_REQUEST", f"{name} must be a whole number from {low} to "
                        f"{high}")
    return int(raw)


def _challenge(extra: list[tuple[str, str]], headers: dict[bytes, bytes]
               ) -> list[tuple[str, str]]:
    """A 401's Basic challenge, except to the console (its fetches say so in a header), which
    shows its own login form instead of the browser's dialog."""
    if b"x-kv-console" in headers:
        return [h for h in extra if h is not CHALLENGE]
    return extra


def sse_event(ev: dict) -> bytes:
    """One change as a Server-Sent Event: `id` is its cursor, so EventSource resumes."""
    op = "del" if ev.get("deleted") else ev.get("op", "set")
    data = {"op": op, "key": wire(ev["key"]), "value": wire(ev.get("value")),
            "origin": ev.get("origin"), "cursor": str(ev["cursor"])}  # > 2**53: a string for JS
    return b"id: %d\ndata: %b\n\n" % (ev["cursor"], json.dumps(data).encode())


def sse_expired(key: bytes, cursor: int) -> bytes:
    data = {"op": "expired", "key": wire(key), "value": None, "origin": None,
            "cursor": str(cursor)}
    return b"data: %b\n\n" % json.dumps(data).encode()
