"""The command table: every command of CONTRACT.md, declared once as data.

kvd validates and dispatches by it; kvsh validates, completes, highlights, hints and answers
HELP from it. A command is positional arguments (the last `repeat` of them may repeat as a
group, like MSET's `key value`), then keyword options (`EX 10`, `NX`) in any order, where
options sharing a `group` exclude each other.

`parse()` is the one grammar check both sides run; it raises the same errors on both.
"""

from __future__ import annotations

import enum
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
    _option_index: dict[str, Option] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._option_index.update({o.token: o for o in self.options})

    @property
    def required(self) -> int:
        return sum(1 for a in self.args if not a.optional)

    def option(self, token: str) -> Option | None:
        return self._option_index.get(token.upper())

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


@dataclass(frozen=True, slots=True)
class Call:
    """A parsed command: positional values converted by kind, options by token."""

    command: Command
    args: tuple
    options: dict


def _k(name: str) -> Arg:
    return Arg(name, Kind.KEY)


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("PING", "Check the server answers", (Arg("message", Kind.STRING, True),)),
        Command(
            "SET",
            "Set a key to a value, optionally with an expiry or a condition",
            (_k("key"), Arg("value", Kind.VALUE)),
            (
                Option("EX", Arg("seconds", Kind.INTEGER), "expiry"),
                Option("PX", Arg("milliseconds", Kind.INTEGER), "expiry"),
                Option("NX", None, "condition"),
                Option("XX", None, "condition"),
            ),
            mutating=True,
        ),
        Command("GET", "Get the value of a key", (_k("key"),)),
        Command("MGET", "Get the values of several keys", (_k("key"),), repeat=1),
        Command(
            "MSET",
            "Set several keys at once",
            (_k("key"), Arg("value", Kind.VALUE)),
            repeat=2,
            mutating=True,
        ),
        Command("DEL", "Delete keys; replies how many existed", (_k("key"),), repeat=1,
                mutating=True),
        Command("EXISTS", "Count how many of the keys exist", (_k("key"),), repeat=1),
        Command(
            "EXPIRE",
            "Set a key's time to live in seconds",
            (_k("key"), Arg("seconds", Kind.INTEGER)),
            mutating=True,
        ),
        Command("TTL", "Seconds a key has left (-1 no expiry, -2 no key)", (_k("key"),)),
        Command("KEYS", "List keys matching a glob pattern", (Arg("pattern", Kind.PATTERN, True),)),
        Command(
            "SCAN",
            "Iterate over keys a batch at a time",
            (Arg("cursor", Kind.INTEGER),),
            (
                Option("MATCH", Arg("pattern", Kind.PATTERN)),
                Option("COUNT", Arg("count", Kind.INTEGER)),
            ),
        ),
        Command("DBSIZE", "Count live keys"),
        Command("INFO", "Show the node's state and counters"),
        Command("MEMBERS", "List the cluster's members and their status"),
        Command(
            "WATCH",
            "Stream changes to keys under a prefix until stopped",
            (Arg("prefix", Kind.KEY),),
            (Option("FROM", Arg("cursor", Kind.INTEGER)),),
            streaming=True,
        ),
        Command("HELP", "Show commands, or one command's syntax",
                (Arg("command", Kind.COMMAND, True),)),
    )
}


def lookup(name: str | bytes) -> Command:
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
    command = COMMANDS.get(text.upper())
    if command is None:
        raise UnknownCommand(f"unknown command '{text}' — try HELP for the list")
    return command


def _convert(arg: Arg, raw: bytes, command: Command) -> object:
    if arg.kind is Kind.INTEGER:
        try:
            return int(raw)
        except ValueError:
            shown = raw[:40].decode("utf-8", "replace")
            raise NotInteger(
                f"{command.name} {arg.name}: '{shown}' is not an integer — usage: {command.syntax}"
            ) from None
    return raw


def parse(command: Command, raw: list[bytes] | tuple[bytes, ...]) -> Call:
    """Check `raw` (the arguments after the name) against the grammar and convert them."""
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
    args = tuple(_convert(a, r, command) for a, r in zip(command.args, raw, strict=False))
    return Call(command, args, _parse_options(command, raw[n_pos:]))


def _parse_options(command: Command, raw: list[bytes] | tuple[bytes, ...]) -> dict:
    options: dict[str, object] = {}
    groups: dict[str, str] = {}
    i = 0
    while i < len(raw):
        token = raw[i].decode("utf-8", "replace").upper()
        option = command.option(token)
        if option is None:
            raise SyntaxError_(f"{command.name}: unexpected '{token}' — usage: {command.syntax}")
        if option.group:
            other = groups.setdefault(option.group, token)
            if other != token:
                raise SyntaxError_(
                    f"{command.name}: {other} and {token} exclude each other — usage: "
                    f"{command.syntax}"
                )
        if option.value is None:
            options[token] = True
            i += 1
            continue
        if i + 1 >= len(raw):
            raise SyntaxError_(f"{command.name}: {token} needs a {option.value.name}")
        options[token] = _convert(option.value, raw[i + 1], command)
        i += 2
    return options


def _arity(command: Command) -> ArityError:
    return ArityError(f"wrong number of arguments for {command.name} — usage: {command.syntax}")
