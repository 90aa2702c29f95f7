"""Key commands with Redis's semantics: expiry (EXPIRE and its three siblings, TTL, PTTL,
PERSIST), RENAME, TYPE, RANDOMKEY, TOUCH, FLUSHDB and TIME.

Expiry times are wall-clock milliseconds, like every `expires_at` in the store. An expiry
already past deletes the key (as Redis's EXPIRE does), which replicates as a deletion.
"""

from __future__ import annotations

import random

from kvd.state.context import Context, Node
from kvd.state.strings import OK, expire_time_error
from shared.commands import INT64_MAX, INT64_MIN, Call
from shared.errors import NoSuchKey

# name -> (milliseconds per unit, whether the time is relative to now)
_EXPIRE_UNITS = {"EXPIRE": (1000, True), "PEXPIRE": (1, True),
                 "EXPIREAT": (1000, False), "PEXPIREAT": (1, False)}


def expire(node: Node, call: Call, ctx: Context) -> object:
    key, amount = call.args
    opts, name = call.options, call.command.name
    scale, relative = _EXPIRE_UNITS[name]
    when = amount * scale
    base = ctx.now if relative else 0
    if not INT64_MIN <= when <= INT64_MAX or when > INT64_MAX - base:
        raise expire_time_error(name)
    when += base
    entry = node.store.get(key, ctx.now)
    if entry is None:
        return 0
    current = entry.expires_at or None  # None: no expiry, an infinite TTL for GT and LT
    if (("NX" in opts and current is not None) or ("XX" in opts and current is None)
            or ("GT" in opts and (current is None or when <= current))
            or ("LT" in opts and current is not None and when >= current)):
        return 0
    if when <= ctx.now:
        node.write(key, None)
    else:
        node.write(key, entry.value, when)
    return 1


def ttl(node: Node, call: Call, ctx: Context) -> object:
    entry = node.store.get(call.args[0], ctx.now)
    if entry is None:
        return -2
    if not entry.expires_at:
        return -1
    left = max(0, entry.expires_at - ctx.now)
    return left if call.command.name == "PTTL" else (left + 500) // 1000


def persist(node: Node, call: Call, ctx: Context) -> object:
    key = call.args[0]
    entry = node.store.get(key, ctx.now)
    if entry is None or not entry.expires_at:
        return 0
    node.write(key, entry.value, 0)
    return 1


def rename(node: Node, call: Call, ctx: Context) -> object:
    key, new = call.args
    entry = node.store.get(key, ctx.now)
    if entry is None:
        raise NoSuchKey("RENAME: no such key")
    if key != new:
        node.write(new, entry.value, entry.expires_at)
        node.write(key, None)
    return OK


def type_(node: Node, call: Call, ctx: Context) -> object:
    return "none" if node.store.get(call.args[0], ctx.now) is None else "string"


def randomkey(node: Node, call: Call, ctx: Context) -> object:
    keys = node.store.keys(None, ctx.now)
    user = ctx.user
    if user is not None and not user.admin:
        keys = [k for k in keys if user.can_read(k)]
    return random.choice(keys) if keys else None


def flushdb(node: Node, call: Call, ctx: Context) -> object:
    """Every live key deleted: tombstones that replicate, so the whole cluster is emptied."""
    for key in node.store.keys(None, ctx.now):
        node.write(key, None)
    return OK


def time_(node: Node, call: Call, ctx: Context) -> object:
    seconds, ms = divmod(ctx.now, 1000)
    return [str(seconds).encode(), str(ms * 1000).encode()]


def echo(node: Node, call: Call, ctx: Context) -> object:
    return call.args[0]
