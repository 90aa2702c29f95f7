"""The coordination commands (CGET, CSET, CDEL, CAS, LEASE, LOCK, UNLOCK, CAMPAIGN, LEADER,
RESIGN): turned into the coordination state machine's command tuples and handed to the node's
coordinator (kvd.consensus), which answers later, once the Raft group has committed and
applied them. Writes go through the log; reads (CGET, LEADER, LEASE TTL) are ReadIndex reads,
linearizable without a log entry (kvd.consensus says how). OBSERVE is a long poll on this node's
applied state (kvd.raft.observers), never in the log.
"""

from __future__ import annotations

from kvd.state.context import Context, Deferred, Node
from kvd.state.coordlimits import MAX_KEY, MAX_VALUE
from shared.commands import Call, strict_int
from shared.errors import KvError, NoQuorum, SyntaxError_, TooLarge

# The commands the consensus group answers (coordinate); with OBSERVE and RAFT, those whose
# reply may come later (a Deferred): the doors hold their place in line.
NAMES = ("CGET", "CSET", "CDEL", "CAS", "LEASE", "LOCK", "UNLOCK", "CAMPAIGN", "LEADER", "RESIGN")
LATER = (*NAMES, "OBSERVE", "RAFT")
# Where a reply cannot wait: inside a transaction (the Redis door's MULTI refuses them in
# Redis's own words first), whose commands run together, now, on this node alone.
ONE_AT_A_TIME = ("coordination commands go through the Raft group and answer later: they "
                 "cannot run inside a transaction — send them on their own")


def coordinate(node: Node, call: Call, ctx: Context) -> object:
    if node.coordinator is None:
        raise NoQuorum("this node runs no consensus group")
    if not ctx.deferrable:
        raise KvError(ONE_AT_A_TIME)
    command = to_tuple(call, ctx.wall)
    _fits(call)
    return _later(ctx, node.coordinator(command))


MAX_WAIT_MS = 600_000  # Consul's longest blocking query; the default is the command table's


def observe(node: Node, call: Call, ctx: Context) -> object:
    """OBSERVE election [AFTER revision] [TIMEOUT ms]: a long poll on the election's leader,
    answered by this node (kvd.raft.observers), not through the Raft log."""
    if node.observer is None:
        raise NoQuorum("this node runs no consensus group")
    if not ctx.deferrable:
        raise KvError(ONE_AT_A_TIME)
    after = call.options.get("AFTER")
    token, default = call.command.waits or ("TIMEOUT", 0)
    wait = call.options.get(token, default)
    if after is not None and after < 0:
        raise SyntaxError_("OBSERVE: AFTER wants a revision from an earlier reply (0 or more)")
    if not 0 < wait <= MAX_WAIT_MS:
        raise SyntaxError_(f"OBSERVE: TIMEOUT wants 1 to {MAX_WAIT_MS} milliseconds")
    return _later(ctx, node.observer(call.args[0], after, wait))


def raft(node: Node, call: Call, ctx: Context) -> object:
    """RAFT REMOVE name | RAFT INIT: operators' changes to the consensus group."""
    if node.operator is None:
        raise NoQuorum("this node runs no consensus group")
    sub, rest = call.args[0].upper(), call.args[1:]
    if sub == b"REMOVE" and len(rest) == 1:
        if not ctx.deferrable:
            raise KvError(ONE_AT_A_TIME)
        return _later(ctx, node.operator(("remove", rest[0].decode("utf-8", "replace"))))
    if sub == b"INIT" and not rest:
        return node.operator(("init",))
    raise SyntaxError_(f"RAFT: REMOVE name or INIT — usage: {call.command.syntax}")


def _fits(call: Call) -> None:
    """Refuse an oversize name or value here, before it costs a log entry on every node (the
    state machine refuses it too: kvd.raft.coordcodec's limits)."""
    name, args = call.command.name, call.args
    names = [args[0]] if name != "LEASE" and args else []
    values = {"CSET": args[1:2], "CAS": args[2:4], "CAMPAIGN": args[1:2]}.get(name, [])
    for arg in names:
        if len(arg) > MAX_KEY:
            raise TooLarge(f"{name}: a coordination key or name is at most {MAX_KEY} bytes, "
                           f"this one {len(arg)}")
    for arg in values:
        if len(arg) > MAX_VALUE:
            raise TooLarge(f"{name}: a coordination value is at most {MAX_VALUE} bytes, this "
                           f"one {len(arg)} — keep large data in the keyspace (SET)")


def _later(ctx: Context, value: object) -> object:
    if type(value) is Deferred:
        ctx.deferred = True
    return value


def to_tuple(call: Call, now_ms: int) -> tuple:
    """The state machine's command for a call (kvd.raft.coordcodec's shapes)."""
    name, args, lease = call.command.name, call.args, call.options.get("LEASE", 0)
    if name == "CGET":
        return ("get", args[0])
    if name == "CSET":
        return ("put", args[0], args[1], lease)
    if name == "CDEL":
        return ("del", args[0])
    if name == "CAS":
        key, how, expected, new = args
        how = how.upper()
        if how == b"REV":
            revision = strict_int(expected)
            if revision is None or revision < 0:
                raise SyntaxError_("CAS: REV wants a revision (0: the key must not exist)")
            return ("cas.rev", key, revision, new, lease)
        if how == b"VALUE":
            return ("cas.value", key, expected, new, lease)
        raise SyntaxError_(f"CAS: compare REV or VALUE — usage: {call.command.syntax}")
    if name == "LEASE":
        sub, number = args[0].upper(), args[1]
        if sub == b"GRANT":
            if number <= 0:
                raise SyntaxError_("LEASE GRANT wants a time to live in milliseconds, over 0")
            return ("grant", number, now_ms)
        if sub == b"KEEPALIVE":
            return ("keepalive", number, now_ms)
        if sub == b"REVOKE":
            return ("revoke", number)
        if sub == b"TTL":
            return ("lease", number)
        raise SyntaxError_(f"LEASE: GRANT, KEEPALIVE, REVOKE or TTL — usage: "
                           f"{call.command.syntax}")
    if name in ("LOCK", "UNLOCK", "RESIGN", "CAMPAIGN"):
        if not lease:
            raise SyntaxError_(f"{name} needs the lease that holds it — usage: "
                               f"{call.command.syntax}")
        if name == "CAMPAIGN":
            return ("campaign", args[0], args[1], lease)
        return (name.lower(), args[0], lease)
    if name == "LEADER":
        return ("leader", args[0])
    raise SyntaxError_(f"{name} is not a coordination command")
