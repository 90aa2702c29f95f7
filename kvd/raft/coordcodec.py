"""The coordination namespace's commands as bytes: what a leader proposes into the Raft log
and `Coordination.apply` reads back, plus the results' shape.

A command is a msgpack array `[op, arg, ...]`; `OPS` says, per op, the method of
`kvd.raft.coord.Coordination` that runs it, the kind of each argument and whether it writes.
`decode` holds every entry to that table before anything runs, so a garbage entry in the log
(any bytes at all) becomes a BAD_COMMAND result, never an exception and never a change. Build
commands with the `encode_*` helpers; nothing else needs to know the layout.

Kinds: an int is a msgpack integer in [0, 2**63) and never a boolean; bytes are msgpack bin
(str is not bytes: keys and values are binary-safe). Ops are msgpack str.

Results are plain dicts the doors render: `{"ok": True, ...}`, or `{"ok": False, "error":
<Error>, "message": <one line>, ...details}`. On success, besides `ok`:

    put, cas.*        revision (cas.* deleting: deleted, revision)
    get               value (None: no key), revision (0: no key), lease (0: none)
    del               deleted (0 or 1)
    grant, keepalive  lease, ttl, deadline (ms on the leaders' clock)
    revoke            revoked
    lease             lease, ttl, deadline, remaining (by the last time applied), keys
    tick              expired (the lease ids that ended)
    promote           leases (how many got a full ttl)
    lock              token (the fencing token)
    unlock            nothing more
    campaign          leader (bool), position (0 leads), and what `leader` answers
    leader            value (None: no candidate), lease, revision (0: no candidate)
    resign            revision (the election's, after it)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack

Result = dict[str, Any]
MAX_INT = 2**63 - 1  # times, ttls and ids; a deadline (now + ttl) then still fits in msgpack


class Error(StrEnum):
    BAD_COMMAND = "BAD_COMMAND"  # not a command this machine knows, or wrong arguments
    STALE_INDEX = "STALE_INDEX"  # an index at or below `applied`: applied already
    NOT_A_READ = "NOT_A_READ"  # `read` was handed a command that writes
    NO_LEASE = "NO_LEASE"  # the lease never existed, ended, or is past its deadline
    COMPARE_FAILED = "COMPARE_FAILED"  # CAS: details `revision` and `value` are the current
    LOCKED = "LOCKED"  # LOCK: details `holder` (a lease) and `token`
    NOT_HOLDER = "NOT_HOLDER"
    NOT_CANDIDATE = "NOT_CANDIDATE"
    TOO_LARGE = "TOO_LARGE"  # a key, name or value over its limit (MAX_KEY, MAX_VALUE)
    NO_SPACE = "NO_SPACE"  # the namespace is full (QUOTA bytes, MAX_LEASES leases)



def failure(error: Error, message: str, **details: Any) -> Result:
    return {"ok": False, "error": error, "message": message, **details}


BYTES, INT, MAYBE_BYTES = "bytes", "int", "bytes or nil"


@dataclass(frozen=True, slots=True)
class Spec:
    method: str  # Coordination's method: called as method(index, *args)
    kinds: tuple[str, ...]
    writes: bool = True


OPS: dict[str, Spec] = {
    "put": Spec("_put", (BYTES, BYTES, INT)),  # key, value, lease (0: none)
    "get": Spec("_get", (BYTES,), writes=False),
    "del": Spec("_delete", (BYTES,)),
    "cas.rev": Spec("_cas_revision", (BYTES, INT, MAYBE_BYTES, INT)),  # key, rev, new, lease
    "cas.value": Spec("_cas_value", (BYTES, BYTES, MAYBE_BYTES, INT)),  # key, value, new, lease
    "grant": Spec("_grant", (INT, INT)),  # ttl_ms, now_ms
    "keepalive": Spec("_keepalive", (INT, INT)),  # lease, now_ms
    "revoke": Spec("_revoke", (INT,)),
    "lease": Spec("_lease_info", (INT,), writes=False),
    "tick": Spec("_tick", (INT,)),  # now_ms
    "promote": Spec("_promote", (INT,)),  # now_ms
    "lock": Spec("_lock", (BYTES, INT)),  # name, lease
    "unlock": Spec("_unlock", (BYTES, INT)),
    "campaign": Spec("_campaign", (BYTES, BYTES, INT)),  # election, value, lease
    "leader": Spec("_leader", (BYTES,), writes=False),
    "resign": Spec("_resign", (BYTES, INT)),
}


def _fits(kind: str, arg: object) -> bool:
    if kind == INT:  # bool is an int to Python, never to this protocol
        return type(arg) is int and 0 <= arg <= MAX_INT
    return type(arg) is bytes or (kind == MAYBE_BYTES and arg is None)


def decode(command: bytes) -> tuple[Spec, list] | Result:
    """A command's spec and arguments, or the BAD_COMMAND result saying what is wrong."""
    try:
        message = msgpack.unpackb(command, raw=False)
    # msgpack's own errors are ValueErrors (bad UTF-8 in a str too); TypeError: an unhashable
    # map key, or `command` not bytes at all. Nothing else comes out of decoding.
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        return failure(Error.BAD_COMMAND, f"not msgpack: {exc or type(exc).__name__}")
    if type(message) is not list or not message or type(message[0]) is not str:
        return failure(Error.BAD_COMMAND, "a command is an array [op, arg, ...]")
    spec = OPS.get(message[0])
    if spec is None:
        return failure(Error.BAD_COMMAND, f"unknown op {message[0]!r}")
    args = message[1:]
    if len(args) != len(spec.kinds) or not all(map(_fits, spec.kinds, args)):
        return failure(Error.BAD_COMMAND, f"{message[0]} takes ({', '.join(spec.kinds)})")
    return spec, args


