"""One execution path for every mode of kvsh: split, check, send, classify.

`kvsh -c`, piped stdin and the REPL all call `run_line`; only where the line comes from and
how the outcome is printed differ. A command that the table rejects (unknown name, wrong
arity, a non-integer where one is due) is not sent: the shell answers it locally with the
same error the server would give. Inside MULTI it is sent all the same: the node refuses it
with that error and spoils the transaction, so EXEC runs nothing, as a Redis user expects.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

from shared.client import Client
from shared.codec import Reply, ReplyKind
from shared.commands import Command, lookup, parse
from shared.errors import KvError, SyntaxError_, Unreachable


class Exit(enum.IntEnum):
    """kvsh exit codes (CONTRACT.md)."""

    OK = 0
    NOT_FOUND = 1  # a single-key read found no key
    ERROR = 2  # unknown command, wrong arguments, an error reply
    UNREACHABLE = 3  # no answer from the server


NOT_FOUND_WHEN = {"GET": lambda r: r.kind is ReplyKind.NIL, "TTL": lambda r: r.value == -2}


@dataclass(frozen=True)
class Outcome:
    """What one line came to: a reply from the server, or an error raised on the way."""

    argv: list[bytes]
    command: Command | None = None
    reply: Reply | None = None
    error: KvError | None = None
    events: Iterator[dict] | None = None  # a streaming command's events, after its reply

    @property
    def exit_code(self) -> Exit:
        if isinstance(self.error, Unreachable):
            return Exit.UNREACHABLE
        if self.error is not None or (self.reply is not None and self.reply.is_error):
            return Exit.ERROR
        if self.command and self.reply is not None:
            not_found = NOT_FOUND_WHEN.get(self.command.name)
            if not_found and not_found(self.reply):
                return Exit.NOT_FOUND
        return Exit.OK


def split(line: str) -> list[bytes]:
    """Shell-like splitting: quotes keep spaces, backslash escapes. Binary-safe via UTF-8."""
    try:
        words = shlex.split(line, comments=False, posix=True)
    except ValueError as exc:
        raise SyntaxError_(f"cannot split the line: {exc} — close the quote") from None
    return [w.encode("utf-8", "surrogateescape") for w in words]


def check(line: str) -> tuple[list[bytes], Command]:
    """Split and validate a line against the command table, without sending it."""
    argv = split(line)
    command = lookup(argv[0])
    parse(command, argv[1:])
    return argv, command


def run_line(client: Client, line: str) -> Outcome | None:
    """Run one line; None for a blank line or a comment."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    argv: list[bytes] = []
    try:
        argv = split(line)
        command = lookup(argv[0])
        parse(command, argv[1:])
    except KvError as exc:
        if client.in_transaction and argv:
            return _refused_in_transaction(client, argv)
        return Outcome(argv, error=exc)
    try:
        if command.name in ("MULTI", "EXEC", "DISCARD"):
            reply = client.execute(*argv)
            _track(client, command.name, reply)
            return Outcome(argv, command, reply=reply)
        if command.streaming and not client.in_transaction:
            return _stream(client, argv, command)
        if command.waits is not None:  # a long poll: its wait comes on top of --timeout
            token, default = command.waits
            wait = parse(command, argv[1:]).options.get(token, default)
            with client.waiting(wait):
                return Outcome(argv, command, reply=client.execute(*argv))
        return Outcome(argv, command, reply=client.execute(*argv))
    except KvError as exc:
        return Outcome(argv, command, error=exc)


def _track(client: Client, name: str, reply: Reply) -> None:
    """Whether a MULTI is open now (the prompt shows it): MULTI opens one, unless refused;
    EXEC and DISCARD close it, whatever they answer."""
    if name == "MULTI":
        client.in_transaction = client.in_transaction or not reply.is_error
    else:
        client.in_transaction = False


def _refused_in_transaction(client: Client, argv: list[bytes]) -> Outcome:
    """A line the table refuses, inside MULTI: the node says the same and spoils the
    transaction (EXEC then answers EXECABORT)."""
    try:
        return Outcome(argv, reply=client.execute(*argv))
    except KvError as exc:
        return Outcome(argv, error=exc)


def _stream(client: Client, argv: list[bytes], command: Command) -> Outcome:
    call = parse(command, argv[1:])
    events = client.watch(call.args[0], call.options.get("FROM"))
    ack = next(events)
    return Outcome(argv, command, reply=Reply(0, ReplyKind.MAP, ack), events=events)
