"""What each command does: one function per entry of the command table.

A handler takes the node, the parsed call and the request context, and returns the reply
value (bytes, int, str status, None, list or dict) or raises a KvError. Handlers never touch
sockets or files; writes go through `Node.write`, which records them for the log and peers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kvd.state.context import Context
from kvd.state.store import NBUCKETS, Entry, Store
from kvd.state.watch import WatchHub
from shared.commands import COMMANDS, Call, lookup
from shared.errors import SyntaxError_


class Node(Protocol):
    """What a handler may use of the node (kvd.state.node.Node, which dispatches to the
    handlers here): its store and watch hub to read, `write` to change anything."""

    name: str
    address: str
    store: Store
    watches: WatchHub
    members_source: Callable[[int], list[dict]] | None

    def write(self, key: bytes, value: bytes | None, expires_at: int = 0) -> Entry: ...
    def info(self, now: int) -> dict: ...


Handler = Callable[[Node, Call, Context], object]
OK = "OK"


def ping(node: Node, call: Call, ctx: Context) -> object:
    return call.args[0] if call.args else "PONG"


def set_(node: Node, call: Call, ctx: Context) -> object:
    key, value = call.args
    opts = call.options
    if opts:
        current = node.store.get(key, ctx.now)
        if ("NX" in opts and current is not None) or ("XX" in opts and current is None):
            return None
        expires_at = _expiry(opts, ctx.now)
    else:
        expires_at = 0
    node.write(key, value, expires_at)
    return OK


def _expiry(opts: dict, now: int) -> int:
    if "EX" in opts:
        ms = opts["EX"] * 1000
    elif "PX" in opts:
        ms = opts["PX"]
    else:
        return 0
    if ms <= 0:
        raise SyntaxError_("SET: the expiry must be a positive number — use DEL to remove a key")
    return now + ms


def get(node: Node, call: Call, ctx: Context) -> object:
    entry = node.store.get(call.args[0], ctx.now)
    return None if entry is None else entry.value


def mget(node: Node, call: Call, ctx: Context) -> object:
    store, now = node.store, ctx.now
    return [e.value if (e := store.get(k, now)) is not None else None for k in call.args]


def mset(node: Node, call: Call, ctx: Context) -> object:
    args = call.args
    for i in range(0, len(args), 2):
        node.write(args[i], args[i + 1])
    return OK


def delete(node: Node, call: Call, ctx: Context) -> object:
    existed = 0
    for key in call.args:
        if node.store.get(key, ctx.now) is not None:
            node.write(key, None)
            existed += 1
    return existed


def exists(node: Node, call: Call, ctx: Context) -> object:
    return sum(1 for key in call.args if node.store.get(key, ctx.now) is not None)


def expire(node: Node, call: Call, ctx: Context) -> object:
    key, seconds = call.args
    entry = node.store.get(key, ctx.now)
    if entry is None:
        return 0
    if seconds <= 0:  # as in Redis: a non-positive TTL deletes the key
        node.write(key, None)
    else:
        node.write(key, entry.value, ctx.now + seconds * 1000)
    return 1


def ttl(node: Node, call: Call, ctx: Context) -> object:
    entry = node.store.get(call.args[0], ctx.now)
    if entry is None:
        return -2
    if not entry.expires_at:
        return -1
    return (entry.expires_at - ctx.now + 500) // 1000


def keys(node: Node, call: Call, ctx: Context) -> object:
    return node.store.keys(call.args[0] if call.args else None, ctx.now)


def scan(node: Node, call: Call, ctx: Context) -> object:
    cursor = call.args[0]
    count = call.options.get("COUNT", 10)
    if not 0 <= cursor < NBUCKETS or count <= 0:
        raise SyntaxError_(
            "SCAN: use the cursor the previous SCAN returned (0 to start) and COUNT > 0"
        )
    next_cursor, found = node.store.scan(cursor, call.options.get("MATCH"), count, ctx.now)
    return [str(next_cursor).encode(), found]


def dbsize(node: Node, call: Call, ctx: Context) -> object:
    node.store.expire_due(ctx.now)
    return node.store.live_count


def info(node: Node, call: Call, ctx: Context) -> object:
    return node.info(ctx.now)


def members(node: Node, call: Call, ctx: Context) -> object:
    if node.members_source is not None:
        return node.members_source(ctx.wall)  # members' timers run on the wall clock
    return [{"name": node.name, "address": node.address, "status": "alive", "self": True,
             "last_seen_ms": 0, "lag": 0}]


def watch(node: Node, call: Call, ctx: Context) -> object:
    prefix = call.args[0]
    store, now = node.store, ctx.now

    def current(p: bytes):
        return [(k, e) for k, e in store.items() if k.startswith(p) and e.live(now)]

    # A replay or the current state is owed from here on: the door sends it after this
    # acknowledgement, as fast as the client takes it (kvd.state.watch).
    return node.watches.subscribe(ctx.client, ctx.request_id, prefix,
                                  call.options.get("FROM"), current)


def help_(node: Node, call: Call, ctx: Context) -> object:
    if call.args:
        command = lookup(call.args[0])
        return [command.syntax.encode(), command.summary.encode()]
    return [f"{c.syntax} — {c.summary}".encode() for c in COMMANDS.values()]


HANDLERS: dict[str, Handler] = {
    "PING": ping,
    "SET": set_,
    "GET": get,
    "MGET": mget,
    "MSET": mset,
    "DEL": delete,
    "EXISTS": exists,
    "EXPIRE": expire,
    "TTL": ttl,
    "KEYS": keys,
    "SCAN": scan,
    "DBSIZE": dbsize,
    "INFO": info,
    "MEMBERS": members,
    "WATCH": watch,
    "HELP": help_,
}
