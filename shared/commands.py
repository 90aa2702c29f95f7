"""The command table: every command of CONTRACT.md, declared once as data.

kvd validates and dispatches by it; kvsh validates, completes, highlights, hints and answers
HELP from it. A command is positional arguments (the last `repeat` of them may repeat as a
group, like MSET's `key value`), then keyword options (`EX 10`, `NX`) in any order, where
options sharing a `group` exclude each other.

`parse()` is the one grammar check both sides run; it raises the same errors on both.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.errors import ArityError, NotInteger, SyntaxError_, UnknownCommand


class Kind(enum.Enum):
    """What an argument is: drives conversion, completion and highlighting."""

    KEY = "key"
    VALUE = "value"
    INTEGER = "integer"
    PATTERN = "pattern"
    STRING = "string"
    COMMAND = "command"
    NODE = "node"  # a cluster member: its name or its host:port (completed from MEMBERS)


@dataclass(frozen=True)
class Arg:
    name: str
    kind: Kind
    optional: bool = False
    # An INTEGER that Redis reads otherwise than strict_int (SCAN's cursor: C's strtoul), and
    # the line it refuses a value with; None: strict_int, "value is not an integer ...".
    read: Callable[[bytes], int | None] | None = field(default=None, compare=False, repr=False)
    refused: str | None = None
    minimum: int | None = None  # a smaller INTEGER is a syntax error (SCAN's COUNT)


@dataclass(frozen=True)
class Option:
    token: str  # upper case, as written in the syntax
    value: Arg | None = None
    group: str | None = None  # options in one group exclude each other


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    args: tuple[Arg, ...] = ()
    options: tuple[Option, ...] = ()
    repeat: int = 0  # how many trailing args repeat as a group (MGET: 1, MSET: 2)
    mutating: bool = False
    streaming: bool = False
    # Redis's arity for the same command (argc with the name; negative = at least), which the
    # RESP door enforces first, as Redis does (kv's own commands on that door, MEMBERS and the
    # coordination ones, get one in the same style); None: not on the RESP door.
    redis_arity: int | None = None
    # The error for an option this command does not have (Redis words it per command).
    unknown_option: str = "syntax error"
    # Redis reads this command's arguments left to right, converting each as it comes (SCAN),
    # instead of checking the options' syntax before converting anything (SET, EXPIRE).
    in_order: bool = False
    # More arguments than this (after the name) are a syntax error, even a repeated option
    # (FLUSHDB ASYNC ASYNC), where Redis counts them instead of scanning options.
    max_args: int | None = None
    # The handler converts the option values itself, when Redis does so only after looking
    # the key up (GETEX of a missing key is nil, whatever its expiry); see `option_value`.
    late_options: bool = False
    # Checks the options as a whole once they are scanned, before any value is converted.
    check: Callable[[dict], None] | None = field(default=None, compare=False, repr=False)
    # What a user needs to run it (kvd.state.access): "connection" (any logged-in user),
    # "read" / "write" (permission on each key it names), "admin", or "user" (the USER
    # command checks for itself). Empty: "write" if mutating, else "read".
    access: str = ""
    # A long poll (OBSERVE): the option that bounds the server's wait in ms, and its default.
    # Clients wait that much longer for the reply than their usual timeout.
    waits: tuple[str, int] | None = None
    _option_index: dict[str, Option] = field(default_factory=dict, compare=False, repr=False)
    _key_slots: dict[int, tuple[int, ...]] = field(default_factory=dict, compare=False,
                                                    repr=False)

    def __post_init__(self) -> None:
        self._option_index.update({o.token: o for o in self.options})
        if not self.access:
            object.__setattr__(self, "access", "write" if self.mutating else "read")

    def key_slots(self, argc: int) -> tuple[int, ...]:
        """The positions in an argv of `argc` items (the name included) that hold keys:
        what access checks read on every request, so worked out once per length."""
        slots = self._key_slots.get(argc)
        if slots is None:
            kinds = arg_kinds(self, argc - 1)
            slots = tuple(i + 1 for i, kind in enumerate(kinds) if kind is Kind.KEY)
            if len(self._key_slots) < 64:  # bounded: a repeat command takes any length
                self._key_slots[argc] = slots
        return slots

    @property
    def required(self) -> int:
        return sum(1 for a in self.args if not a.optional)

    def option(self, token: str) -> Option | None:
        # Case folded in ASCII only, as Redis's strcasecmp: "persıst" is not PERSIST.
        return self._option_index.get(token.upper()) if token.isascii() else None

    @property
    def syntax(self) -> str:
        parts = [self.name]
        for a in self.args:
            parts.append(f"[{a.name}]" if a.optional else a.name)
        if self.repeat:
            group = " ".join(a.name for a in self.args[-self.repeat :])
            parts.append(f"[{group} ...]")
        groups: dict[str | None, list[str]] = {}
        for o in self.options:
            text = f"{o.token} {o.value.name}" if o.value else o.token
            groups.setdefault(o.group or o.token, []).append(text)
        parts.extend(f"[{' | '.join(texts)}]" for texts in groups.values())
        return " ".join(parts)


@dataclass(slots=True)  # not frozen: kvd builds one per request, and frozen costs 2.5x
class Call:
    """A parsed command: positional values converted by kind, options by token."""

    command: Command
    args: tuple
    options: dict


def _k(name: str) -> Arg:
    return Arg(name, Kind.KEY)


def _expire_conflicts(options: dict) -> None:
    """EXPIRE's NX/XX/GT/LT combine only as Redis allows (XX with GT or LT)."""
    if "NX" in options and len(options) > 1:
        raise SyntaxError_("EXPIRE: NX excludes XX, GT and LT",
                           redis="ERR NX and XX, GT or LT options at the same time are not "
                                 "compatible")
    if "GT" in options and "LT" in options:
        raise SyntaxError_("EXPIRE: GT and LT exclude each other",
                           redis="ERR GT and LT options at the same time are not compatible")


