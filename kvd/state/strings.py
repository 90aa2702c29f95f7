"""String commands with Redis's semantics: SET's options, the SET/GET variants, ranges and
counters. Every rule here is Redis 7.0's (tests/test_resp_diff.py compares the replies with a
real redis-server), including which mistake is reported first and in which words.

A write that only changes part of a value (APPEND, SETRANGE, INCR...) keeps the key's expiry,
as in Redis; a write that replaces it (SET, GETSET) drops the expiry unless told otherwise.
"""

from __future__ import annotations

from kvd.state import longdouble
from kvd.state.context import Context, Node
from kvd.state.store import Entry
from shared.commands import INT64_MAX, INT64_MIN, Call, option_value, strict_int
from shared.errors import NotFloat, NotInteger, Overflow, SyntaxError_, TooLarge

OK = "OK"


def expire_time_error(command: str) -> SyntaxError_:
    return SyntaxError_(f"{command.upper()}: the expiry must be a positive time that fits in 64 "
                        "bits — use DEL to remove a key",
                        redis=f"ERR invalid expire time in '{command.lower()}' command")


def expiry_of(opts: dict, now: int, command: str) -> int | None:
    """The absolute expiry (ms) an EX/PX/EXAT/PXAT option asks for; None when none does."""
    for token, scale, relative in (("EX", 1000, True), ("PX", 1, True),
                                   ("EXAT", 1000, False), ("PXAT", 1, False)):
        if token in opts:
            return _absolute(opts[token], scale, now if relative else 0, command)
    return None


def _absolute(amount: int, scale: int, base: int, command: str) -> int:
    if amount <= 0 or amount * scale > INT64_MAX or amount * scale + base > INT64_MAX:
        raise expire_time_error(command)
    return amount * scale + base


def set_(node: Node, call: Call, ctx: Context) -> object:
    key, value = call.args
    opts = call.options
    if not opts:
        node.write(key, value)
        return OK
    expires_at = expiry_of(opts, ctx.now, "set")
    current = node.store.get(key, ctx.now)
    old = current.value if current is not None else None
    if ("NX" in opts and current is not None) or ("XX" in opts and current is None):
        return old if "GET" in opts else None
    if expires_at is None:
        expires_at = current.expires_at if "KEEPTTL" in opts and current is not None else 0
    node.write(key, value, expires_at)
    return old if "GET" in opts else OK


def setnx(node: Node, call: Call, ctx: Context) -> object:
    key, value = call.args
    if node.store.get(key, ctx.now) is not None:
        return 0
    node.write(key, value)
    return 1


def setex(node: Node, call: Call, ctx: Context) -> object:
    key, amount, value = call.args
    scale = 1000 if call.command.name == "SETEX" else 1
    node.write(key, value, _absolute(amount, scale, ctx.now, call.command.name))
    return OK


def getset(node: Node, call: Call, ctx: Context) -> object:
    key, value = call.args
    current = node.store.get(key, ctx.now)
    node.write(key, value)
    return None if current is None else current.value


def getdel(node: Node, call: Call, ctx: Context) -> object:
    current = node.store.get(call.args[0], ctx.now)
    if current is None:
        return None
    node.write(call.args[0], None)
    return current.value


def getex(node: Node, call: Call, ctx: Context) -> object:
    """The key is looked up before its new expiry is read: a missing key is nil whatever
    the expiry says, as in Redis (the table leaves the option values to this handler)."""
    key, opts = call.args[0], call.options
    current = node.store.get(key, ctx.now)
    if current is None:
        return None
    expiry = {t: option_value(call, t) for t in opts if t != "PERSIST"}
    expires_at = expiry_of(expiry, ctx.now, "getex")
    if expires_at is not None:
        # An absolute time already past deletes the key, as EXPIREAT does.
        node.write(key, None if expires_at <= ctx.now else current.value,
                   0 if expires_at <= ctx.now else expires_at)
    elif "PERSIST" in opts and current.expires_at:
        node.write(key, current.value, 0)
    return current.value