def _pack(*message: object) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def encode_put(key: bytes, value: bytes, lease: int = 0) -> bytes:
    return _pack("put", key, value, lease)


def encode_get(key: bytes) -> bytes:
    return _pack("get", key)


def encode_delete(key: bytes) -> bytes:
    return _pack("del", key)


def encode_cas(key: bytes, new: bytes | None, *, revision: int | None = None,
               value: bytes | None = None, lease: int = 0) -> bytes:
    """Compare the key's revision (0: must not exist) or its value, exactly one of them;
    then set it to `new` (attached to `lease`), or delete it when `new` is None."""
    if (revision is None) == (value is None):
        raise ValueError("compare either the revision or the value")
    if revision is not None:
        return _pack("cas.rev", key, revision, new, lease)
    return _pack("cas.value", key, value, new, lease)


def encode_grant(ttl_ms: int, now_ms: int) -> bytes:
    return _pack("grant", ttl_ms, now_ms)


def encode_keepalive(lease: int, now_ms: int) -> bytes:
    return _pack("keepalive", lease, now_ms)


def encode_revoke(lease: int) -> bytes:
    return _pack("revoke", lease)


def encode_lease_info(lease: int) -> bytes:
    return _pack("lease", lease)


def encode_tick(now_ms: int) -> bytes:
    return _pack("tick", now_ms)


def encode_promote(now_ms: int) -> bytes:
    return _pack("promote", now_ms)


def encode_lock(name: bytes, lease: int) -> bytes:
    return _pack("lock", name, lease)


def encode_unlock(name: bytes, lease: int) -> bytes:
    return _pack("unlock", name, lease)


def encode_campaign(election: bytes, value: bytes, lease: int) -> bytes:
    return _pack("campaign", election, value, lease)


def encode_leader(election: bytes) -> bytes:
    return _pack("leader", election)


def encode_resign(election: bytes, lease: int) -> bytes:
    return _pack("resign", election, lease)