_EXPIRY = (
    Option("EX", Arg("seconds", Kind.INTEGER), "expiry"),
    Option("PX", Arg("milliseconds", Kind.INTEGER), "expiry"),
    Option("EXAT", Arg("unix-seconds", Kind.INTEGER), "expiry"),
    Option("PXAT", Arg("unix-milliseconds", Kind.INTEGER), "expiry"),
)
_EXPIRE_CONDITIONS = (Option("NX"), Option("XX"), Option("GT"), Option("LT"))


def _expire(name: str, unit: str, summary: str) -> Command:
    return Command(name, summary, (_k("key"), Arg(unit, Kind.INTEGER)), _EXPIRE_CONDITIONS,
                   mutating=True, redis_arity=-3, unknown_option="Unsupported option {token}",
                   check=_expire_conflicts)


def _counter(name: str, summary: str, by: bool) -> Command:
    args = (_k("key"), Arg("increment", Kind.INTEGER)) if by else (_k("key"),)
    return Command(name, summary, args, mutating=True, redis_arity=len(args) + 1)


_UNSIGNED = re.compile(rb"[+-]?([0-9]+)")
UINT64_MAX = (1 << 64) - 1


def strtoul(raw: bytes) -> int | None:
    """`raw` as Redis reads a SCAN cursor (C's strtoul, base 10, the whole C string): an
    optional sign (a minus wraps around, as in C), digits, no leading space; an empty string
    is 0; None for anything else or past 64 bits."""
    raw = raw.split(b"\0", 1)[0]
    if not raw:
        return 0
    match = _UNSIGNED.fullmatch(raw)
    if match is None or len(match[1].lstrip(b"0")) > 20:
        return None
    value = int(match[1])
    if value > UINT64_MAX:
        return None
    return -value & UINT64_MAX if raw[:1] == b"-" else value