def msetnx(node: Node, call: Call, ctx: Context) -> object:
    args, store = call.args, node.store
    if any(store.get(args[i], ctx.now) is not None for i in range(0, len(args), 2)):
        return 0
    for i in range(0, len(args), 2):
        node.write(args[i], args[i + 1])
    return 1


def append(node: Node, call: Call, ctx: Context) -> object:
    key, tail = call.args
    current = node.store.get(key, ctx.now)
    value = tail if current is None else _checked(node, current.value + tail)  # type: ignore
    node.write(key, value, 0 if current is None else current.expires_at)
    return len(value)


def strlen(node: Node, call: Call, ctx: Context) -> object:
    current = node.store.get(call.args[0], ctx.now)
    return 0 if current is None else len(current.value)  # type: ignore[arg-type]


def getrange(node: Node, call: Call, ctx: Context) -> object:
    key, start, end = call.args
    current = node.store.get(key, ctx.now)
    value: bytes = b"" if current is None else current.value  # type: ignore[assignment]
    n = len(value)
    if (start < 0 and end < 0 and start > end) or n == 0:
        return b""
    start = max(0, n + start if start < 0 else start)
    end = min(n - 1, max(0, n + end if end < 0 else end))
    return b"" if start > end else value[start : end + 1]


def setrange(node: Node, call: Call, ctx: Context) -> object:
    key, offset, patch = call.args
    if offset < 0:
        raise SyntaxError_("SETRANGE: the offset must be 0 or more",
                           redis="ERR offset is out of range")
    current = node.store.get(key, ctx.now)
    value: bytes = b"" if current is None else current.value  # type: ignore[assignment]
    if not patch:
        return len(value)
    _limit(node, offset + len(patch))
    grown = value.ljust(offset, b"\0")
    value = grown[:offset] + patch + grown[offset + len(patch):]
    node.write(key, value, 0 if current is None else current.expires_at)
    return len(value)


def _checked(node: Node, value: bytes) -> bytes:
    _limit(node, len(value))
    return value


def _limit(node: Node, size: int) -> None:
    if size > node.max_value:
        raise TooLarge(f"the value would be {size} bytes, over the limit of {node.max_value} "
                       "(config key max_value_size)",
                       redis="ERR string exceeds maximum allowed size (proto-max-bulk-len)")


def counter(node: Node, call: Call, ctx: Context) -> object:
    name = call.command.name
    by = call.args[1] if len(call.args) > 1 else 1
    if name == "DECRBY" and by == INT64_MIN:
        raise Overflow("DECRBY: the decrement is out of range",
                       redis="ERR decrement would overflow")
    delta = -by if name.startswith("DECR") else by
    key = call.args[0]
    current = node.store.get(key, ctx.now)
    old = 0 if current is None else strict_int(current.value)  # type: ignore[arg-type]
    if old is None:
        raise NotInteger(f"{name}: the value of this key is not an integer")
    if not INT64_MIN <= old + delta <= INT64_MAX:
        raise Overflow(f"{name}: the result would not fit in a 64-bit integer",
                       redis="ERR increment or decrement would overflow")
    _write_keeping_ttl(node, key, str(old + delta).encode(), current)
    return old + delta


def incrbyfloat(node: Node, call: Call, ctx: Context) -> object:
    key, raw = call.args
    current = node.store.get(key, ctx.now)
    try:
        old = longdouble.parse(current.value) if current is not None else 0  # type: ignore
        delta = longdouble.parse(raw) if old is not None else None
        if old is None or delta is None:
            raise NotFloat("INCRBYFLOAT: the value or the increment is not a number")
        total = longdouble.add(old, delta)  # type: ignore[arg-type]
    except longdouble.Infinite:
        raise Overflow("INCRBYFLOAT: the result would not be a finite number",
                       redis="ERR increment would produce NaN or Infinity") from None
    value = longdouble.format_human(total)
    _write_keeping_ttl(node, key, value, current)
    return value


def _write_keeping_ttl(node: Node, key: bytes, value: bytes, current: Entry | None) -> None:
    node.write(key, value, 0 if current is None else current.expires_at)
