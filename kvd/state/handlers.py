"""What each command does: one function per entry of the command table.

A handler takes the node, the parsed call and the request context, and returns the reply
value (bytes, int, str status, None, list or dict) or raises a KvError. Handlers never touch
sockets or files; writes go through `Node.write`, which records them for the log and peers.
"""

from __future__ import annotations

from collections.abc import Callable

from kvd.state import coordcmds, keyspace, strings, usercmds
from kvd.state.context import Context, Node
from kvd.state.store import NBUCKETS, SYSTEM
from shared.codec import Results
from shared.commands import COMMANDS, Call, lookup
from shared.errors import SyntaxError_

Handler = Callable[[Node, Call, Context], object]
OK = strings.OK


def ping(node: Node, call: Call, ctx: Context) -> object:
    return call.args[0] if call.args else "PONG"


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


def keys(node: Node, call: Call, ctx: Context) -> object:
    return readable(ctx, node.store.keys(call.args[0] if call.args else None, ctx.now))


def readable(ctx: Context, keys: list[bytes]) -> list[bytes]:
    """The keys the caller may read (all of them on an open node or for an admin)."""
    user = ctx.user
    if user is None or user.admin:
        return keys
    return [k for k in keys if user.can_read(k)]


def scan(node: Node, call: Call, ctx: Context) -> object:
    cursor = call.args[0]
    count = call.options.get("COUNT", 10)  # 1 or more: the table says so
    if not 0 <= cursor < NBUCKETS:
        raise SyntaxError_("SCAN: use the cursor the previous SCAN returned (0 to start)",
                           redis="ERR invalid cursor")
    if call.options.get("TYPE", b"string").lower() != b"string":
        return [b"0", []]  # kv holds strings only
    next_cursor, found = node.store.scan(cursor, call.options.get("MATCH"), count, ctx.now)
    return [str(next_cursor).encode(), readable(ctx, found)]


def dbsize(node: Node, call: Call, ctx: Context) -> object:
    node.store.expire_due(ctx.now)
    return node.live_keys()


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
        return [(k, e) for k, e in store.items()
                if k.startswith(p) and e.live(now) and k[:4] != SYSTEM]

    # A replay or the current state is owed from here on: the door sends it after this
    # acknowledgement, as fast as the client takes it (kvd.state.watch).
    return node.watches.subscribe(ctx.client, ctx.request_id, prefix,
                                  call.options.get("FROM"), current)


def multi(node: Node, call: Call, ctx: Context) -> object:
    """Queue the client's next commands until EXEC (kvd.state.transaction; Node.execute
    does the queueing)."""
    node.transactions.begin(ctx.client)
    return OK


def exec_(node: Node, call: Call, ctx: Context) -> object:
    queued = node.transactions.take(ctx.client)
    deferrable, ctx.deferrable = ctx.deferrable, False  # every result goes in this reply
    try:
        return Results([node.execute(argv, ctx) for argv in queued])
    finally:
        ctx.deferrable = deferrable


def discard(node: Node, call: Call, ctx: Context) -> object:
    node.transactions.discard(ctx.client)
    return OK


def help_(node: Node, call: Call, ctx: Context) -> object:
    if call.args:
        command = lookup(call.args[0])
        return [command.syntax.encode(), command.summary.encode()]
    return [f"{c.syntax} — {c.summary}".encode() for c in COMMANDS.values()]


HANDLERS: dict[str, Handler] = {
    "PING": ping,
    "ECHO": keyspace.echo,
    "SET": strings.set_,
    "SETNX": strings.setnx,
    "SETEX": strings.setex,
    "PSETEX": strings.setex,
    "GET": get,
    "GETSET": strings.getset,
    "GETDEL": strings.getdel,
    "GETEX": strings.getex,
    "MGET": mget,
    "MSET": mset,
    "MSETNX": strings.msetnx,
    "APPEND": strings.append,
    "STRLEN": strings.strlen,
    "GETRANGE": strings.getrange,
    "SETRANGE": strings.setrange,
    "INCR": strings.counter,
    "DECR": strings.counter,
    "INCRBY": strings.counter,
    "DECRBY": strings.counter,
    "INCRBYFLOAT": strings.incrbyfloat,
    "DEL": delete,
    "UNLINK": delete,
    "EXISTS": exists,
    "TOUCH": exists,
    "TYPE": keyspace.type_,
    "EXPIRE": keyspace.expire,
    "PEXPIRE": keyspace.expire,
    "EXPIREAT": keyspace.expire,
    "PEXPIREAT": keyspace.expire,
    "TTL": keyspace.ttl,
    "PTTL": keyspace.ttl,
    "PERSIST": keyspace.persist,
    "RENAME": keyspace.rename,
    "RANDOMKEY": keyspace.randomkey,
    "KEYS": keys,
    "SCAN": scan,
    "DBSIZE": dbsize,
    "FLUSHDB": keyspace.flushdb,
    "FLUSHALL": keyspace.flushdb,
    "TIME": keyspace.time_,
    "INFO": info,
    "MEMBERS": members,
    "WATCH": watch,
    "MULTI": multi,
    "EXEC": exec_,
    "DISCARD": discard,
    "HELP": help_,
    "AUTH": usercmds.auth,
    **{name: coordcmds.coordinate for name in coordcmds.NAMES},
    "OBSERVE": coordcmds.observe,
    "RAFT": coordcmds.raft,
    "USER": usercmds.user,
}