_LEASE = Option("LEASE", Arg("id", Kind.INTEGER))

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("PING", "Check the server answers", (Arg("message", Kind.STRING, True),),
                redis_arity=-1, access="connection"),
        Command("ECHO", "Reply with the message", (Arg("message", Kind.STRING),),
                redis_arity=2, access="connection"),
        Command("AUTH", "Log in as a user: AUTH user password (AUTH password: user default)",
                (Arg("user", Kind.STRING), Arg("password", Kind.STRING, True)),
                redis_arity=-2, access="connection"),
        Command("USER", "Manage users: USER ADD name password [READ pattern]... "
                "[WRITE pattern]... [ADMIN] | DEL name | LIST | TOKEN name [REVOKE]",
                (Arg("subcommand", Kind.STRING), Arg("argument", Kind.STRING, True)),
                repeat=1, access="user"),
        Command(
            "SET",
            "Set a key to a value, optionally with an expiry or a condition",
            (_k("key"), Arg("value", Kind.VALUE)),
            (
                *_EXPIRY,
                Option("KEEPTTL", None, "expiry"),
                Option("NX", None, "condition"),
                Option("XX", None, "condition"),
                Option("GET"),
            ),
            mutating=True,
            redis_arity=-3,
        ),
        Command("SETNX", "Set a key only if it does not exist; 1 if set",
                (_k("key"), Arg("value", Kind.VALUE)), mutating=True, redis_arity=3),
        Command("SETEX", "Set a key with an expiry in seconds",
                (_k("key"), Arg("seconds", Kind.INTEGER), Arg("value", Kind.VALUE)),
                mutating=True, redis_arity=4),
        Command("PSETEX", "Set a key with an expiry in milliseconds",
                (_k("key"), Arg("milliseconds", Kind.INTEGER), Arg("value", Kind.VALUE)),
                mutating=True, redis_arity=4),
        Command("GET", "Get the value of a key", (_k("key"),), redis_arity=2),
        Command("GETSET", "Set a key and return its old value",
                (_k("key"), Arg("value", Kind.VALUE)), mutating=True, redis_arity=3),
        Command("GETDEL", "Get a key's value and delete it", (_k("key"),), mutating=True,
                redis_arity=2),
        Command("GETEX", "Get a key's value and set or remove its expiry", (_k("key"),),
                (*_EXPIRY, Option("PERSIST", None, "expiry")), mutating=True, redis_arity=-2,
                late_options=True),
        Command("MGET", "Get the values of several keys", (_k("key"),), repeat=1,
                redis_arity=-2),
        Command(
            "MSET",
            "Set several keys at once",
            (_k("key"), Arg("value", Kind.VALUE)),
            repeat=2,
            mutating=True,
            redis_arity=-3,
        ),
        Command("MSETNX", "Set several keys only if none of them exists; 1 if set",
                (_k("key"), Arg("value", Kind.VALUE)), repeat=2, mutating=True,
                redis_arity=-3),
        Command("APPEND", "Append to a key's value; replies the new length",
                (_k("key"), Arg("value", Kind.VALUE)), mutating=True, redis_arity=3),
        Command("STRLEN", "The length of a key's value", (_k("key"),), redis_arity=2),
        Command("GETRANGE", "A substring of a key's value (inclusive offsets, negative from "
                "the end)", (_k("key"), Arg("start", Kind.INTEGER), Arg("end", Kind.INTEGER)),
                redis_arity=4),
        Command("SETRANGE", "Overwrite part of a key's value from an offset",
                (_k("key"), Arg("offset", Kind.INTEGER), Arg("value", Kind.VALUE)),
                mutating=True, redis_arity=4),
        _counter("INCR", "Add 1 to the integer in a key", False),
        _counter("DECR", "Subtract 1 from the integer in a key", False),
        _counter("INCRBY", "Add to the integer in a key", True),
        _counter("DECRBY", "Subtract from the integer in a key", True),
        Command("INCRBYFLOAT", "Add a decimal number to the number in a key",
                (_k("key"), Arg("increment", Kind.STRING)), mutating=True, redis_arity=3),
        Command("DEL", "Delete keys; replies how many existed", (_k("key"),), repeat=1,
                mutating=True, redis_arity=-2),
        Command("UNLINK", "Delete keys (as DEL); replies how many existed", (_k("key"),),
                repeat=1, mutating=True, redis_arity=-2),
        Command("EXISTS", "Count how many of the keys exist", (_k("key"),), repeat=1,
                redis_arity=-2),
        Command("TOUCH", "Count how many of the keys exist (as EXISTS)", (_k("key"),),
                repeat=1, redis_arity=-2),
        Command("TYPE", "The type of a key's value: string, or none", (_k("key"),),
                redis_arity=2),
        _expire("EXPIRE", "seconds", "Set a key's time to live in seconds"),
        _expire("PEXPIRE", "milliseconds", "Set a key's time to live in milliseconds"),
        _expire("EXPIREAT", "unix-seconds", "Expire a key at a Unix time in seconds"),
        _expire("PEXPIREAT", "unix-milliseconds", "Expire a key at a Unix time in "
                "milliseconds"),
        Command("TTL", "Seconds a key has left (-1 no expiry, -2 no key)", (_k("key"),),
                redis_arity=2),
        Command("PTTL", "Milliseconds a key has left (-1 no expiry, -2 no key)", (_k("key"),),
                redis_arity=2),
        Command("PERSIST", "Remove a key's expiry; 1 if it had one", (_k("key"),),
                mutating=True, redis_arity=2),
        Command("RENAME", "Rename a key, replacing the new name's value",
                (_k("key"), _k("newkey")), mutating=True, redis_arity=3),
        Command("RANDOMKEY", "A random live key, or nil", redis_arity=1),
        Command("KEYS", "List keys matching a glob pattern", (Arg("pattern", Kind.PATTERN, True),),
                redis_arity=2),
        Command(
            "SCAN",
            "Iterate over keys a batch at a time",
            (Arg("cursor", Kind.INTEGER, read=strtoul,
                 refused="ERR invalid cursor"),),
            (
                Option("MATCH", Arg("pattern", Kind.PATTERN)),
                Option("COUNT", Arg("count", Kind.INTEGER, minimum=1)),
                Option("TYPE", Arg("type", Kind.STRING)),
            ),
            redis_arity=-2,
            in_order=True,
        ),
        Command("DBSIZE", "Count live keys", redis_arity=1),
        Command("FLUSHDB", "Delete every key, on every node", (),
                (Option("ASYNC", None, "mode"), Option("SYNC", None, "mode")), mutating=True,
                redis_arity=-1, max_args=1, access="admin"),
        Command("FLUSHALL", "Delete every key, on every node (as FLUSHDB)", (),
                (Option("ASYNC", None, "mode"), Option("SYNC", None, "mode")), mutating=True,
                redis_arity=-1, max_args=1, access="admin"),
        Command("TIME", "The server's time: [unix seconds, microseconds]", redis_arity=1,
                access="connection"),
        Command("INFO", "Show the node's state and counters", (Arg("section", Kind.STRING, True),),
                repeat=1),
        Command("MEMBERS", "List the cluster's members and their status", redis_arity=1),
        Command(
            "WATCH",
            "Stream changes to keys under a prefix until stopped",
            (Arg("prefix", Kind.KEY),),
            (Option("FROM", Arg("cursor", Kind.INTEGER)),),
            streaming=True,
        ),
        # The coordination namespace (kvd.raft.coord): linearizable, through the Raft group.
        Command("CGET", "Read a coordination key: value, revision, lease (linearizable)",
                (_k("key"),), redis_arity=2),
        Command("CSET", "Write a coordination key; replies its new revision",
                (_k("key"), Arg("value", Kind.VALUE)), (_LEASE,), access="write", redis_arity=-3),
        Command("CDEL", "Delete a coordination key; replies whether it existed", (_k("key"),),
                access="write", redis_arity=2),
        Command("CAS", "Compare-and-set a coordination key on its revision (REV n; 0: must "
                "not exist) or value (VALUE v)",
                (_k("key"), Arg("compare", Kind.STRING), Arg("expected", Kind.STRING),
                 Arg("newvalue", Kind.VALUE)), (_LEASE,), access="write", redis_arity=-5),
        Command("LEASE", "Leases that keys, locks and candidacies hang on: GRANT ms | "
                "KEEPALIVE id | REVOKE id | TTL id",
                (Arg("subcommand", Kind.STRING), Arg("argument", Kind.INTEGER)),
                access="write", redis_arity=3),
        Command("LOCK", "Take a lock held by a lease; replies a fencing token (or LOCKED)",
                (_k("name"),), (_LEASE,), access="write", redis_arity=-2),
        Command("UNLOCK", "Release a lock held by a lease", (_k("name"),), (_LEASE,),
                access="write", redis_arity=-2),
        Command("CAMPAIGN", "Stand in an application's election with a value, held by a lease",
                (_k("election"), Arg("value", Kind.VALUE)), (_LEASE,), access="write",
                redis_arity=-3),
        Command("LEADER", "An application election's leader: value, lease, revision",
                (_k("election"),), redis_arity=2),
        Command("OBSERVE", "Wait until an application election's leader is newer than "
                "revision AFTER (at once without AFTER; TIMEOUT ms, default 30000, answers the "
                "unchanged state): value, lease, revision (value nil: no leader)",
                (_k("election"),), (Option("AFTER", Arg("revision", Kind.INTEGER)),
                                    Option("TIMEOUT", Arg("milliseconds", Kind.INTEGER))),
                waits=("TIMEOUT", 30_000), redis_arity=-2),
        Command("RESIGN", "Leave an application's election", (_k("election"),), (_LEASE,),
                access="write", redis_arity=-2),
        Command("RAFT", "The consensus group, for operators: REMOVE name (a member gone for "
                "good; answers once committed) | INIT (found a group on a cluster that "
                "predates it)", (Arg("subcommand", Kind.STRING), Arg("name", Kind.NODE, True)),
                access="admin", redis_arity=-2),
        # A transaction (kvd.state.transaction): the commands between MULTI and EXEC are
        # queued, then run back to back, nothing else between them on this node.
        Command("MULTI", "Start a transaction: the commands after it are queued until EXEC",
                redis_arity=1, access="connection"),
        Command("EXEC", "Run the queued commands of a transaction; replies one result each",
                redis_arity=1, access="connection"),
        Command("DISCARD", "Drop a transaction's queued commands", redis_arity=1,
                access="connection"),
        Command("HELP", "Show commands, or one command's syntax",
                (Arg("command", Kind.COMMAND, True),), access="connection"),
    )
}


