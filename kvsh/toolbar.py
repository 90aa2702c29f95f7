"""The bottom toolbar: the syntax of the command being typed, the current argument
highlighted, and the connection (node name, address, cluster size, last round trip).

`toolbar()` is pure — a line, a cursor and a `LinkState` in, formatted text out — so it is
tested without a terminal; the REPL calls it on every redraw.
"""

from __future__ import annotations

from kvsh.grammar import Role, all_commands, find, slot_at, syntax_parts, words
from kvsh.lexer import classify
from kvsh.link import LinkState
from kvsh.validator import problem

STYLE = {
    "bottom-toolbar": "noreverse bg:#222222 #bbbbbb",
    "toolbar.syntax": "#bbbbbb",
    "toolbar.current": "bold reverse ansiyellow",
    "toolbar.summary": "italic #888888",
    "toolbar.problem": "ansired",
    "toolbar.up": "ansigreen",
    "toolbar.down": "bold ansired",
    "toolbar.link": "#888888",
}

IDLE = "Tab completes · → accepts a suggestion · Ctrl-R searches history · Ctrl-D quits"

Fragments = list[tuple[str, str]]


def current_part(line: str) -> tuple[str, int] | None:
    """(command name, index into syntax_parts) of the argument under the cursor."""
    ws = words(line)
    if not ws:
        return None
    command = find(ws[0].value)
    if command is None:
        return None
    typing = ws[-1].end == len(line)
    if typing and len(ws) == 1:
        return command.name, 0
    args = [w.value for w in ws[1:]]
    i = len(args) - 1 if typing else len(args)
    slot = slot_at(command, args if typing else args + [""], i)
    if slot.role is Role.OPTION and slot.option is None:
        return command.name, -1  # no part: an option may go here, none chosen yet
    return command.name, slot.part if slot.role is not Role.EXTRA else -1


def hint(line: str) -> Fragments:
    """The first toolbar line: syntax with the current part highlighted, or a problem."""
    where = current_part(line)
    if where is None:
        return _no_command(line)
    name, part = where
    command = find(name)
    assert command is not None
    out: Fragments = []
    for i, text in enumerate(syntax_parts(command)):
        if i:
            out.append(("class:toolbar.syntax", " "))
        out.append(("class:toolbar.current" if i == part else "class:toolbar.syntax", text))
    still_typing = classify(line)[-1][2] == "command.partial"
    trouble = problem(line) if part == -1 and not still_typing else None
    if trouble:
        out.append(("class:toolbar.problem", f"  {trouble.split(' — ')[0]}"))
    else:
        out.append(("class:toolbar.summary", f"  {command.summary}"))
    return out


def _no_command(line: str) -> Fragments:
    ws = words(line)
    if not ws:
        return [("class:toolbar.summary", IDLE)]
    typed = ws[0].value.upper()
    if len(ws) == 1 and ws[0].end == len(line):
        names = [c.name for c in all_commands() if c.name.startswith(typed)]
        if names:
            return [("class:toolbar.summary", " · ".join(sorted(names)))]
    return [("class:toolbar.problem", problem(ws[0].value) or "")]


def connection(link: LinkState) -> Fragments:
    if link.up is False:
        return [("class:toolbar.down", f"✗ {link.address} unreachable"),
                ("class:toolbar.link", " — retrying; commands fail until it is back")]
    if link.up is None:
        return [("class:toolbar.link", f"… {link.address} connecting")]
    size = f"{link.members} member{'s' if link.members != 1 else ''}"
    rtt = f"{link.rtt_ms:.1f} ms" if link.rtt_ms is not None else "–"
    leader = f" · leader {link.leader}" if link.leader else ""
    return [("class:toolbar.up", f"● {link.name or '?'}"),
            ("class:toolbar.link", f" {link.address} · {size}{leader} · rtt {rtt}")]


REJECTED = "not sent: fix the line above (Ctrl-C clears it)"


def toolbar(line: str, link: LinkState, rejected: bool = False) -> Fragments:
    """Both lines; `rejected` when Enter was refused (the reason shows above the toolbar)."""
    first = [("class:toolbar.problem", REJECTED)] if rejected else hint(line)
    return first + [("", "\n")] + connection(link)
