"""How a line being typed reads against the command table: words, and the slot each one fills.

Completion, highlighting, the syntax hint and validation all ask the same questions of a
half-typed line — which command is this, is this word a key, an option, an option's value, or
one word too many — so they are answered once, here, from `shared.commands` data alone.

Invariants: `words()` never fails (an unclosed quote runs to the end of the line), and a word's
`start`/`end` index the line as typed, so a lexer can colour it in place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kvsh.shellcmds import SHELL_COMMANDS
from shared.commands import COMMANDS, Arg, Command, Kind, Option


@dataclass(frozen=True, slots=True)
class Word:
    start: int
    end: int
    value: str  # quotes removed, escapes applied


def words(line: str) -> list[Word]:
    """Split like the shell does (quotes, backslash), keeping each word's span in the line."""
    out: list[Word] = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        start, chars, quote = i, [], None
        while i < n and (quote or not line[i].isspace()):
            ch = line[i]
            if ch == "\\" and quote != "'" and i + 1 < n:
                chars.append(line[i + 1])
                i += 2
                continue
            if quote and ch == quote:
                quote = None
            elif not quote and ch in "'\"":
                quote = ch
            else:
                chars.append(ch)
            i += 1
        out.append(Word(start, i, "".join(chars)))
    return out


def find(name: str) -> Command | None:
    """A server command or a shell command by name, any case."""
    upper = name.upper()
    return COMMANDS.get(upper) or SHELL_COMMANDS.get(upper)


def all_commands() -> list[Command]:
    return [*COMMANDS.values(), *SHELL_COMMANDS.values()]


class Role(enum.Enum):
    COMMAND = "command"
    ARG = "arg"  # a positional argument: see `arg`
    OPTION = "option"  # an option token (EX, NX, MATCH ...) or a word where one may go
    OPTION_VALUE = "option value"  # the value after an option token: see `arg`
    EXTRA = "extra"  # a word the command has no room for


@dataclass(frozen=True, slots=True)
class Slot:
    role: Role
    arg: Arg | None = None
    option: Option | None = None
    part: int = 0  # index into syntax_parts(command): what the hint highlights

    @property
    def kind(self) -> Kind | None:
        return self.arg.kind if self.arg else None


def syntax_parts(command: Command) -> list[str]:
    """The pieces of `command.syntax`, in order: name, args, repeat group, option groups."""
    parts = [command.name] + [f"[{a.name}]" if a.optional else a.name for a in command.args]
    if command.repeat:
        parts.append(f"[{' '.join(a.name for a in command.args[-command.repeat:])} ...]")
    parts.extend(f"[{' | '.join(texts)}]" for texts in _option_groups(command).values())
    return parts


def _option_groups(command: Command) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for o in command.options:
        groups.setdefault(o.group or o.token, []).append(
            f"{o.token} {o.value.name}" if o.value else o.token)
    return groups


def _option_part(command: Command, option: Option) -> int:
    base = 1 + len(command.args) + (1 if command.repeat else 0)
    return base + list(_option_groups(command)).index(option.group or option.token)


def slots(command: Command, args: list[str]) -> list[Slot]:
    """The slot of each argument word after the command name (len(result) == len(args))."""
    return [slot_at(command, args, i) for i in range(len(args))]


def slot_at(command: Command, args: list[str], i: int) -> Slot:
    """The slot of the i-th argument word, given the words before it (it may not exist yet)."""
    n_pos = len(command.args)
    if i < n_pos:
        return Slot(Role.ARG, command.args[i], part=1 + i)
    if command.repeat:
        tail = command.args[-command.repeat:]
        head = n_pos - command.repeat
        return Slot(Role.ARG, tail[(i - head) % command.repeat], part=1 + n_pos)
    if not command.options:
        return Slot(Role.EXTRA)
    j = n_pos
    while j < i:  # walk the option words before i
        option = command.option(args[j])
        if option is not None and option.value is not None:
            if j + 1 == i:
                return Slot(Role.OPTION_VALUE, option.value, option,
                            _option_part(command, option))
            j += 2
        else:
            j += 1
    option = command.option(args[i]) if i < len(args) else None
    if option is not None:
        return Slot(Role.OPTION, option=option, part=_option_part(command, option))
    return Slot(Role.OPTION)


def open_options(command: Command, args: list[str]) -> list[Option]:
    """Options that may still be given after `args`: not used, not excluded by a group."""
    used = {o.token for a in args[len(command.args):] if (o := command.option(a))}
    groups = {command.option(t).group for t in used} - {None}  # type: ignore[union-attr]
    return [o for o in command.options if o.token not in used and o.group not in groups]