def lookup(name: str | bytes) -> Command:
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
    # Case folded in ASCII only, as Redis does: "ſet" is not SET.
    command = COMMANDS.get(text.upper()) if text.isascii() else None
    if command is None:
        raise UnknownCommand(f"unknown command '{text}' — try HELP for the list")
    return command


# Redis's string2ll: an optional minus, then 0 or digits without a leading zero; no spaces, no
# plus sign, no underscores (Python's int() takes all three), and within 64 bits.
_INTEGER = re.compile(rb"-?(?:0|[1-9][0-9]{0,19})")
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def strict_int(raw: bytes) -> int | None:
    """`raw` as Redis reads an integer argument, or None when Redis would refuse it."""
    if _INTEGER.fullmatch(raw) is None or raw == b"-0":
        return None
    value = int(raw)
    return value if INT64_MIN <= value <= INT64_MAX else None


def _convert(arg: Arg, raw: bytes, command: Command) -> object:
    if arg.kind is Kind.INTEGER:
        value = strict_int(raw) if arg.read is None else arg.read(raw)
        if value is None:
            shown = raw[:40].decode("utf-8", "replace")
            raise NotInteger(
                f"{command.name} {arg.name}: '{shown}' is not an integer — usage: {command.syntax}",
                redis=arg.refused,
            )
        if arg.minimum is not None and value < arg.minimum:
            raise SyntaxError_(f"{command.name} {arg.name}: must be {arg.minimum} or more — "
                               f"usage: {command.syntax}")
        return value
    return raw


def parse(command: Command, raw: list[bytes] | tuple[bytes, ...]) -> Call:
    """Check `raw` (the arguments after the name) against the grammar and convert them.

    The order of the checks is Redis's, so that both report the same first mistake: the
    number of arguments, then the options' syntax, then the values' conversion; for an
    `in_order` command each argument is checked and converted as it comes, and a command
    with `late_options` leaves its option values to its handler.
    """
    n_pos = len(command.args)
    required = command.required
    if not command.options:
        n = len(raw)
        if n < required or (not command.repeat and n > n_pos) or (
            command.repeat and (n - n_pos) % command.repeat
        ):
            raise _arity(command)
        if command.repeat:
            tail = command.args[-command.repeat :]
            head = command.args[: n_pos - command.repeat]
            kinds = list(head) + [tail[i % command.repeat] for i in range(n - len(head))]
        else:
            kinds = command.args[:n]
        values = tuple(_convert(a, r, command) for a, r in zip(kinds, raw, strict=True))
        return Call(command, values, {})
    if len(raw) < required:
        raise _arity(command)
    if command.max_args is not None and len(raw) > command.max_args:
        raise SyntaxError_(f"{command.name}: too many arguments — usage: {command.syntax}")
    if command.in_order:
        args = tuple(_convert(a, r, command) for a, r in zip(command.args, raw, strict=False))
        return Call(command, args, _scan_options(command, raw[n_pos:], convert=True))
    scanned = _scan_options(command, raw[n_pos:])
    if command.check is not None:
        command.check(scanned)
    args = tuple(_convert(a, r, command) for a, r in zip(command.args, raw, strict=False))
    if command.late_options:
        return Call(command, args, {t: True if v is None else v for t, v in scanned.items()})
    options = {token: True if value is None else _convert(command.option(token).value, value,
                                                          command)  # type: ignore[union-attr]
               for token, value in scanned.items()}
    return Call(command, args, options)


def arg_kinds(command: Command, n: int) -> list[Kind]:
    """The kind of each of `n` raw arguments, options and their values counted as STRING."""
    args = command.args
    if command.repeat:
        head, tail = args[: len(args) - command.repeat], args[-command.repeat :]
        return [a.kind for a in head] + [tail[i % len(tail)].kind for i in range(n - len(head))]
    return [a.kind for a in args[:n]] + [Kind.STRING] * max(0, n - len(args))


def option_value(call: Call, token: str) -> object:
    """The value of option `token` converted by its kind: what `parse` leaves to the handler
    of a command with `late_options`."""
    option = call.command.option(token)
    assert option is not None and option.value is not None
    return _convert(option.value, call.options[token], call.command)


def _scan_options(command: Command, raw: list[bytes] | tuple[bytes, ...],
                  convert: bool = False) -> dict:
    """Option tokens to their raw values (None for a flag), or with `convert` to their
    converted values (True for a flag) as they come; a repeated option keeps its last value,
    as Redis does."""
    options: dict[str, object] = {}
    groups: dict[str, str] = {}
    i = 0
    while i < len(raw):
        typed = raw[i].split(b"\0", 1)[0]  # Redis reads an option as a C string: NUL ends it
        token = typed.upper().decode("utf-8", "replace")
        option = command.option(token)
        if option is None:
            echo = typed.decode("utf-8", "surrogateescape")  # the door sends back these bytes
            raise SyntaxError_(f"{command.name}: unexpected '{token}' — usage: {command.syntax}",
                               redis="ERR " + command.unknown_option.format(token=echo))
        if option.group:
            other = groups.setdefault(option.group, token)
            if other != token:
                raise SyntaxError_(
                    f"{command.name}: {other} and {token} exclude each other — usage: "
                    f"{command.syntax}"
                )
        if option.value is None:
            options[token] = True if convert else None
            i += 1
            continue
        if i + 1 >= len(raw):
            raise SyntaxError_(f"{command.name}: {token} needs a {option.value.name}")
        options[token] = _convert(option.value, raw[i + 1], command) if convert else raw[i + 1]
        i += 2
    return options


def _arity(command: Command) -> ArityError:
    # Redis names the command in lower case, however it was typed (also inside EXEC's reply,
    # where the door no longer has the request at hand).
    return ArityError(f"wrong number of arguments for {command.name} — usage: {command.syntax}",
                      redis=f"ERR wrong number of arguments for '{command.name.lower()}' command")
